"""PlatformServicesStack: what turns the bare cluster into the shared GPU platform.

Tenancy guardrails (namespaces, Pod Security, priorities, quotas, limit ranges, default-deny network
policies), the NVIDIA GPU Operator with the pools' device-plugin and MIG configs, and the Linkerd mesh
with cert-manager. Kept out of the cluster stack so that each template stays well under CloudFormation's
limits as the charts grow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cdk8s
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from config.model import NamespaceQuota, NodePoolConfig
from k8s_charts.gpu_sharing import GpuSharingChart
from k8s_charts.mesh_policy import platform_mesh_rules
from k8s_charts.secrets import SecretStoreChart
from k8s_charts.tenancy import TenancyChart, mig_resources_per_gpu
from platform_constructs import gpu_operator
from platform_constructs.cert_manager import CertManager
from platform_constructs.external_secrets import ExternalSecretsOperator
from platform_constructs.gpu_operator import NvidiaGpuOperator
from platform_constructs.k8s_manifest import attach_chart
from platform_constructs.linkerd import Linkerd
from stacks.base import PlatformStack

SYSTEM_NODES = {"ml-platform/pool": "system"}


class PlatformServicesStack(PlatformStack):
    """Define the platform services of one stage's cluster.

    Args:
        cluster: the stage's EKS cluster.
        kubernetes_version: the cluster's minor version (Pod Security labels pin it).
        node_pools: the pool specs (device-plugin and MIG configs come from them).
        mig_layouts: the named MIG layouts of the stage.
        priority_classes: PriorityClass name -> value.
        quotas: namespace -> quota.
        node_cidrs: node subnet CIDRs (monitoring scrapes kubelet and node-exporter there).
        gpu_operator_enabled: install the GPU Operator.
        mesh_enabled: install cert-manager and Linkerd.
        app_secrets: Secrets Manager secrets the External Secrets Operator may read (database, cache AUTH).
        app_secret_prefix: name prefix of the stage's other application secrets (``<project>-<stage>/``).
        secrets_key: the KMS key those secrets are encrypted with.
        high_availability: production replicas, anti-affinity and disruption budgets for the mesh.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        kubernetes_version: str,
        node_pools: Sequence[NodePoolConfig],
        mig_layouts: Mapping[str, Mapping[str, int]],
        priority_classes: Mapping[str, int],
        quotas: Mapping[str, NamespaceQuota],
        node_cidrs: Sequence[str],
        gpu_operator_enabled: bool,
        mesh_enabled: bool,
        high_availability: bool,
        app_secrets: Sequence[secretsmanager.ISecret],
        app_secret_prefix: str,
        secrets_key: kms.IKey,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        charts = cdk8s.App()
        self.tenancy = attach_chart(
            self,
            "Tenancy",
            cluster=cluster,
            chart=TenancyChart(
                charts,
                "tenancy",
                kubernetes_version=kubernetes_version,
                priority_classes=priority_classes,
                quotas=quotas,
                mig_resources=mig_resources_per_gpu(mig_layouts),
                node_cidrs=node_cidrs,
            ),
        )
        # The secrets path every workload uses: External Secrets Operator with Pod Identity, and one
        # ClusterSecretStore on Secrets Manager. Here rather than with a consumer: monitoring, inference and the
        # workloads all create ExternalSecrets, and monitoring must deploy before the others (their PodMonitors).
        self.external_secrets = ExternalSecretsOperator(
            self,
            "ExternalSecrets",
            cluster=cluster,
            node_selector=SYSTEM_NODES,
            secrets=app_secrets,
            secret_name_prefix=app_secret_prefix,
            secrets_key=secrets_key,
        )
        self.secret_store = attach_chart(
            self, "SecretStore", cluster=cluster, chart=SecretStoreChart(charts, "secret-store", region=self.region)
        )
        # The release installs the ClusterSecretStore CRD and runs the controller that validates the store; the
        # store admits the platform namespaces, which the tenancy chart creates.
        self.secret_store.node.add_dependency(self.external_secrets.release, self.tenancy)

        self.gpu_operator: NvidiaGpuOperator | None = None
        if gpu_operator_enabled and any(p.gpu_instance_types for p in node_pools):
            self.gpu_operator = NvidiaGpuOperator(self, "GpuOperator", cluster=cluster, node_selector=SYSTEM_NODES)
            sharing = attach_chart(
                self,
                "GpuSharing",
                cluster=cluster,
                chart=GpuSharingChart(
                    charts, "gpu-sharing", namespace=gpu_operator.NAMESPACE, pools=node_pools, mig_layouts=mig_layouts
                ),
            )
            # The release creates the gpu-operator namespace the ConfigMaps live in. The device plugin and MIG
            # manager read them when they start, and reload on change, so the order does not gate the nodes.
            sharing.node.add_dependency(self.gpu_operator.release)

        self.cert_manager: CertManager | None = None
        self.linkerd: Linkerd | None = None
        if mesh_enabled:
            self.cert_manager = CertManager(
                self, "CertManager", cluster=cluster, node_selector=SYSTEM_NODES, replicas=2 if high_availability else 1
            )
            self.linkerd = Linkerd(
                self,
                "Linkerd",
                cluster=cluster,
                cert_manager=self.cert_manager,
                node_selector=SYSTEM_NODES,
                high_availability=high_availability,
                mesh_rules=platform_mesh_rules(scraper_networks=node_cidrs),
            )
            # The Server and AuthorizationPolicy objects live in the platform namespaces the tenancy chart creates.
            if self.linkerd.policy is not None:
                self.linkerd.policy.node.add_dependency(self.tenancy)
