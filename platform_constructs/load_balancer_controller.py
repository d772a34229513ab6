"""AWS Load Balancer Controller, limited to TargetGroupBinding: it registers pods, it creates no load balancer.

The inference ALB, its listeners, target groups and WAF are CloudFormation resources of the edge stack.
The controller's one job is to keep the pod IPs behind each ``TargetGroupBinding`` registered in the
target group the binding names. So the release is configured to provision nothing from Ingresses or
Services (no IngressClass, no Service mutator webhook, the Service and Gateway controllers off), and its
role may register and deregister targets in this stage's target groups and read ELB and EC2, nothing
else: a stray Ingress or ``type: LoadBalancer`` Service fails on IAM instead of creating a load balancer.

Security group rules are not the controller's either: the edge stack admits the ALB's group on the
node group's pod ports, so bindings leave ``spec.networking`` empty and the controller never edits a
security group.

Destroy order: every stack that creates TargetGroupBindings depends on ``release``, so CloudFormation
deletes the bindings (and the controller deregisters their targets) while the controller still runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: https://aws.github.io/eks-charts -> eks/aws-load-balancer-controller 3.5.0
CHART: Final = HelmChartRef(
    repository="https://aws.github.io/eks-charts", chart="aws-load-balancer-controller", version="3.5.0"
)
NAMESPACE: Final = "kube-system"
SERVICE_ACCOUNT: Final = "aws-load-balancer-controller"
# Controllers that would create load balancers, listeners and security groups from Kubernetes objects.
_DISABLED_FEATURES: Final = ("EnableServiceController", "ALBGatewayAPI", "NLBGatewayAPI")


def load_balancer_controller_values(
    *,
    cluster_name: str,
    region: str,
    vpc_id: str,
    node_selector: Mapping[str, str],
    replicas: int = 2,
) -> dict[str, Any]:
    """Return the chart values of a TargetGroupBinding-only controller (every key is in the pinned values.yaml).

    Args:
        cluster_name: the EKS cluster's name.
        region: the cluster's region (given, so the pods need no instance metadata).
        vpc_id: the cluster's VPC (given, for the same reason).
        node_selector: node labels that place the controller on the system pool.
        replicas: controller replicas: one leads, the others serve the webhooks. Defaults to 2.
    """
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": replicas,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "nodeSelector": dict(node_selector),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        # The chart renders this only when there is more than one replica.
        "podDisruptionBudget": {"maxUnavailable": 1},
        # No load balancers from Ingresses: no IngressClass (nor its parameters), never the default class,
        # and the legacy kubernetes.io/ingress.class and group annotations refused by the webhook.
        "createIngressClassResource": False,
        "ingressClassParams": {"create": False},
        "ingressClassConfig": {"default": False},
        "disableIngressClassAnnotation": True,
        "disableIngressGroupNameAnnotation": True,
        # No load balancers from Services: the webhook that claims every new type LoadBalancer Service is off,
        # and so are the Service and Gateway API controllers.
        "enableServiceMutatorWebhook": False,
        "controllerConfig": {"featureGates": dict.fromkeys(_DISABLED_FEATURES, False)},
        # The WAF and Shield of the ALB are CloudFormation's; the controller must not touch them.
        "enableShield": False,
        "enableWaf": False,
        "enableWafv2": False,
        # The controller creates and manages no security groups (see the module docstring).
        "enableBackendSecurityGroup": False,
    }


def controller_statements(*, target_group_arns: Sequence[str], region: str) -> list[iam.PolicyStatement]:
    """Return the controller's permissions for TargetGroupBinding alone.

    Args:
        target_group_arns: the target groups bindings may name; the only resources it may change.
        region: the stage's region: the read-only statements are limited to it.
    """
    in_region = {"StringEquals": {"aws:RequestedRegion": region}}
    return [
        iam.PolicyStatement(
            sid="RegisterPodTargets",
            actions=["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
            resources=list(target_group_arns),
        ),
        # Describe calls support no resource-level permissions; the controller reads target groups and
        # target health (bindings, pod readiness gates), and subnets, ENIs and security groups of the VPC.
        iam.PolicyStatement(
            sid="ReadLoadBalancing",
            actions=["elasticloadbalancing:Describe*"],
            resources=["*"],
            conditions=in_region,
        ),
        iam.PolicyStatement(
            sid="ReadNetwork",
            actions=["ec2:Describe*", "ec2:GetSecurityGroupsForVpc"],
            resources=["*"],
            conditions=in_region,
        ),
    ]


class LoadBalancerController(Construct):
    """Define the AWS Load Balancer Controller for TargetGroupBindings to this stage's target groups.

    Args:
        cluster: the cluster to install into (may belong to another stack).
        cluster_name: the cluster's name.
        vpc_id: the cluster's VPC.
        target_group_arns: the target groups the controller may register pods in.
        node_selector: node labels that place the controller on the system pool.
        replicas: controller replicas. Defaults to 2.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        vpc_id: str,
        target_group_arns: Sequence[str],
        node_selector: Mapping[str, str],
        replicas: int = 2,
    ) -> None:
        super().__init__(scope, construct_id)
        region = cdk.Stack.of(self).region
        self.controller = PodIdentityRole(
            self,
            "ControllerRole",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description="AWS Load Balancer Controller: register pods in the inference target groups",
        )
        policy = iam.Policy(
            self,
            "ControllerPolicy",
            statements=controller_statements(target_group_arns=target_group_arns, region=region),
        )
        policy.attach_to_role(self.controller.role)
        reason = (
            "Describe calls of Elastic Load Balancing and EC2 support no resource-level permissions; the "
            "statements are read-only and limited to the stage's region. The only writes (register and "
            "deregister targets) name this stage's target groups."
        )
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(id="AwsSolutions-IAM5[Action::elasticloadbalancing:Describe*]", reason=reason),
            cdk.Acknowledgment(id="AwsSolutions-IAM5[Action::ec2:Describe*]", reason=reason),
            cdk.Acknowledgment(id="AwsSolutions-IAM5[Resource::*]", reason=reason),
        )

        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=load_balancer_controller_values(
                cluster_name=cluster_name,
                region=region,
                vpc_id=vpc_id,
                node_selector=node_selector,
                replicas=replicas,
            ),
        )
        # The controller needs its AWS role (association and policy) before it reconciles its first binding.
        self.release.node.add_dependency(self.controller.association, policy)
