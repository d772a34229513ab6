"""ClusterStack: EKS (aws_eks_v2), its add-ons, node pools, Karpenter and storage classes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk.lambda_layer_kubectl_v35 import KubectlV35Layer
from constructs import Construct

from config.catalog import INSTANCE_TYPES
from config.model import NodePoolConfig
from config.pools import node_labels
from k8s_charts.karpenter_pools import KarpenterPoolsChart, root_volume_gib
from k8s_charts.storage import StorageClassesChart
from platform_constructs.eks_addons import EksAddons
from platform_constructs.karpenter import Karpenter
from platform_constructs.node_role import node_role
from platform_constructs.nodegroup_pool import NodegroupPool
from platform_constructs.retention import retention_days
from stacks.base import PlatformStack

# The kubectl layer must match the control plane's minor version (one package per version).
KUBECTL_LAYERS = {"1.35": KubectlV35Layer}
SYSTEM_POOL = "system"
_LOG_TYPES = [
    eks.ClusterLoggingTypes.API,
    eks.ClusterLoggingTypes.AUDIT,
    eks.ClusterLoggingTypes.AUTHENTICATOR,
    eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
    eks.ClusterLoggingTypes.SCHEDULER,
]


def pascal(name: str) -> str:
    """Return ``a100-mig`` as ``A100Mig``: construct IDs of per-pool constructs."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


