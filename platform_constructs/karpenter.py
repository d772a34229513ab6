"""Karpenter: the controller (Helm, Pod Identity), its interruption queue, and the node role it launches with."""

from __future__ import annotations

from typing import Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.node_role import node_role
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: oci://public.ecr.aws/karpenter/karpenter --version 1.14.1
CHART: Final = HelmChartRef(repository="oci://public.ecr.aws/karpenter/karpenter", chart="karpenter", version="1.14.1")
NAMESPACE: Final = "kube-system"
SERVICE_ACCOUNT: Final = "karpenter"

# EC2 events Karpenter reacts to before AWS takes a node away (spot interruption, rebalance,
# scheduled maintenance, instance stopping or terminating).
_INTERRUPTION_EVENTS: Final = {
    "ScheduledChange": events.EventPattern(source=["aws.health"], detail_type=["AWS Health Event"]),
    "SpotInterruption": events.EventPattern(source=["aws.ec2"], detail_type=["EC2 Spot Instance Interruption Warning"]),
    "Rebalance": events.EventPattern(source=["aws.ec2"], detail_type=["EC2 Instance Rebalance Recommendation"]),
    "InstanceStateChange": events.EventPattern(
        source=["aws.ec2"], detail_type=["EC2 Instance State-change Notification"]
    ),
}


