"""Define the Kubernetes objects of the monitoring stack that no Helm chart provides.

``MonitoringPrerequisitesChart`` holds what must exist before the releases install: the ``logging``
namespace for the log shipper and the ExternalSecret that gives Grafana its admin credentials (through the
ClusterSecretStore of ``k8s_charts/secrets.py``, which must admit the ``monitoring`` namespace).
``TelemetryChart`` holds what needs the Prometheus Operator CRDs: the OpenTelemetry collector (a plain
Deployment, see below), the PodMonitor that scrapes training jobs, and the network allows of the
unmeshed, default-deny ``monitoring`` namespace (``monitoring_allows``).

The OpenTelemetry collector runs as a Deployment rather than an ``OpenTelemetryCollector`` custom resource:
that CRD is not in the pinned k8s reference, so an object of that kind could not be validated, and the
Deployment is only a few objects. Its configuration: OTLP in (gRPC 4317, HTTP 4318), traces out to AWS
X-Ray (awsxray exporter, credentials from EKS Pod Identity), metrics out on a Prometheus endpoint that a
ServiceMonitor scrapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import cdk8s
import constructs
import yaml

from k8s_charts.secrets import CLUSTER_SECRET_STORE, external_secret
from k8s_charts.tenancy import (
    METRICS_PORT_NAME,
    PSS_LABEL_PREFIX,
    NetworkAllow,
    Peer,
    PolicyPort,
    network_policy,
    pdb,
)

LOGGING_NAMESPACE: Final = "logging"
# The Kubernetes Secret Grafana reads its admin user and password from (grafana.admin.existingSecret).
GRAFANA_ADMIN_SECRET: Final = "grafana-admin"
GRAFANA_ADMIN_USER_KEY: Final = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY: Final = "admin-password"

OTEL_COLLECTOR: Final = "otel-collector"
# The contrib distribution carries the awsxray exporter; 0.158.0 is the collector release the pinned
# opentelemetry-operator chart (0.122.0) ships with.
OTEL_COLLECTOR_IMAGE: Final = "otel/opentelemetry-collector-contrib:0.158.0"
OTLP_GRPC_PORT: Final = 4317
OTLP_HTTP_PORT: Final = 4318
OTEL_PROMETHEUS_PORT: Final = 8889
OTEL_HEALTH_PORT: Final = 13133
# The image's non-root user.
OTEL_COLLECTOR_UID: Final = 10001
# The endpoint workloads send OTLP to (gRPC; HTTP on 4318).
OTEL_COLLECTOR_ENDPOINT: Final = f"http://{OTEL_COLLECTOR}.monitoring.svc:{OTLP_GRPC_PORT}"

# Training pods that publish the ml_platform_training_* gauges carry this label and a port named "metrics".
TRAINING_METRICS_POD_LABEL: Final[Mapping[str, str]] = {"ml-platform.io/training-metrics": "true"}
TRAINING_NAMESPACE: Final = "training"
# The Prometheus Operator labels every Prometheus pod with this; its web port serves queries.
PROMETHEUS_POD_LABELS: Final[Mapping[str, str]] = {"app.kubernetes.io/name": "prometheus"}
PROMETHEUS_PORT: Final = 9090
# A label of our own on the Prometheus Operator's pods (prometheusOperator.podLabels): the webhook allow selects it.
OPERATOR_POD_LABELS: Final[Mapping[str, str]] = {"ml-platform.io/component": "prometheus-operator"}
# The operator's admission webhook listens here (prometheusOperator.tls.internalPort).
OPERATOR_WEBHOOK_PORT: Final = 10250
# Namespaces whose pods query Prometheus: KEDA's Prometheus scaler (the inference autoscalers), Linkerd viz.
PROMETHEUS_CLIENT_NAMESPACES: Final = ("keda", "linkerd-viz")

_RESTRICTED_CONTAINER: Final[Mapping[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


class MonitoringPrerequisitesChart(cdk8s.Chart):
    """Define the logging namespace and Grafana's admin credentials, both needed before the releases.

    ``logging`` is the one namespace of the stack that enforces the ``privileged`` Pod Security level:
    Fluent Bit is a DaemonSet that reads every container's log files from the node (hostPath ``/var/log``)
    and keeps its read position in a file there, as root; ``baseline`` already forbids hostPath volumes.
    Nothing else runs in it. It audits and warns at ``restricted`` like every platform namespace, so the
    exception stays visible.

    Args:
        monitoring_namespace: where Grafana runs (the namespace must exist: the tenancy chart creates it).
        grafana_admin_secret_key: the name or ARN of the Secrets Manager secret (JSON with ``admin-user``
            and ``admin-password``) the ExternalSecret copies (``k8s_charts.secrets.external_secret``).
        kubernetes_version: the control plane's minor version; the Pod Security labels pin it.
        secret_store: the ClusterSecretStore to read through. Defaults to ``aws-secrets-manager``.
        refresh_interval: how often the External Secrets Operator re-reads the secret. Defaults to 1h.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        monitoring_namespace: str,
        grafana_admin_secret_key: str,
        kubernetes_version: str,
        secret_store: str = CLUSTER_SECRET_STORE,
        refresh_interval: str = "1h",
    ) -> None:
        super().__init__(scope, construct_id)
        if not grafana_admin_secret_key:
            raise ValueError("grafana_admin_secret_key is empty: name the Secrets Manager secret Grafana reads")
        version = f"v{kubernetes_version}"
        labels = {f"{PSS_LABEL_PREFIX}/enforce": "privileged", f"{PSS_LABEL_PREFIX}/enforce-version": version}
        for mode in ("audit", "warn"):
            labels[f"{PSS_LABEL_PREFIX}/{mode}"] = "restricted"
            labels[f"{PSS_LABEL_PREFIX}/{mode}-version"] = version
        cdk8s.ApiObject(
            self,
            "logging-namespace",
            api_version="v1",
            kind="Namespace",
            metadata=cdk8s.ApiObjectMetadata(
                name=LOGGING_NAMESPACE,
                labels=labels,
                annotations={
                    "ml-platform/reason": "Fluent Bit reads container logs from the node's /var/log as root "
                    "(hostPath), which only the privileged Pod Security level admits"
                },
            ),
        )
        external_secret(
            self,
            "grafana-admin",
            name=GRAFANA_ADMIN_SECRET,
            namespace=monitoring_namespace,
            secret_arn_or_name=grafana_admin_secret_key,
            keys={
                GRAFANA_ADMIN_USER_KEY: GRAFANA_ADMIN_USER_KEY,
                GRAFANA_ADMIN_PASSWORD_KEY: GRAFANA_ADMIN_PASSWORD_KEY,
            },
            store=secret_store,
            refresh_interval=refresh_interval,
        )


