"""KEDA: event-driven autoscaling (ScaledObjects, ScaledJobs) with a Pod Identity role for AWS scalers.

The operator evaluates every trigger itself. For AWS triggers (SQS queue length) a TriggerAuthentication
with the ``aws`` pod identity provider and ``identityOwner: keda`` makes it use the operator's own EKS Pod
Identity role, which callers extend with exactly the reads their triggers need (``operator_role``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: https://kedacore.github.io/charts -> kedacore/keda 2.20.2
CHART: Final = HelmChartRef(repository="https://kedacore.github.io/charts", chart="keda", version="2.20.2")
NAMESPACE: Final = "keda"
OPERATOR_SERVICE_ACCOUNT: Final = "keda-operator"


def keda_values(*, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Return the chart values (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels placing the operator, metrics server and webhooks on the system pool.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: give the system pool's label so KEDA stays off GPU and spot nodes")
    return {
        # The chart installs ScaledObject, ScaledJob and (Cluster)TriggerAuthentication.
        "crds": {"install": True},
        # The Pod Identity association names this account before the release exists.
        "serviceAccount": {"operator": {"create": True, "name": OPERATOR_SERVICE_ACCOUNT}},
        "nodeSelector": dict(node_selector),
    }


class Keda(Construct):
    """Define the KEDA release and the operator's Pod Identity role.

    Args:
        cluster: the cluster to install into.
        node_selector: node labels placing KEDA on the system pool.
        overrides: stage-specific chart values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.operator = PodIdentityRole(
            self,
            "OperatorRole",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=OPERATOR_SERVICE_ACCOUNT,
            description="KEDA operator: read the metrics of AWS event sources its triggers name",
        )
        self.operator_role: iam.IRole = self.operator.role
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=keda_values(node_selector=node_selector),
            overrides=overrides,
        )
        # The operator's first evaluation of an AWS trigger needs its credentials.
        self.release.node.add_dependency(self.operator.association)
