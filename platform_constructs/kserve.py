"""KServe in Standard mode (formerly RawDeployment): InferenceServices as plain Deployments, no Knative.

Two pinned OCI charts: ``kserve-crd`` (the CRDs) and ``kserve-resources`` (controller, webhooks,
``inferenceservice-config``), v0.20.0. The controller's default deployment mode is set with
``kserve.controller.deploymentMode``; KServe v0.15 renamed RawDeployment to ``Standard`` (the old name is
still accepted and normalized). No ingress is created (no Istio): clients reach predictors through their
Services and the mesh. KServe's webhook certificate comes from cert-manager (a ``Certificate`` and a
self-signed ``Issuer`` in the chart), so cert-manager must be installed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from platform_constructs.helm_addon import HelmAddon, HelmChartRef

# ../shared/k8s-reference/SOURCES.md: oci://ghcr.io/kserve/charts/kserve-crd and kserve-resources, v0.20.0
CRD_CHART: Final = HelmChartRef(
    repository="oci://ghcr.io/kserve/charts/kserve-crd", chart="kserve-crd", version="v0.20.0"
)
CHART: Final = HelmChartRef(
    repository="oci://ghcr.io/kserve/charts/kserve-resources", chart="kserve-resources", version="v0.20.0"
)
NAMESPACE: Final = "kserve"
DEPLOYMENT_MODE: Final = "Standard"


def kserve_values(*, node_selector: Mapping[str, str], region: str) -> dict[str, Any]:
    """Return the kserve-resources values (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels placing the controller on the system pool.
        region: the models bucket's region, for the storage initializer's S3 client.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: give the system pool's label so the controller stays off GPU nodes")
    return {
        "kserve": {
            "controller": {
                "deploymentMode": DEPLOYMENT_MODE,
                "nodeSelector": dict(node_selector),
                # No Istio or Gateway API gateway in front of KServe: no Ingress objects to create.
                "gateway": {"disableIngressCreation": True},
            },
            # Credentials come from the predictor's Pod Identity role; only the region is configured.
            "storage": {"s3": {"region": region}},
        }
    }


class KServe(Construct):
    """Define the KServe CRD and controller releases.

    Args:
        cluster: the cluster to install into.
        node_selector: node labels placing the controller on the system pool.
        region: the stage's region (S3 of the storage initializer).
        overrides: stage-specific kserve-resources values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        region: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.crds = HelmAddon(self, "Crds", cluster=cluster, chart=CRD_CHART, namespace=NAMESPACE)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            release="kserve",
            values=kserve_values(node_selector=node_selector, region=region),
            overrides=overrides,
        )
        # The controller's webhooks and the inferenceservice-config refer to the CRDs' kinds.
        self.release.node.add_dependency(self.crds)
