"""NetworkStack: the VPC, its endpoints and flow logs, and the security group of the cluster's nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from constructs import Construct

from platform_constructs.vpc import PlatformVpc
from stacks.base import PlatformStack


class NetworkStack(PlatformStack):
    """Define the stage's network; the data and cluster stacks build on ``vpc`` and ``node_security_group``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc_cidr: str,
        public_subnets: Sequence[str],
        data_subnets: Sequence[str],
        node_subnets: Sequence[str],
        nat_gateways: int,
        interface_endpoints: Sequence[str],
        flow_log_retention_days: int,
        logs_key: kms.IKey,
        discovery_tag: str,
        removal_policy: cdk.RemovalPolicy,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        network = PlatformVpc(
            self,
            "Vpc",
            vpc_cidr=vpc_cidr,
            availability_zones=self.availability_zones,
            public_subnets=public_subnets,
            data_subnets=data_subnets,
            node_subnets=node_subnets,
            nat_gateways=nat_gateways,
            interface_endpoints=interface_endpoints,
            flow_log_retention_days=flow_log_retention_days,
            logs_key=logs_key,
            discovery_tag=discovery_tag,
            removal_policy=removal_policy,
        )
        self.vpc = network.vpc
        self.node_subnets = network.node_subnets
        self.data_subnets = network.data_subnets
        # Every node of the cluster carries this group; data stores admit their port from it alone.
        self.node_security_group = ec2.SecurityGroup(
            self,
            "NodeSecurityGroup",
            vpc=self.vpc,
            description="EKS nodes and pods: the only source the data stores (EFS, RDS, cache) admit",
            allow_all_outbound=True,
        )
        cdk.Tags.of(self.node_security_group).add("karpenter.sh/discovery", discovery_tag)
