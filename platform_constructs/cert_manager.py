"""cert-manager: issues and renews the platform's certificates, first of all Linkerd's mesh identity.

The release installs the CRDs itself (``crds.enabled``; ``crds.keep`` leaves them, and with them every
Certificate and Issuer, in place if the release is ever uninstalled). Helm waits for the
``startupapicheck`` hook, so once the release is done the webhook answers and charts with Certificates
and Issuers can be applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from platform_constructs.helm_addon import HelmAddon, HelmChartRef

# ../shared/k8s-reference/SOURCES.md: oci://quay.io/jetstack/charts/cert-manager --version v1.21.1
CHART: Final = HelmChartRef(
    repository="oci://quay.io/jetstack/charts/cert-manager", chart="cert-manager", version="v1.21.1"
)
NAMESPACE: Final = "cert-manager"

# The controller holds every Certificate and Secret it manages in its cache; the cainjector watches Secrets
# and webhook configurations. Limits on memory only: a CPU limit throttles renewals in bursts.
CONTROLLER_RESOURCES: Final[Mapping[str, Any]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
WEBHOOK_RESOURCES: Final[Mapping[str, Any]] = {
    "requests": {"cpu": "20m", "memory": "64Mi"},
    "limits": {"memory": "128Mi"},
}
CAINJECTOR_RESOURCES: Final[Mapping[str, Any]] = {
    "requests": {"cpu": "20m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def cert_manager_values(
    *,
    node_selector: Mapping[str, str],
    replicas: int = 2,
    service_monitor: bool = False,
    service_monitor_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return the chart values of the cert-manager release (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels that place every cert-manager pod on the system pool.
        replicas: replicas of the controller, the webhook and the cainjector. The controller and the
            cainjector elect a leader, so more than one only shortens failover; the webhook serves every
            API request on cert-manager resources. With more than one, each gets a PodDisruptionBudget
            (the chart's default: minAvailable 1). Defaults to 2.
        service_monitor: create a ServiceMonitor for the controller's metrics. Defaults to False; True
            needs the Prometheus Operator CRDs (kube-prometheus-stack) installed before this release.
        service_monitor_labels: extra labels on that ServiceMonitor, such as the ``release`` label a
            kube-prometheus-stack Prometheus selects by. Defaults to none.
    """
    if not node_selector:
        raise ValueError(
            "node_selector is empty: give the system pool's label (ml-platform/pool: system) so cert-manager "
            "does not land on a GPU or spot node"
        )
    if replicas < 1:
        raise ValueError(f"replicas is {replicas}: cert-manager needs at least 1")
    monitor: dict[str, Any] = {"enabled": service_monitor}
    if service_monitor_labels:
        monitor["labels"] = dict(service_monitor_labels)
    return {
        # The CRDs come with the release, so they match the controller version that serves them.
        "crds": {"enabled": True, "keep": True},
        # Merged into every component's own nodeSelector (kubernetes.io/os: linux), startupapicheck included.
        "global": {"nodeSelector": dict(node_selector)},
        "replicaCount": replicas,
        "podDisruptionBudget": {"enabled": replicas > 1},
        "resources": dict(CONTROLLER_RESOURCES),
        "webhook": {
            "replicaCount": replicas,
            "podDisruptionBudget": {"enabled": replicas > 1},
            "resources": dict(WEBHOOK_RESOURCES),
        },
        "cainjector": {
            "replicaCount": replicas,
            "podDisruptionBudget": {"enabled": replicas > 1},
            "resources": dict(CAINJECTOR_RESOURCES),
        },
        "prometheus": {"enabled": True, "servicemonitor": monitor},
    }


class CertManager(Construct):
    """Define the cert-manager release for one cluster.

    Args:
        cluster: the cluster to install into.
        node_selector: node labels that place cert-manager on the system pool.
        replicas: see ``cert_manager_values``. Defaults to 2.
        service_monitor: create the controller's ServiceMonitor. Defaults to False; the monitoring stack
            (Prometheus Operator CRDs) must then be installed before this release.
        service_monitor_labels: extra labels on that ServiceMonitor. Defaults to none.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        replicas: int = 2,
        service_monitor: bool = False,
        service_monitor_labels: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=cert_manager_values(
                node_selector=node_selector,
                replicas=replicas,
                service_monitor=service_monitor,
                service_monitor_labels=service_monitor_labels,
            ),
            overrides=overrides,
        )