def otel_collector_config(*, region: str) -> dict[str, Any]:
    """Return the collector's configuration: OTLP in, traces to X-Ray, metrics on a Prometheus endpoint."""
    if not region:
        raise ValueError("region is empty: the awsxray exporter needs the stage's region")
    return {
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{OTEL_HEALTH_PORT}"}},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC_PORT}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP_PORT}"},
                }
            }
        },
        "processors": {
            # Refuse data before the container's memory limit is reached, rather than being OOM-killed.
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 25},
            "batch": {},
        },
        "exporters": {
            "awsxray": {"region": region},
            "prometheus": {
                "endpoint": f"0.0.0.0:{OTEL_PROMETHEUS_PORT}",
                # Resource attributes (service.name, k8s.*) become labels, so series stay distinguishable.
                "resource_to_telemetry_conversion": {"enabled": True},
            },
        },
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["awsxray"]},
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": ["prometheus"],
                },
            },
        },
    }


class TelemetryChart(cdk8s.Chart):
    """Define the OpenTelemetry collector, the training PodMonitor and the monitoring namespace's allows.

    Needs the Prometheus Operator CRDs (ServiceMonitor, PodMonitor): attach it after kube-prometheus-stack.

    Args:
        namespace: the monitoring namespace.
        region: the stage's region (X-Ray endpoint).
        node_selector: node labels that place the collector on the system pool.
        webhook_cidrs: the cluster's subnets, where the API server calls admission webhooks from.
        service_account: the collector's service account; its Pod Identity role may write to X-Ray.
        replicas: collector replicas. Defaults to 2 (a PodDisruptionBudget keeps one up during drains).
        training_namespace: where training jobs run. Defaults to ``training``.
        monitor_labels: labels on the ServiceMonitor and PodMonitor, such as the ``release`` label a
            Prometheus selects monitors by. Defaults to none (the platform's Prometheus selects all).
        prometheus_clients: namespaces allowed to query Prometheus. Defaults to keda and linkerd-viz.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        namespace: str,
        region: str,
        node_selector: Mapping[str, str],
        webhook_cidrs: Sequence[str],
        service_account: str = OTEL_COLLECTOR,
        replicas: int = 2,
        training_namespace: str = TRAINING_NAMESPACE,
        monitor_labels: Mapping[str, str] | None = None,
        prometheus_clients: Sequence[str] = PROMETHEUS_CLIENT_NAMESPACES,
    ) -> None:
        super().__init__(scope, construct_id)
        if replicas < 1:
            raise ValueError(f"otel collector replicas {replicas} must be at least 1")
        if not node_selector:
            raise ValueError("node_selector is empty: give the system pool's label so the collector stays off GPUs")
        selector = {"app.kubernetes.io/name": OTEL_COLLECTOR}
        labels = {**selector, "app.kubernetes.io/component": "telemetry"}
        monitors = dict(monitor_labels or {})

        cdk8s.ApiObject(
            self,
            "otel-collector-service-account",
            api_version="v1",
            kind="ServiceAccount",
            metadata=cdk8s.ApiObjectMetadata(name=service_account, namespace=namespace, labels=labels),
        )
        config_map = cdk8s.ApiObject(
            self,
            "otel-collector-config",
            api_version="v1",
            kind="ConfigMap",
            metadata=cdk8s.ApiObjectMetadata(name=f"{OTEL_COLLECTOR}-config", namespace=namespace, labels=labels),
        )
        config_map.add_json_patch(
            cdk8s.JsonPatch.add("/data", {"config.yaml": yaml.safe_dump(otel_collector_config(region=region))})
        )
        ports = [
            {"name": "otlp-grpc", "containerPort": OTLP_GRPC_PORT, "protocol": "TCP"},
            {"name": "otlp-http", "containerPort": OTLP_HTTP_PORT, "protocol": "TCP"},
            # Named "metrics": the tenancy NetworkPolicies admit Prometheus on ports of that name.
            {"name": METRICS_PORT_NAME, "containerPort": OTEL_PROMETHEUS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": OTEL_HEALTH_PORT, "protocol": "TCP"},
        ]
        probe = {"httpGet": {"path": "/", "port": "health"}, "periodSeconds": 10}
        deployment = cdk8s.ApiObject(
            self,
            "otel-collector",
            api_version="apps/v1",
            kind="Deployment",
            metadata=cdk8s.ApiObjectMetadata(name=OTEL_COLLECTOR, namespace=namespace, labels=labels),
        )
        deployment.add_json_patch(
            cdk8s.JsonPatch.add(
                "/spec",
                {
                    "replicas": replicas,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": service_account,
                            "nodeSelector": dict(node_selector),
                            "securityContext": {
                                "runAsNonRoot": True,
                                "runAsUser": OTEL_COLLECTOR_UID,
                                "runAsGroup": OTEL_COLLECTOR_UID,
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "topologySpreadConstraints": [
                                {
                                    "maxSkew": 1,
                                    "topologyKey": "topology.kubernetes.io/zone",
                                    "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {"matchLabels": selector},
                                }
                            ],
                            "containers": [
                                {
                                    "name": "collector",
                                    "image": OTEL_COLLECTOR_IMAGE,
                                    "args": ["--config=/conf/config.yaml"],
                                    "ports": ports,
                                    "env": [
                                        # Go's GC works to stay under this, below the container's memory limit.
                                        {"name": "GOMEMLIMIT", "value": "800MiB"},
                                    ],
                                    "resources": {
                                        "requests": {"cpu": "200m", "memory": "512Mi"},
                                        "limits": {"memory": "1Gi"},
                                    },
                                    "livenessProbe": probe,
                                    "readinessProbe": probe,
                                    "securityContext": dict(_RESTRICTED_CONTAINER),
                                    "volumeMounts": [{"name": "config", "mountPath": "/conf", "readOnly": True}],
                                }
                            ],
                            "volumes": [{"name": "config", "configMap": {"name": f"{OTEL_COLLECTOR}-config"}}],
                        },
                    },
                },
            )
        )
        service = cdk8s.ApiObject(
            self,
            "otel-collector-service",
            api_version="v1",
            kind="Service",
            metadata=cdk8s.ApiObjectMetadata(name=OTEL_COLLECTOR, namespace=namespace, labels=labels),
        )
        service.add_json_patch(
            cdk8s.JsonPatch.add(
                "/spec",
                {
                    "selector": selector,
                    "ports": [
                        {"name": p["name"], "port": p["containerPort"], "targetPort": p["name"], "protocol": "TCP"}
                        for p in ports
                        if p["name"] != "health"
                    ],
                },
            )
        )
        pdb(
            self,
            "otel-collector-pdb",
            name=OTEL_COLLECTOR,
            namespace=namespace,
            match_labels=selector,
            replicas=replicas,
        )
        service_monitor = cdk8s.ApiObject(
            self,
            "otel-collector-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=cdk8s.ApiObjectMetadata(name=OTEL_COLLECTOR, namespace=namespace, labels={**labels, **monitors}),
        )
        service_monitor.add_json_patch(
            cdk8s.JsonPatch.add(
                "/spec",
                {
                    "selector": {"matchLabels": selector},
                    "endpoints": [{"port": METRICS_PORT_NAME, "interval": "30s", "honorLabels": True}],
                },
            )
        )
        training = cdk8s.ApiObject(
            self,
            "training-metrics-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="PodMonitor",
            metadata=cdk8s.ApiObjectMetadata(name="training-metrics", namespace=namespace, labels=monitors),
        )
        training.add_json_patch(
            cdk8s.JsonPatch.add(
                "/spec",
                {
                    "namespaceSelector": {"matchNames": [training_namespace]},
                    "selector": {"matchLabels": dict(TRAINING_METRICS_POD_LABEL)},
                    "podMetricsEndpoints": [{"port": METRICS_PORT_NAME, "interval": "30s"}],
                },
            )
        )
        allows = monitoring_allows(
            otlp_pod_labels=selector, webhook_cidrs=webhook_cidrs, prometheus_clients=prometheus_clients
        )
        for allow in allows:
            network_policy(self, f"allow-{allow.name}", namespace=namespace, allow=allow)


def monitoring_allows(
    *,
    otlp_pod_labels: Mapping[str, str],
    webhook_cidrs: Sequence[str],
    prometheus_clients: Sequence[str] = PROMETHEUS_CLIENT_NAMESPACES,
) -> tuple[NetworkAllow, ...]:
    """Return the allows the monitoring namespace needs beyond the tenancy baseline (DNS, scraping, 443).

    ``monitoring`` is not meshed and denies everything by default, so the stack's own traffic needs rules:

    - between its pods, on any port: Grafana queries Prometheus (9090), Prometheus sends alerts to
      Alertmanager (9093) and scrapes the components' web ports, Alertmanager replicas gossip (9094, UDP and
      TCP). The namespace holds only the monitoring stack, so these are peers of one system.
    - Prometheus's query API for the namespaces that read it (KEDA's Prometheus scaler, Linkerd viz).
    - The Prometheus Operator's admission webhook (10250) for the API server, which calls it from the
      control plane's network interfaces in the cluster's subnets (``webhook_cidrs``).
    - OTLP (4317 gRPC, 4318 HTTP) to the collector from every namespace. Senders in namespaces with a default
      deny also need an egress allow to ``monitoring`` on these ports from their own chart.
    """
    if not webhook_cidrs:
        raise ValueError(
            "webhook_cidrs is empty: give the cluster's subnets, or the API server cannot reach the Prometheus "
            "Operator's admission webhook and every PrometheusRule is refused"
        )
    same_namespace = (Peer(),)
    allows = [
        NetworkAllow(
            name="monitoring-peers-ingress",
            direction="Ingress",
            peers=same_namespace,
            reason="the monitoring stack's components talk to each other: Grafana to Prometheus, Prometheus to "
            "Alertmanager and to their web ports, Alertmanager gossip on 9094 (UDP and TCP)",
        ),
        NetworkAllow(
            name="monitoring-peers-egress",
            direction="Egress",
            peers=same_namespace,
            reason="the monitoring stack's components talk to each other: Grafana to Prometheus, Prometheus to "
            "Alertmanager and to their web ports, Alertmanager gossip on 9094 (UDP and TCP)",
        ),
        NetworkAllow(
            name="operator-webhook",
            direction="Ingress",
            peers=tuple(Peer(cidr=cidr) for cidr in webhook_cidrs),
            ports=(PolicyPort(OPERATOR_WEBHOOK_PORT),),
            pod_labels=dict(OPERATOR_POD_LABELS),
            reason="the API server calls the Prometheus Operator's admission webhook (PrometheusRule "
            "validation) from the control plane's network interfaces in the cluster subnets",
        ),
        NetworkAllow(
            name="otlp",
            direction="Ingress",
            peers=(Peer(all_namespaces=True),),
            ports=(PolicyPort(OTLP_GRPC_PORT), PolicyPort(OTLP_HTTP_PORT)),
            pod_labels=dict(otlp_pod_labels),
            reason="workloads in every namespace send traces and metrics to the OpenTelemetry collector",
        ),
    ]
    if prometheus_clients:
        allows.append(
            NetworkAllow(
                name="prometheus-queries",
                direction="Ingress",
                peers=(Peer(namespaces=tuple(prometheus_clients)),),
                ports=(PolicyPort(PROMETHEUS_PORT),),
                pod_labels=dict(PROMETHEUS_POD_LABELS),
                reason=f"{', '.join(prometheus_clients)} query Prometheus's HTTP API (KEDA's Prometheus "
                "scaler, Linkerd viz)",
            )
        )
    return tuple(allows)