class ClusterStack(PlatformStack):
    """Define the EKS cluster of a stage and everything that makes its nodes usable.

    Args:
        vpc: the stage VPC.
        node_subnets: where nodes, pods and the kubectl handler run.
        node_security_group: the group every node carries (data stores admit it).
        secrets_key: KMS key for envelope encryption of Kubernetes secrets.
        logs_key: KMS key of the control-plane log group.
        cluster_name: the EKS cluster's name (also the Karpenter discovery tag).
        kubernetes_version: the control plane's minor version.
        public_access_cidrs: networks allowed on the public endpoint; empty means a private endpoint only.
        admin_role_arns: roles with cluster-admin access entries.
        readonly_role_arns: roles with view access entries.
        node_pools: the stage's pool specs.
        log_retention_days: retention of the control-plane logs.
        file_system_id: the shared EFS file system for the ``efs`` storage class.
        karpenter: install Karpenter and its NodePools.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        node_subnets: ec2.SubnetSelection,
        node_security_group: ec2.ISecurityGroup,
        secrets_key: kms.IKey,
        logs_key: kms.IKey,
        cluster_name: str,
        kubernetes_version: str,
        public_access_cidrs: Sequence[str],
        admin_role_arns: Sequence[str],
        readonly_role_arns: Sequence[str],
        node_pools: Sequence[NodePoolConfig],
        log_retention_days: int,
        file_system_id: str | None,
        karpenter: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        layer = KUBECTL_LAYERS.get(kubernetes_version)
        if layer is None:
            raise ValueError(
                f"no kubectl layer pinned for Kubernetes {kubernetes_version}: add aws-cdk.lambda-layer-kubectl-v"
                f"{kubernetes_version.split('.')[1]} to pyproject.toml and KUBECTL_LAYERS"
            )
        # EKS creates this group on first log line unless it exists: owning it sets retention and encryption.
        control_plane_logs = logs.LogGroup(
            self,
            "ControlPlaneLogs",
            log_group_name=f"/aws/eks/{cluster_name}/cluster",
            encryption_key=logs_key,
            retention=retention_days(log_retention_days),
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        endpoint = (
            eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_access_cidrs)
            if public_access_cidrs
            else eks.EndpointAccess.PRIVATE
        )
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_name,
            version=eks.KubernetesVersion.of(kubernetes_version),
            vpc=vpc,
            vpc_subnets=[node_subnets],
            # aws_eks_v2 defaults to EKS Auto Mode; this platform brings its own nodegroups and Karpenter.
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            endpoint_access=endpoint,
            cluster_logging=_LOG_TYPES,
            secrets_encryption_key=secrets_key,
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=layer(self, "KubectlLayer"),
                # The handler reaches the private endpoint from inside the VPC.
                private_subnets=vpc.select_subnets(subnet_group_name=node_subnets.subnet_group_name).subnets,
            ),
        )
        # jsii's generated ICluster protocol lists kubectl_provider_options, which the Cluster class lacks in
        # its Python typing; every consumer takes the interface, so cast once here.
        self.cluster_ref = cast(eks.ICluster, self.cluster)
        self.cluster.node.add_dependency(control_plane_logs)
        _acknowledge_cluster_internals(self.cluster)
        self._grant_access(admin_role_arns, readonly_role_arns)
        self.addons = EksAddons(self, "Addons", cluster=self.cluster_ref, kubernetes_version=kubernetes_version)

        self.nodegroup_role = node_role(self, "NodegroupRole", description=f"{cluster_name}: managed nodegroup nodes")
        self.pools: dict[str, NodegroupPool] = {}
        for pool in node_pools:
            if pool.provisioner == "nodegroup":
                self.pools[pool.name] = self._nodegroup(pool, node_subnets, node_security_group)

        # Kubernetes objects we write ourselves come from cdk8s charts attached to this cluster.
        self.charts = cdk8s.App()
        storage = self.cluster.add_cdk8s_chart(
            "StorageClasses", StorageClassesChart(self.charts, "storage-classes", file_system_id=file_system_id)
        )
        # The EBS and EFS drivers must exist before claims of these classes are provisioned.
        storage.node.add_dependency(self.addons.addons["aws-ebs-csi-driver"], self.addons.addons["aws-efs-csi-driver"])

        self.karpenter: Karpenter | None = None
        if karpenter and any(p.provisioner == "karpenter" for p in node_pools):
            self._karpenter(cluster_name, kubernetes_version, node_pools)

    def _grant_access(self, admin_role_arns: Sequence[str], readonly_role_arns: Sequence[str]) -> None:
        """Access entries (no aws-auth ConfigMap): cluster admins and read-only viewers by IAM role."""
        grants = (
            ("Admin", admin_role_arns, "AmazonEKSClusterAdminPolicy"),
            ("ReadOnly", readonly_role_arns, "AmazonEKSViewPolicy"),
        )
        for kind, arns, policy in grants:
            for arn in arns:
                self.cluster.grant_access(
                    f"{kind}{pascal(arn.rsplit('/', 1)[-1])}",
                    arn,
                    [eks.AccessPolicy.from_access_policy_name(policy, access_scope_type=eks.AccessScopeType.CLUSTER)],
                )

    def _nodegroup(
        self, pool: NodePoolConfig, subnets: ec2.SubnetSelection, node_security_group: ec2.ISecurityGroup
    ) -> NodegroupPool:
        gpu = bool(INSTANCE_TYPES[pool.instance_types[0]].gpu)
        peak = (pool.peak.extra_nodes, pool.peak.start_hour_utc, pool.peak.end_hour_utc) if pool.peak else None
        group = NodegroupPool(
            self,
            f"{pascal(pool.name)}Pool",
            cluster=self.cluster_ref,
            node_role=self.nodegroup_role,
            security_groups=[self.cluster.cluster_security_group, node_security_group],
            subnets=subnets,
            instance_types=pool.instance_types,
            gpu=gpu,
            spot=pool.capacity_types == ("spot",),
            min_nodes=pool.min_nodes,
            max_nodes=pool.max_nodes,
            labels=node_labels(pool),
            taints=[(t.key, t.value, t.effect) for t in pool.taints],
            root_volume_gib=root_volume_gib(pool),
            peak=peak,
        )
        # Nodes need the CNI (pod networking) before they turn Ready.
        group.nodegroup.node.add_dependency(self.addons.addons["vpc-cni"])
        return group

    def _karpenter(self, cluster_name: str, kubernetes_version: str, node_pools: Sequence[NodePoolConfig]) -> None:
        system = next((p for p in node_pools if p.name == SYSTEM_POOL), None)
        if system is None:
            raise ValueError(f"Karpenter runs on the '{SYSTEM_POOL}' node pool, which the stage does not define")
        karpenter = Karpenter(
            self,
            "Karpenter",
            cluster=self.cluster_ref,
            cluster_name=cluster_name,
            controller_node_selector={"ml-platform/pool": SYSTEM_POOL},
        )
        # The controller runs on the system pool, so that pool must exist before the release waits for it.
        karpenter.release.node.add_dependency(self.pools[SYSTEM_POOL].nodegroup)
        pools_chart = self.cluster.add_cdk8s_chart(
            "KarpenterPools",
            KarpenterPoolsChart(
                self.charts,
                "karpenter-pools",
                pools=node_pools,
                cluster_name=cluster_name,
                node_role_name=karpenter.node_role.role_name,
                discovery_tag=cluster_name,
                kubernetes_version=kubernetes_version,
            ),
        )
        # The release installs the NodePool and EC2NodeClass CRDs. On destroy the order reverses: the NodePools
        # go first, so Karpenter drains and terminates its nodes while its controller still runs.
        pools_chart.node.add_dependency(karpenter.release)
        self.karpenter = karpenter


def _acknowledge_cluster_internals(cluster: eks.Cluster) -> None:
    """Acknowledge findings on the roles and handler that aws_eks_v2 itself creates for the cluster."""
    cdk.Validations.of(cluster.role).acknowledge(
        cdk.Acknowledgment(
            id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEKSClusterPolicy]",
            reason="The EKS service role policy AWS maintains for the control plane; EKS requires exactly this policy.",
        )
    )
    provider = cluster.node.find_child("KubectlProvider")
    managed = (
        "service-role/AWSLambdaBasicExecutionRole",
        "service-role/AWSLambdaVPCAccessExecutionRole",
        "AmazonEC2ContainerRegistryReadOnly",
    )
    reason = (
        "Roles of the kubectl handler that aws-cdk-lib's aws_eks_v2 creates: it runs in the node subnets (VPC "
        "access), writes its own logs and pulls the kubectl image; the library owns and updates these policies."
    )
    for policy in managed:
        cdk.Validations.of(provider).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]", reason=reason
            )
        )
    cdk.Validations.of(provider).acknowledge(
        cdk.Acknowledgment(
            id='AwsSolutions-IAM4[Policy::{"Fn::If":["ClusterKubectlProviderHandlerHasEcrPublic69E09706",{"Fn::Join":'
            '["",["arn:",{"Ref":"AWS::Partition"},":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},'
            '{"Ref":"AWS::NoValue"}]}]',
            reason=reason,
        ),
        cdk.Acknowledgment(
            id="AwsSolutions-IAM5[Resource::<ClusterKubectlProviderHandler2E05C68A.Arn>:*]",
            reason="The custom-resource framework invokes every version of the kubectl handler it owns; the "
            "wildcard is the version suffix of that one function's ARN.",
        ),
        cdk.Acknowledgment(
            id="AwsSolutions-L1",
            reason="The kubectl handler's runtime is chosen by aws-cdk-lib for its bundled kubectl and helm; it "
            "moves with the pinned library version, not with this app.",
        ),
    )
