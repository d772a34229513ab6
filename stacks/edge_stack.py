"""EdgeStack: the inference ALB, its certificate, WAF and access logs, and the load balancer controller.

The ALB and everything attached to it are CloudFormation resources; Kubernetes only fills the target
groups: the inference charts create ``TargetGroupBinding`` objects (``elbv2.k8s.aws/v1beta1``) naming
``target_group_arns``, and the AWS Load Balancer Controller installed here registers the pods behind
them. Nothing in the cluster can create, change or delete the load balancer or its WAF.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_s3 as s3
from constructs import Construct

from config.pools import POOL_LABEL
from platform_constructs.load_balancer_controller import LoadBalancerController
from platform_constructs.secure_bucket import bucket_name
from platform_constructs.vpc import NODES, PUBLIC
from platform_constructs.web_acl import InferenceWebAcl
from stacks.base import PlatformStack
from stacks.cluster_stack import SYSTEM_POOL

# Ports inference pods serve on (vLLM listens on 8000); the nodes admit the ALB on this range only.
POD_PORTS: Final = (8000, 8080)
# TLS 1.3 only, with hybrid post-quantum key exchange offered first (ELBSecurityPolicy-TLS13-1-3-PQ-2025-09).
# SslPolicy.TLS13_RES, despite its name, is ELBSecurityPolicy-TLS13-1-2-Res-2021-06 and still accepts TLS 1.2.
TLS_POLICY: Final = elbv2.SslPolicy.TLS13_13_PQ
NOT_FOUND_BODY: Final = (
    '{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":"not_found"}}'
)


@dataclass(frozen=True)
class InferenceRoute:
    """One path-routed target group of the HTTPS listener: pods bind to it through a TargetGroupBinding."""

    name: str
    construct_id: str
    path_patterns: tuple[str, ...]
    port: int
    priority: int
    health_check_path: str = "/health"


# The OpenAI-compatible API of vLLM (chat, completions, embeddings, models) on its default port.
INFERENCE_ROUTES: Final = (
    InferenceRoute(name="vllm", construct_id="Vllm", path_patterns=("/v1/*",), port=8000, priority=10),
)


class EdgeStack(PlatformStack):
    """Define the stage's inference entry point.

    Args:
        vpc: the stage VPC (the ALB takes its public subnets, or the node subnets when internal).
        node_security_group: the group of every node; it admits the ALB on ``POD_PORTS``.
        logs_key: KMS key of the WAF log group.
        name_prefix: ``<project>-<stage>``: names the bucket, web ACL and log group.
        internet_facing: an internet-facing ALB open to 0.0.0.0/0; otherwise internal, open to the VPC.
        domain_name: the host clients call; gets an alias record when a hosted zone is given.
        hosted_zone_id: the zone of ``domain_name`` (imported by ID and name, never looked up).
        hosted_zone_name: that zone's name.
        certificate_arn: an ACM certificate to import; without one, a DNS-validated certificate for
            ``domain_name`` is created in the hosted zone.
        rate_limit_per_window: requests per client IP and window before the WAF answers 429.
        rate_limit_window_seconds: the rate limit's window.
        openai_paths: path prefixes where WAF lets bodies over 8 KB through (long prompts).
        idle_timeout_seconds: how long the ALB keeps an idle connection open.
        waf_log_retention_days: retention of the WAF logs.
        access_log_expire_after_days: days after which ALB access logs are deleted.
        deletion_protection: protect the ALB from deletion.
        removal_policy: what happens to the access-log bucket and WAF log group when the stack goes.
        cluster: the stage's cluster; the load balancer controller is installed into it. When omitted
            (no EKS in the stage), the target groups exist but nothing registers pods in them.
        cluster_name: the cluster's name; required with ``cluster``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        node_security_group: ec2.ISecurityGroup,
        logs_key: kms.IKey,
        name_prefix: str,
        internet_facing: bool,
        domain_name: str | None,
        hosted_zone_id: str | None,
        hosted_zone_name: str | None,
        certificate_arn: str | None,
        rate_limit_per_window: int,
        rate_limit_window_seconds: int,
        openai_paths: Sequence[str],
        idle_timeout_seconds: int,
        waf_log_retention_days: int,
        access_log_expire_after_days: int,
        deletion_protection: bool,
        removal_policy: cdk.RemovalPolicy,
        cluster: eks.ICluster | None = None,
        cluster_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        zone = (
            route53.HostedZone.from_hosted_zone_attributes(
                self, "HostedZone", hosted_zone_id=hosted_zone_id, zone_name=hosted_zone_name
            )
            if hosted_zone_id is not None and hosted_zone_name is not None
            else None
        )
        certificate = self._certificate(certificate_arn, domain_name, zone)

        self.load_balancer_security_group = self._security_group(vpc, node_security_group, internet_facing)
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=internet_facing,
            vpc_subnets=ec2.SubnetSelection(subnet_group_name=PUBLIC if internet_facing else NODES),
            security_group=self.load_balancer_security_group,
            deletion_protection=deletion_protection,
            # Requests with header names that are not valid HTTP never reach the pods (smuggling vectors).
            drop_invalid_header_fields=True,
            # Refuse every request that is not RFC 7230 compliant, ambiguous ones included.
            desync_mitigation_mode=elbv2.DesyncMitigationMode.STRICTEST,
            idle_timeout=cdk.Duration.seconds(idle_timeout_seconds),
            http2_enabled=True,
            # If WAF cannot answer, the ALB refuses the request instead of passing it on uninspected.
            waf_fail_open=False,
        )
        self.access_logs = self._access_log_bucket(name_prefix, access_log_expire_after_days, removal_policy)
        self.load_balancer.log_access_logs(self.access_logs, prefix="alb")

        self.https_listener = self.load_balancer.add_listener(
            "Https",
            port=443,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)],
            ssl_policy=TLS_POLICY,
            # The security group rules are explicit (see _security_group); the listener opens nothing.
            open=False,
            # Only the routes below lead anywhere; everything else is a JSON 404 from the ALB itself.
            default_action=elbv2.ListenerAction.fixed_response(
                404, content_type="application/json", message_body=NOT_FOUND_BODY
            ),
        )
        self.http_listener = self.load_balancer.add_redirect(
            source_protocol=elbv2.ApplicationProtocol.HTTP,
            source_port=80,
            target_protocol=elbv2.ApplicationProtocol.HTTPS,
            target_port=443,
            open=False,
        )
        self.target_groups = self._routes(vpc)
        self.vllm_target_group = self.target_groups["vllm"]

        # The pods behind the target groups run on the nodes (VPC CNI: pod IPs live on the nodes' ENIs, which
        # carry the node group). The rule is a resource of this stack, not of the network stack, so that the
        # network stack never references the edge (the ALB's group would otherwise point back at it).
        ec2.CfnSecurityGroupIngress(
            self,
            "NodeIngressFromLoadBalancer",
            group_id=node_security_group.security_group_id,
            ip_protocol="tcp",
            from_port=POD_PORTS[0],
            to_port=POD_PORTS[1],
            source_security_group_id=self.load_balancer_security_group.security_group_id,
            description="Inference pods from the inference ALB",
        )

        self.web_acl = InferenceWebAcl(
            self,
            "WebAcl",
            name_prefix=name_prefix,
            load_balancer=self.load_balancer,
            rate_limit_per_window=rate_limit_per_window,
            rate_limit_window_seconds=rate_limit_window_seconds,
            openai_paths=openai_paths,
            logs_key=logs_key,
            log_retention_days=waf_log_retention_days,
            removal_policy=removal_policy,
        )

        if zone is not None and domain_name is not None:
            route53.ARecord(
                self,
                "AliasRecord",
                zone=zone,
                record_name=domain_name,
                target=route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(self.load_balancer)),
            )

        self.controller: LoadBalancerController | None = None
        if cluster is not None:
            if cluster_name is None:
                raise ValueError("EdgeStack: cluster_name is required with cluster (the controller's --cluster-name)")
            self.controller = LoadBalancerController(
                self,
                "LoadBalancerController",
                cluster=cluster,
                cluster_name=cluster_name,
                vpc_id=vpc.vpc_id,
                target_group_arns=list(self.target_group_arns.values()),
                node_selector={POOL_LABEL: SYSTEM_POOL},
            )

        cdk.CfnOutput(self, "LoadBalancerDnsName", value=self.load_balancer.load_balancer_dns_name)
        if domain_name is not None:
            cdk.CfnOutput(self, "Endpoint", value=f"https://{domain_name}/v1")

    @property
    def target_group_arns(self) -> Mapping[str, str]:
        """Return the ARN of each route's target group, by route name (what TargetGroupBindings name)."""
        return {name: group.target_group_arn for name, group in self.target_groups.items()}

    def _certificate(
        self, certificate_arn: str | None, domain_name: str | None, zone: route53.IHostedZone | None
    ) -> acm.ICertificate:
        if certificate_arn is not None:
            return acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
        if domain_name is not None and zone is not None:
            return acm.Certificate(
                self,
                "Certificate",
                domain_name=domain_name,
                validation=acm.CertificateValidation.from_dns(zone),
            )
        raise ValueError(
            "EdgeStack: the HTTPS listener needs a certificate: give certificate_arn, or domain_name with "
            "hosted_zone_id and hosted_zone_name"
        )

    def _security_group(
        self, vpc: ec2.IVpc, node_security_group: ec2.ISecurityGroup, internet_facing: bool
    ) -> ec2.SecurityGroup:
        group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="Inference ALB: HTTPS (and HTTP, redirected) from clients; out to the pod ports only",
            allow_all_outbound=False,
        )
        clients = ec2.Peer.any_ipv4() if internet_facing else ec2.Peer.ipv4(vpc.vpc_cidr_block)
        group.add_ingress_rule(clients, ec2.Port.tcp(443), "HTTPS from clients")
        # Port 80 only answers with a permanent redirect to HTTPS; no request is forwarded over HTTP.
        group.add_ingress_rule(clients, ec2.Port.tcp(80), "HTTP, redirected to HTTPS")
        group.add_egress_rule(
            ec2.Peer.security_group_id(node_security_group.security_group_id),
            ec2.Port.tcp_range(*POD_PORTS),
            "Inference pods on the nodes",
        )
        if internet_facing:
            cdk.Validations.of(group).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-EC23",
                    reason="The public inference ALB must be reachable by clients anywhere; it admits only 443 "
                    "(and 80, which only redirects to HTTPS), and every request passes the WAF web ACL (rate "
                    "limit, IP reputation, known bad inputs, common rule set) before reaching a pod.",
                )
            )
        return group

    def _access_log_bucket(
        self, name_prefix: str, expire_after_days: int, removal_policy: cdk.RemovalPolicy
    ) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=bucket_name(prefix=name_prefix, purpose="alb-logs", account=self.account, region=self.region),
            # ALB access logs can only be delivered to a bucket with SSE-S3 default encryption, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            # A log overwritten or deleted by mistake (or on purpose) stays recoverable until it expires.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=cdk.Duration.days(expire_after_days),
                    noncurrent_version_expiration=cdk.Duration.days(expire_after_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=removal_policy,
        )
        cdk.Validations.of(bucket).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-S1",
                reason="This bucket is itself a log sink: only the ELB log delivery service writes to it. Server "
                "access logs of it would only record those deliveries; versioning keeps every log object "
                "recoverable, and reads can be audited with CloudTrail data events.",
            )
        )
        return bucket

    def _routes(self, vpc: ec2.IVpc) -> dict[str, elbv2.ApplicationTargetGroup]:
        groups: dict[str, elbv2.ApplicationTargetGroup] = {}
        for route in INFERENCE_ROUTES:
            group = elbv2.ApplicationTargetGroup(
                self,
                f"{route.construct_id}TargetGroup",
                vpc=vpc,
                # Pod IPs, registered by the load balancer controller from a TargetGroupBinding.
                target_type=elbv2.TargetType.IP,
                protocol=elbv2.ApplicationProtocol.HTTP,
                port=route.port,
                # Completions vary from milliseconds to minutes: send each request to the pod with the
                # fewest in flight rather than to the next in turn.
                load_balancing_algorithm_type=elbv2.TargetGroupLoadBalancingAlgorithmType.LEAST_OUTSTANDING_REQUESTS,
                health_check=elbv2.HealthCheck(
                    path=route.health_check_path,
                    protocol=elbv2.Protocol.HTTP,
                    healthy_http_codes="200",
                    interval=cdk.Duration.seconds(15),
                    timeout=cdk.Duration.seconds(5),
                    healthy_threshold_count=2,
                    unhealthy_threshold_count=3,
                ),
            )
            self.https_listener.add_target_groups(
                f"{route.construct_id}Route",
                priority=route.priority,
                conditions=[elbv2.ListenerCondition.path_patterns(list(route.path_patterns))],
                target_groups=[group],
            )
            groups[route.name] = group
        return groups
