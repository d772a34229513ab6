"""Linkerd 2.20 (edge-26.6.3): CRDs, control plane with cert-manager-issued identity, viz, and mesh policy.

Install order (each step waits for the one before; destroy runs in reverse):

1. cert-manager (``CertManager``, passed in): its CRDs and webhook.
2. ``MeshIdentityChart``: the ``linkerd`` namespace, trust anchor, identity issuer and trust bundle job
   (see k8s_charts/mesh_identity.py for the rotation flow).
3. linkerd-crds: the policy.linkerd.io CRDs.
4. linkerd-control-plane with ``identity.externalCA`` and ``identity.issuer.scheme: kubernetes.io/tls``:
   it reads the issuer from the Secret ``linkerd-identity-issuer`` and the roots from the ConfigMap
   ``linkerd-identity-trust-roots``; neither a certificate nor a key passes through Helm values. The
   admission webhooks serve certificates cert-manager issues and renews too (``externalSecret`` with
   ``injectCaFrom``), instead of the one-year certificates the chart would generate at each upgrade.
5. linkerd-viz, then the ``MeshPolicyChart`` rules.

How pods join the mesh, and the Pod Security level that follows. Linkerd 2.20 has no iptables-free data
plane: inbound and outbound traffic reach the proxy through iptables rules that the ``linkerd-init``
container writes into the pod's network namespace, with the NET_ADMIN and NET_RAW capabilities
(``proxyInit.runAsRoot: false`` runs it as UID 65534, but the capabilities remain). The only alternative
is the linkerd-cni DaemonSet (``cniEnabled: true``), whose chart is not in the pinned reference, so this
module installs none. ``proxy.nativeSidecar`` does not change this: it runs the proxy as a native sidecar
(an init container with ``restartPolicy: Always``), which starts it before the application and lets Jobs
finish, but linkerd-init still runs first. NET_ADMIN and NET_RAW are outside the capabilities the
``baseline`` level allows, so **every meshed namespace must enforce the ``privileged`` Pod Security
level**; ``restricted`` or ``baseline`` namespaces can only run unmeshed pods. Moving to ``restricted``
needs the linkerd2-cni chart pinned in the reference and ``cniEnabled: true`` here.

Metrics: viz keeps its own Prometheus by default (6h retention; it feeds the viz dashboard and
``linkerd viz stat``). The monitoring stack runs unmeshed (k8s_charts/tenancy.py meshes only the service
namespaces) and scrapes the proxies' admin port from the node subnets; give ``prometheus_url`` to drop
viz's own Prometheus once the monitoring stack's PodMonitors cover the proxies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import cdk8s
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from k8s_charts.mesh_identity import LINKERD_NAMESPACE, WEBHOOK_CERTIFICATES, MeshIdentityChart
from k8s_charts.mesh_policy import (
    TRAINING_SKIP_PORTS,
    MeshPolicyChart,
    ServerAccess,
    training_pod_annotations,
)
from platform_constructs.cert_manager import CertManager
from platform_constructs.helm_addon import HelmAddon, HelmChartRef

__all__ = [
    "CONTROL_PLANE_CHART",
    "CRDS_CHART",
    "DEFAULT_INBOUND_POLICY",
    "NAMESPACE",
    "OPAQUE_PORTS",
    "TRAINING_SKIP_PORTS",
    "VIZ_CHART",
    "VIZ_NAMESPACE",
    "Linkerd",
    "linkerd_control_plane_values",
    "linkerd_crds_values",
    "linkerd_viz_values",
    "training_pod_annotations",
]

# ../shared/k8s-reference/SOURCES.md: https://helm.linkerd.io/edge -> linkerd-edge/<chart> --version 2026.6.3
_REPOSITORY = "https://helm.linkerd.io/edge"
_VERSION = "2026.6.3"
CRDS_CHART: Final = HelmChartRef(repository=_REPOSITORY, chart="linkerd-crds", version=_VERSION)
CONTROL_PLANE_CHART: Final = HelmChartRef(repository=_REPOSITORY, chart="linkerd-control-plane", version=_VERSION)
VIZ_CHART: Final = HelmChartRef(repository=_REPOSITORY, chart="linkerd-viz", version=_VERSION)
NAMESPACE: Final = LINKERD_NAMESPACE
VIZ_NAMESPACE: Final = "linkerd-viz"

# Ports whose traffic the proxies carry as opaque TCP (mTLS, no protocol detection). A values string
# replaces the chart's list, so its defaults stay: SMTP 25/587, MySQL 3306, Galera 4444, Elasticsearch 9300,
# Memcached 11211. The platform's own: PostgreSQL 5432 (RDS: MLflow, pipelines) and Redis 6379
# (ElastiCache: feature cache, queues), whose clients would otherwise wait for protocol detection.
OPAQUE_PORTS: Final = (25, 587, 3306, 4444, 5432, 6379, 9300, 11211)
# Only meshed (mTLS) clients may call a meshed port unless a MeshPolicyChart rule admits more; the tenancy
# chart sets the same default on the namespaces.
DEFAULT_INBOUND_POLICY: Final = "all-authenticated"
# linkerd-control-plane's values-ha.yaml: three replicas of each controller (hard anti-affinity per node:
# the node pool needs at least three nodes), one unavailable at a time, and these proxy resources.
HA_CONTROLLER_REPLICAS: Final = 3
HA_CONTROL_PLANE_RESOURCES: Final[Mapping[str, Mapping[str, Mapping[str, str]]]] = MappingProxyType(
    {
        "destinationResources": {"requests": {"cpu": "100m", "memory": "50Mi"}, "limits": {"memory": "250Mi"}},
        "identityResources": {"requests": {"cpu": "100m", "memory": "10Mi"}, "limits": {"memory": "250Mi"}},
        "proxyInjectorResources": {"requests": {"cpu": "100m", "memory": "50Mi"}, "limits": {"memory": "250Mi"}},
        "spValidatorResources": {"requests": {"cpu": "100m", "memory": "50Mi"}, "limits": {"memory": "250Mi"}},
    }
)


HA_PROXY_RESOURCES: Final[Mapping[str, Any]] = {
    "cpu": {"request": "100m"},
    "memory": {"request": "20Mi", "limit": "250Mi"},
}
HA_VIZ_REPLICAS: Final = 2
VIZ_PROMETHEUS_RESOURCES: Final[Mapping[str, Any]] = {
    "cpu": {"request": "200m"},
    "memory": {"request": "1Gi", "limit": "2Gi"},
}
# With webhookFailurePolicy Fail (HA) no pod outside kube-system and cert-manager is admitted while the
# injector is down, and the identity controller signs every proxy's certificate: the control plane must
# not be the one preempted when a node fills up.
PRIORITY_CLASS: Final = "system-cluster-critical"


def linkerd_crds_values() -> dict[str, Any]:
    """Return the linkerd-crds values: the policy CRDs only."""
    # The Gateway API CRDs are cluster-wide and shared; Linkerd 2.20 does not need them, and installing them
    # here would tie their version to Linkerd's.
    return {"installGatewayAPI": False}


def linkerd_control_plane_values(
    ha: bool, *, node_selector: Mapping[str, str], pod_monitor: bool = False
) -> dict[str, Any]:
    """Return the linkerd-control-plane values (every key exists in the pinned values.yaml).

    Args:
        ha: high availability: linkerd-control-plane's values-ha.yaml settings (replicas, anti-affinity,
            disruption budgets, proxy resources, webhook failure policy Fail).
        node_selector: node labels that place the control plane on the system pool.
        pod_monitor: create PodMonitors for the control plane and the proxies. Defaults to False; True needs
            the Prometheus Operator CRDs before this release.
    """
    if not node_selector:
        raise ValueError(
            "node_selector is empty: give the system pool's label (ml-platform/pool: system) for the Linkerd "
            "control plane"
        )
    proxy: dict[str, Any] = {
        "opaquePorts": ",".join(str(port) for port in OPAQUE_PORTS),
        "defaultInboundPolicy": DEFAULT_INBOUND_POLICY,
        # The proxy starts before and stops after the application containers, so Jobs (training, batch
        # inference, pipelines) complete instead of waiting forever on a running proxy.
        "nativeSidecar": True,
    }
    values: dict[str, Any] = {
        # The issuer comes from cert-manager's Secret linkerd-identity-issuer (tls.crt, tls.key) and the roots
        # from the ConfigMap linkerd-identity-trust-roots (k8s_charts/mesh_identity.py): nothing in values.
        "identity": {"externalCA": True, "issuer": {"scheme": "kubernetes.io/tls"}},
        "proxy": proxy,
        # EKS AL2023 nodes use the nft backend of iptables. linkerd-init runs as non-root with NET_ADMIN
        # and NET_RAW; meshed namespaces need the privileged Pod Security level (module docstring).
        "proxyInit": {"iptablesMode": "nft", "runAsRoot": False},
        "cniEnabled": False,
        "nodeSelector": dict(node_selector),
        "priorityClassName": PRIORITY_CLASS,
        # The heartbeat CronJob reports to Linkerd's servers on the internet: nothing to send from here.
        "disableHeartBeat": True,
        "podMonitor": {"enabled": pod_monitor},
    }
    # The webhooks serve cert-manager's certificates (k8s_charts/mesh_identity.py), and cert-manager's
    # cainjector writes their CA into the webhook configurations; the chart generates none.
    for key, certificate in WEBHOOK_CERTIFICATES.items():
        values[key] = {"externalSecret": True, "injectCaFrom": f"{NAMESPACE}/{certificate}"}
    if ha:
        proxy["resources"] = {kind: dict(amounts) for kind, amounts in HA_PROXY_RESOURCES.items()}
        values.update(
            {
                "controllerReplicas": HA_CONTROLLER_REPLICAS,
                "enablePodAntiAffinity": True,
                "enablePodDisruptionBudget": True,
                "controller": {"podDisruptionBudget": {"maxUnavailable": 1}},
                # A surge pod has no node to go to under hard anti-affinity: replace one pod at a time.
                "deploymentStrategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
                # A pod admitted while the injector is down would run unmeshed, outside mTLS and policy.
                "webhookFailurePolicy": "Fail",
                # values-ha.yaml's requests and limits for the control plane containers (keys documented as
                # comments in values.yaml): guaranteed memory keeps identity and destination off the OOM list.
                **{
                    key: {kind: dict(amounts) for kind, amounts in spec.items()}
                    for key, spec in HA_CONTROL_PLANE_RESOURCES.items()
                },
            }
        )
    return values


def linkerd_viz_values(
    ha: bool, *, node_selector: Mapping[str, str], prometheus_url: str | None = None
) -> dict[str, Any]:
    """Return the linkerd-viz values (every key exists in the pinned values.yaml).

    Args:
        ha: two replicas of each viz component, spread over nodes, with disruption budgets.
        node_selector: node labels that place viz on the system pool.
        prometheus_url: a Prometheus that already scrapes the Linkerd proxies; viz then runs none of its own.
            Defaults to viz's own Prometheus (module docstring).
    """
    if not node_selector:
        raise ValueError("node_selector is empty: give the system pool's label (ml-platform/pool: system) for viz")
    selector = dict(node_selector)
    prometheus: dict[str, Any]
    if prometheus_url is None:
        prometheus = {
            "enabled": True,
            "nodeSelector": selector,
            "resources": {kind: dict(amounts) for kind, amounts in VIZ_PROMETHEUS_RESOURCES.items()},
        }
    elif not prometheus_url.startswith(("http://", "https://")):
        raise ValueError(f"prometheus_url {prometheus_url!r} must be an http(s) URL such as http://prometheus:9090")
    else:
        prometheus = {"enabled": False}
    values: dict[str, Any] = {
        "linkerdNamespace": NAMESPACE,
        # The chart's per-component selectors are YAML anchors of this one, resolved before our values
        # arrive, so each component that has its own gets it set as well.
        "nodeSelector": selector,
        "metricsAPI": {"nodeSelector": selector},
        "namespaceMetadata": {"nodeSelector": selector},
        "prometheus": prometheus,
    }
    if prometheus_url is not None:
        values["prometheusUrl"] = prometheus_url
    if ha:
        values["enablePodAntiAffinity"] = True
        values["enablePodDisruptionBudget"] = True
        values["metricsAPI"]["replicas"] = HA_VIZ_REPLICAS
        for component in ("tap", "tapInjector", "dashboard"):
            values[component] = {"replicas": HA_VIZ_REPLICAS}
    return values


class Linkerd(Construct):
    """Define the Linkerd service mesh of one cluster: identity, CRDs, control plane, viz and mesh policy.

    Args:
        cluster: the cluster to install into.
        cert_manager: the cluster's cert-manager; the mesh identity is applied after its release.
        node_selector: node labels that place the control plane, viz and the trust-roots job on the system
            pool.
        high_availability: values-ha.yaml settings for the control plane and two replicas of viz.
        viz: install linkerd-viz. Defaults to True.
        prometheus_url: see ``linkerd_viz_values``. Defaults to viz's own Prometheus.
        pod_monitor: see ``linkerd_control_plane_values``. Defaults to False.
        mesh_rules: ``MeshPolicyChart`` rules (``platform_mesh_rules`` gives the platform's). Their
            namespaces must exist: make ``policy`` depend on the chart that creates them. Defaults to none.
        control_plane_overrides: stage-specific control plane values, deep-merged last. Defaults to none.
        viz_overrides: stage-specific viz values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cert_manager: CertManager,
        node_selector: Mapping[str, str],
        high_availability: bool,
        viz: bool = True,
        prometheus_url: str | None = None,
        pod_monitor: bool = False,
        mesh_rules: Sequence[ServerAccess] = (),
        control_plane_overrides: Mapping[str, Any] | None = None,
        viz_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        charts = cdk8s.App()
        self.identity = eks.KubernetesManifest(
            self,
            "MeshIdentity",
            cluster=cluster,
            manifest=MeshIdentityChart(charts, "mesh-identity", node_selector=node_selector).to_json(),
        )
        # Issuers and Certificates need cert-manager's CRDs and its webhook answering.
        self.identity.node.add_dependency(cert_manager.release)

        self.crds = HelmAddon(
            self, "Crds", cluster=cluster, chart=CRDS_CHART, namespace=NAMESPACE, values=linkerd_crds_values()
        )
        # The identity chart creates the linkerd namespace with the labels and the Pod Security level the
        # control plane needs; Helm would otherwise create a bare one. On destroy the namespace goes last.
        self.crds.node.add_dependency(self.identity)

        self.control_plane = HelmAddon(
            self,
            "ControlPlane",
            cluster=cluster,
            chart=CONTROL_PLANE_CHART,
            namespace=NAMESPACE,
            values=linkerd_control_plane_values(
                high_availability, node_selector=node_selector, pod_monitor=pod_monitor
            ),
            overrides=control_plane_overrides,
        )
        # The chart's templates use the policy CRDs, and its pods mount the issuer Secret and read the trust
        # roots ConfigMap that the identity chart (cert-manager, then its install Job) provides.
        self.control_plane.node.add_dependency(self.crds, self.identity)

        self.viz: HelmAddon | None = None
        if viz:
            self.viz = HelmAddon(
                self,
                "Viz",
                cluster=cluster,
                chart=VIZ_CHART,
                namespace=VIZ_NAMESPACE,
                values=linkerd_viz_values(
                    high_availability, node_selector=node_selector, prometheus_url=prometheus_url
                ),
                overrides=viz_overrides,
            )
            # Viz's pods are meshed by the proxy injector, and its policy objects pass the policy validator.
            self.viz.node.add_dependency(self.control_plane)

        self.policy: eks.KubernetesManifest | None = None
        if mesh_rules:
            self.policy = eks.KubernetesManifest(
                self,
                "MeshPolicy",
                cluster=cluster,
                manifest=MeshPolicyChart(charts, "mesh-policy", rules=mesh_rules).to_json(),
            )
            # Servers and AuthorizationPolicies need the CRDs (linkerd-crds) and the control plane's policy
            # validator webhook answering.
            self.policy.node.add_dependency(self.control_plane)
