"""The platform VPC: a fixed subnet plan, NAT per config, KMS-encrypted flow logs and endpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from platform_constructs.retention import retention_days

PUBLIC = "Public"
DATA = "Data"
NODES = "Nodes"

# Interface endpoint names in config -> the CDK service that creates them.
_ENDPOINT_SERVICES: Mapping[str, ec2.InterfaceVpcEndpointAwsService] = {
    "ecr.api": ec2.InterfaceVpcEndpointAwsService.ECR,
    "ecr.dkr": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "ssmmessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "ec2messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
    "secretsmanager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "elasticloadbalancing": ec2.InterfaceVpcEndpointAwsService.ELASTIC_LOAD_BALANCING,
    "eks": ec2.InterfaceVpcEndpointAwsService.EKS,
    "eks-auth": ec2.InterfaceVpcEndpointAwsService.EKS_AUTH,
    "kms": ec2.InterfaceVpcEndpointAwsService.KMS,
}
_ENDPOINT_IDS = {
    "ecr.api": "EcrApi", "ecr.dkr": "EcrDocker", "sts": "Sts", "logs": "Logs", "ssm": "Ssm",
    "ssmmessages": "SsmMessages", "ec2messages": "Ec2Messages", "secretsmanager": "SecretsManager",
    "sqs": "Sqs", "elasticloadbalancing": "ElasticLoadBalancing", "eks": "Eks", "eks-auth": "EksAuth",
    "kms": "Kms",
}  # fmt: skip


@jsii.implements(ec2.IIpAddresses)
class PlannedSubnets:
    """Give each subnet the CIDR the stage config names, instead of CDK's automatic carving.

    The plan is ``{subnet group name: [cidr per zone, in zone order]}``.
    """

    def __init__(self, vpc_cidr: str, plan: Mapping[str, Sequence[str]], zones: Sequence[str]) -> None:
        self._vpc_cidr = vpc_cidr
        self._plan = plan
        self._zones = list(zones)

    def allocate_vpc_cidr(self) -> ec2.VpcIpamOptions:
        return ec2.VpcIpamOptions(cidr_block=self._vpc_cidr)

    def allocate_subnets_cidr(self, input: ec2.AllocateCidrRequest) -> ec2.SubnetIpamOptions:
        allocated = []
        for requested in input.requested_subnets:
            group = requested.configuration.name
            zone_index = self._zones.index(requested.availability_zone)
            allocated.append(ec2.AllocatedSubnet(cidr=self._plan[group][zone_index]))
        return ec2.SubnetIpamOptions(allocated_subnets=allocated)


class PlatformVpc(Construct):
    """Define the VPC: public, isolated data and private node subnets in every zone.

    Args:
        vpc_cidr: the VPC's IPv4 range.
        availability_zones: zones, in the order of the subnet lists.
        public_subnets: one CIDR per zone for load balancers and NAT gateways.
        data_subnets: one CIDR per zone for databases and caches (no route to the internet).
        node_subnets: one CIDR per zone for EKS nodes and pods (egress through NAT).
        nat_gateways: how many NAT gateways (one per zone for zone-independent egress).
        interface_endpoints: interface endpoint names (see ``_ENDPOINT_SERVICES``).
        flow_log_retention_days: retention of the flow log group.
        logs_key: KMS key of the flow log group.
        discovery_tag: value of the ``karpenter.sh/discovery`` tag on node subnets.
        removal_policy: of the flow log group.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc_cidr: str,
        availability_zones: Sequence[str],
        public_subnets: Sequence[str],
        data_subnets: Sequence[str],
        node_subnets: Sequence[str],
        nat_gateways: int,
        interface_endpoints: Sequence[str],
        flow_log_retention_days: int,
        logs_key: kms.IKey,
        discovery_tag: str,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        plan = {PUBLIC: public_subnets, DATA: data_subnets, NODES: node_subnets}
        # The mask only sizes CDK's own bookkeeping; PlannedSubnets hands out the configured CIDRs.
        mask = {name: int(cidrs[0].split("/")[1]) for name, cidrs in plan.items()}
        self.vpc = ec2.Vpc(
            self,
            "Resource",
            # jsii calls back with the request struct as one argument; the generated protocol spells it as
            # keyword arguments, which mypy cannot match to a callback implemented in Python.
            ip_addresses=PlannedSubnets(vpc_cidr, plan, availability_zones),  # type: ignore[arg-type]
            availability_zones=list(availability_zones),
            nat_gateways=nat_gateways,
            nat_gateway_subnets=ec2.SubnetSelection(subnet_group_name=PUBLIC),
            restrict_default_security_group=True,
            subnet_configuration=[
                ec2.SubnetConfiguration(name=PUBLIC, subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=mask[PUBLIC]),
                ec2.SubnetConfiguration(name=DATA, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=mask[DATA]),
                ec2.SubnetConfiguration(
                    name=NODES, subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=mask[NODES]
                ),
            ],
        )
        # Load balancer controller and Karpenter find their subnets by these tags.
        for subnet in self.vpc.public_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/elb", "1")
        for subnet in self.vpc.private_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")
            cdk.Tags.of(subnet).add("karpenter.sh/discovery", discovery_tag)

        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            encryption_key=logs_key,
            retention=retention_days(flow_log_retention_days),
            removal_policy=removal_policy,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        # S3 traffic is a top cost centre: the gateway endpoint is free and keeps it off the NAT gateways.
        self.vpc.add_gateway_endpoint(
            "S3Endpoint",
            service=ec2.GatewayVpcEndpointAwsService.S3,
            subnets=[ec2.SubnetSelection(subnet_group_name=NODES), ec2.SubnetSelection(subnet_group_name=DATA)],
        )
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="HTTPS from inside the VPC to the interface endpoints",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(ec2.Peer.ipv4(vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
        for name in interface_endpoints:
            self.vpc.add_interface_endpoint(
                f"{_ENDPOINT_IDS[name]}Endpoint",
                service=_ENDPOINT_SERVICES[name],
                subnets=ec2.SubnetSelection(subnet_group_name=NODES),
                security_groups=[self.endpoint_security_group],
                private_dns_enabled=True,
                open=False,  # the group above admits the VPC CIDR as a literal (a token defeats cdk-nag EC23)
            )

    @property
    def node_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_group_name=NODES)

    @property
    def data_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_group_name=DATA)