class Karpenter(Construct):
    """Define Karpenter for one cluster: node role, interruption handling, controller role and release.

    Args:
        cluster: the cluster Karpenter provisions nodes for.
        cluster_name: its name as a literal: IAM condition keys cannot hold a token.
        controller_node_selector: node labels that place the controller on the system pool.
        replicas: controller replicas (2 for a highly available controller).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        controller_node_selector: dict[str, str],
        replicas: int = 2,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)

        # Nodes Karpenter launches get their own role: managed nodegroups create an access entry for theirs,
        # and two entries for one role conflict.
        self.node_role = node_role(self, "NodeRole", description="EC2 nodes launched by Karpenter")
        self.access_entry = eks.AccessEntry(
            self,
            "NodeAccessEntry",
            cluster=cluster,
            principal=self.node_role.role_arn,
            access_entry_type=eks.AccessEntryType.EC2_LINUX,
            access_policies=[],
        )

        self.queue = sqs.Queue(
            self,
            "InterruptionQueue",
            retention_period=cdk.Duration.minutes(5),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        cdk.Validations.of(self.queue).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SQS3",
                reason="Interruption notices are useful for two minutes at most; a dead-letter queue would only "
                "keep stale warnings about instances that are already gone.",
            )
        )
        for name, pattern in _INTERRUPTION_EVENTS.items():
            events.Rule(self, f"{name}Rule", event_pattern=pattern, targets=[targets.SqsQueue(self.queue)])

        self.controller = PodIdentityRole(
            self,
            "ControllerRole",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description="Karpenter controller: launch and terminate nodes of this cluster",
        )
        statements = _controller_statements(stack, cluster, cluster_name, self.node_role, self.queue)
        controller_policy = iam.Policy(self, "ControllerPolicy", statements=statements)
        controller_policy.attach_to_role(self.controller.role)
        _acknowledge_wildcards(controller_policy, statements)

        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values={
                "settings": {
                    "clusterName": cluster_name,
                    "interruptionQueue": self.queue.queue_name,
                },
                "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
                "replicas": replicas,
                "nodeSelector": controller_node_selector,
                "controller": {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}},
            },
        )
        # The controller needs its AWS role (association) and the nodes' access entry before it launches anything.
        self.release.node.add_dependency(self.controller.association, self.access_entry, controller_policy)


def _controller_statements(
    stack: cdk.Stack, cluster: eks.ICluster, cluster_name: str, node_role: iam.IRole, queue: sqs.IQueue
) -> list[iam.PolicyStatement]:
    """Return the controller's permissions, after Karpenter's own v1 CloudFormation policy, scoped to this cluster."""
    region, partition, account = stack.region, stack.partition, stack.account
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    owned_resource = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    return [
        iam.PolicyStatement(
            sid="AllowScopedEC2InstanceAccessActions",
            actions=["ec2:RunInstances", "ec2:CreateFleet"],
            resources=[f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*", f"{ec2}:*:subnet/*"],
        ),
        iam.PolicyStatement(
            sid="AllowScopedEC2LaunchTemplateAccessActions",
            actions=["ec2:RunInstances", "ec2:CreateFleet"],
            resources=[f"{ec2}:*:launch-template/*"],
            conditions={"StringEquals": owned_resource, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        ),
        iam.PolicyStatement(
            sid="AllowScopedEC2InstanceActionsWithTags",
            actions=["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            resources=[
                f"{ec2}:*:fleet/*",
                f"{ec2}:*:instance/*",
                f"{ec2}:*:volume/*",
                f"{ec2}:*:network-interface/*",
                f"{ec2}:*:launch-template/*",
                f"{ec2}:*:spot-instances-request/*",
            ],
            conditions={
                "StringEquals": {**owned, "aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedResourceCreationTagging",
            actions=["ec2:CreateTags"],
            resources=[
                f"{ec2}:*:fleet/*",
                f"{ec2}:*:instance/*",
                f"{ec2}:*:volume/*",
                f"{ec2}:*:network-interface/*",
                f"{ec2}:*:launch-template/*",
                f"{ec2}:*:spot-instances-request/*",
            ],
            conditions={
                "StringEquals": {
                    **owned,
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedResourceTagging",
            actions=["ec2:CreateTags"],
            resources=[f"{ec2}:*:instance/*"],
            conditions={
                "StringEquals": owned_resource,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedDeletion",
            actions=["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            resources=[f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            conditions={"StringEquals": owned_resource, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
        ),
        iam.PolicyStatement(
            sid="AllowRegionalReadActions",
            actions=[
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            resources=["*"],
            conditions={"StringEquals": {"aws:RequestedRegion": region}},
        ),
        iam.PolicyStatement(
            sid="AllowSSMReadActions",
            actions=["ssm:GetParameter"],
            resources=[f"arn:{partition}:ssm:{region}::parameter/aws/service/*"],
        ),
        iam.PolicyStatement(sid="AllowPricingReadActions", actions=["pricing:GetProducts"], resources=["*"]),
        iam.PolicyStatement(
            sid="AllowInterruptionQueueActions",
            actions=["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            resources=[queue.queue_arn],
        ),
        iam.PolicyStatement(
            sid="AllowPassingInstanceRole",
            actions=["iam:PassRole"],
            resources=[node_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com"]}},
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileActions",
            actions=[
                "iam:CreateInstanceProfile",
                "iam:TagInstanceProfile",
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteInstanceProfile",
            ],
            resources=[f"arn:{partition}:iam::{account}:instance-profile/*"],
            conditions={
                "StringEquals": {
                    **owned_resource,
                    "aws:ResourceTag/topology.kubernetes.io/region": region,
                },
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileCreation",
            actions=["iam:CreateInstanceProfile", "iam:TagInstanceProfile"],
            resources=[f"arn:{partition}:iam::{account}:instance-profile/*"],
            conditions={
                "StringEquals": {
                    **owned,
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    "aws:RequestTag/topology.kubernetes.io/region": region,
                },
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowInstanceProfileReadActions",
            actions=["iam:GetInstanceProfile"],
            resources=[f"arn:{partition}:iam::{account}:instance-profile/*"],
        ),
        iam.PolicyStatement(
            sid="AllowAPIServerEndpointDiscovery",
            actions=["eks:DescribeCluster"],
            resources=[cluster.cluster_arn],
        ),
    ]


def _acknowledge_wildcards(policy: iam.Policy, statements: list[iam.PolicyStatement]) -> None:
    """Acknowledge each wildcard resource of the controller policy, one finding at a time."""
    reason = (
        "Karpenter creates and discovers these EC2 and IAM resources at run time, so their IDs cannot be "
        "listed; the mutating statements are bound by conditions on the cluster's ownership tag and the "
        "karpenter.sh/nodepool tag, the read-only ones by region."
    )
    wildcards = sorted({r for s in statements for r in s.resources if "*" in r})
    for resource in wildcards:
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(id=f"AwsSolutions-IAM5[Resource::{resource}]", reason=reason)
        )
