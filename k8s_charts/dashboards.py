"""Define the platform's Grafana dashboards (training, inference, infrastructure and cost) as ConfigMaps.

Grafana's dashboard sidecar (kube-prometheus-stack) loads every ConfigMap labelled
``grafana_dashboard: "1"`` in any namespace and files it in the folder named by the ``grafana_folder``
annotation. Each dashboard is built here as plain data (``training_dashboard()`` and friends) so tests can
parse and inspect the JSON without Grafana; every query selects only metrics from
``k8s_charts.alert_rules.EXPORTER_METRICS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import cdk8s
import constructs

from k8s_charts.alert_rules import (
    DCGM_GPU_UTIL,
    TRAINING_ACCURACY_METRIC,
    TRAINING_LOSS_METRIC,
    TRAINING_PROGRESS_METRIC,
    VLLM_E2E_LATENCY_BUCKET,
    VLLM_REQUEST_SUCCESS,
    promql_problems,
)

# The sidecar's selector (grafana.sidecar.dashboards.label/labelValue in platform_constructs/monitoring.py).
DASHBOARD_LABEL: Final = "grafana_dashboard"
DASHBOARD_LABEL_VALUE: Final = "1"
# grafana.sidecar.dashboards.folderAnnotation: the folder a dashboard's ConfigMap asks for.
FOLDER_ANNOTATION: Final = "grafana_folder"
FOLDER: Final = "ML platform"
# The uid kube-prometheus-stack gives Grafana's default Prometheus data source (grafana.sidecar.datasources.uid).
DATASOURCE_UID: Final = "prometheus"
# Grafana's dashboard JSON model version these dashboards are written for (Grafana 12 migrates older ones).
SCHEMA_VERSION: Final = 41
# The node labels kube-state-metrics exports on kube_node_labels (kube-state-metrics.metricLabelsAllowlist):
# ml-platform/pool and node.kubernetes.io/instance-type, sanitized the way kube-state-metrics does.
POOL_LABEL_METRIC: Final = "label_ml_platform_pool"
INSTANCE_TYPE_LABEL_METRIC: Final = "label_node_kubernetes_io_instance_type"
# With the GPU Operator's default ServiceMonitor (honorLabels: false) the DCGM exporter's pod-mapping labels
# clash with the scrape's own namespace/pod labels and arrive renamed to exported_*.
DCGM_POD_NAMESPACE_LABEL: Final = "exported_namespace"
DCGM_POD_LABEL: Final = "exported_pod"
HOURS_PER_MONTH: Final = 730

_DATASOURCE: Final = {"type": "prometheus", "uid": DATASOURCE_UID}
_PANEL_WIDTH = 12
_PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Target:
    """Define one PromQL query of a panel, with its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """Define one panel: its title, kind, unit and queries.

    Args:
        title: the panel's title.
        targets: its queries; at least one.
        kind: a Grafana panel type (timeseries, stat, bargauge). Defaults to timeseries.
        unit: a Grafana unit id (percent, percentunit, s, reqps, currencyUSD, short). Defaults to short.
        description: shown in the panel's info tooltip. Defaults to none.
        width: grid columns out of 24. Defaults to 12.
    """

    title: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = _PANEL_WIDTH


@dataclass(frozen=True)
class Variable:
    """Define a dashboard variable filled from one label's values of a metric."""

    name: str
    label: str
    metric: str
    label_name: str


@dataclass(frozen=True)
class Dashboard:
    """Define one dashboard: uid, title, variables and panels (laid out left to right, top to bottom)."""

    uid: str
    title: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = field(default=("ml-platform",))

    def model(self) -> dict[str, Any]:
        """Return the Grafana dashboard JSON model; fail on a query that selects unknown metrics."""
        panels: list[dict[str, Any]] = []
        x = y = row_height = 0
        for panel_id, panel in enumerate(self.panels, start=1):
            if not panel.targets:
                raise ValueError(f"dashboard {self.uid}: panel {panel.title!r} has no query")
            if x + panel.width > 24:
                x, y = 0, y + row_height
            for target in panel.targets:
                problems = promql_problems(target.expr)
                if problems:
                    raise ValueError(f"dashboard {self.uid}, panel {panel.title!r}: {'; '.join(problems)}")
            panels.append(
                {
                    "id": panel_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": dict(_DATASOURCE),
                    "gridPos": {"x": x, "y": y, "w": panel.width, "h": _PANEL_HEIGHT},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                    "targets": [
                        {
                            "refId": chr(ord("A") + index),
                            "datasource": dict(_DATASOURCE),
                            "expr": target.expr,
                            "legendFormat": target.legend,
                            "range": True,
                        }
                        for index, target in enumerate(panel.targets)
                    ],
                }
            )
            x += panel.width
            row_height = max(row_height, _PANEL_HEIGHT)
        return {
            "uid": self.uid,
            "title": self.title,
            "tags": list(self.tags),
            "timezone": "utc",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": False,
            "refresh": "1m",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": [_variable(v) for v in self.variables]},
            "annotations": {"list": []},
            "panels": panels,
        }


def _variable(variable: Variable) -> dict[str, Any]:
    query = f"label_values({variable.metric}, {variable.label_name})"
    return {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": dict(_DATASOURCE),
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {},
        "sort": 1,
    }


def training_dashboard() -> Dashboard:
    """Return the training dashboard: loss, accuracy, progress and the GPU use of training pods."""
    job = 'training_job=~"$training_job"'
    gpu = f'{DCGM_POD_NAMESPACE_LABEL}="training"'
    return Dashboard(
        uid="ml-platform-training",
        title="ML platform / Training",
        variables=(Variable("training_job", "Training job", TRAINING_LOSS_METRIC, "training_job"),),
        panels=(
            Panel(
                "Loss",
                (Target(f"avg by (training_job) ({TRAINING_LOSS_METRIC}{{{job}}})", "{{training_job}}"),),
                description=f"{TRAINING_LOSS_METRIC}, averaged over the job's workers.",
            ),
            Panel(
                "Accuracy",
                (Target(f"avg by (training_job) ({TRAINING_ACCURACY_METRIC}{{{job}}})", "{{training_job}}"),),
                unit="percentunit",
                description=f"{TRAINING_ACCURACY_METRIC} (0-1), averaged over the job's workers.",
            ),
            Panel(
                "Progress",
                (Target(f"min by (training_job) ({TRAINING_PROGRESS_METRIC}{{{job}}})", "{{training_job}}"),),
                kind="bargauge",
                unit="percentunit",
                description="Completed share of the planned steps; the slowest worker counts.",
            ),
            Panel(
                "GPU utilization of training pods",
                (Target(f"avg by ({DCGM_POD_LABEL}) ({DCGM_GPU_UTIL}{{{gpu}}})", f"{{{{{DCGM_POD_LABEL}}}}}"),),
                unit="percent",
                description="DCGM_FI_DEV_GPU_UTIL of the GPUs assigned to pods in the training namespace.",
            ),
            Panel(
                "Failed training jobs",
                (Target('sum(kube_job_status_failed{namespace="training"})', "failed pods"),),
                kind="stat",
            ),
        ),
    )


def inference_dashboard() -> Dashboard:
    """Return the inference dashboard: latency percentiles, request rate, error rate and queueing."""
    model = 'model_name=~"$model"'
    latency = f"sum by (le, model_name) (rate({VLLM_E2E_LATENCY_BUCKET}{{{model}}}[$__rate_interval]))"
    inbound = 'direction="inbound", namespace="inference"'
    return Dashboard(
        uid="ml-platform-inference",
        title="ML platform / Inference",
        variables=(Variable("model", "Model", VLLM_REQUEST_SUCCESS, "model_name"),),
        panels=(
            Panel(
                "End-to-end latency",
                tuple(
                    Target(f"histogram_quantile({q}, {latency})", f"p{round(q * 100)} {{{{model_name}}}}")
                    for q in (0.5, 0.9, 0.99)
                ),
                unit="s",
                description="vLLM end-to-end request latency percentiles per model.",
            ),
            Panel(
                "Request rate",
                (
                    Target(
                        f"sum by (model_name) (rate({VLLM_REQUEST_SUCCESS}{{{model}}}[$__rate_interval]))",
                        "{{model_name}}",
                    ),
                ),
                unit="reqps",
                description="Finished requests per second (vllm:request_success_total, every finish reason).",
            ),
            Panel(
                "Error rate",
                (
                    Target(
                        "sum by (deployment) (rate(response_total{"
                        f'{inbound}, classification="failure"}}[$__rate_interval])) / sum by (deployment) '
                        f"(rate(response_total{{{inbound}}}[$__rate_interval]))",
                        "{{deployment}}",
                    ),
                ),
                unit="percentunit",
                description="Share of failed responses of each model server, as the Linkerd proxy sees them.",
            ),
            Panel(
                "Requests running and waiting",
                (
                    Target(f"sum by (model_name) (vllm:num_requests_running{{{model}}})", "running {{model_name}}"),
                    Target(f"sum by (model_name) (vllm:num_requests_waiting{{{model}}})", "waiting {{model_name}}"),
                ),
                description="A growing waiting queue means the model needs more replicas.",
            ),
        ),
    )


def cost_per_hour_expr(instance_hourly_usd: Mapping[str, float]) -> str:
    """Return PromQL for the on-demand cost per hour of each pool: its nodes by instance type x the price.

    Args:
        instance_hourly_usd: instance type -> on-demand hourly price (config/catalog.py). One term per type,
            each keeping the instance type label so that ``or`` never drops a pool's second type.
    """
    if not instance_hourly_usd:
        raise ValueError("instance_hourly_usd is empty: give the price of every instance type the pools use")
    terms = []
    for instance_type, price in sorted(instance_hourly_usd.items()):
        if price <= 0:
            raise ValueError(f"instance type {instance_type}: hourly price {price} must be positive")
        terms.append(
            f"(count by ({POOL_LABEL_METRIC}, {INSTANCE_TYPE_LABEL_METRIC}) "
            f'(kube_node_labels{{{INSTANCE_TYPE_LABEL_METRIC}="{instance_type}"}}) * {price:g})'
        )
    return f"sum by ({POOL_LABEL_METRIC}) ({' or '.join(terms)})"


def infrastructure_dashboard(instance_hourly_usd: Mapping[str, float]) -> Dashboard:
    """Return the infrastructure dashboard: cluster CPU and memory, nodes, GPUs and cost by pool.

    Args:
        instance_hourly_usd: instance type -> on-demand hourly price of every type the stage's pools use.
    """
    pool = POOL_LABEL_METRIC
    by_pool = f"on (node) group_left ({pool}) kube_node_labels"
    active_pods = 'on (namespace, pod) group_left () (kube_pod_status_phase{phase=~"Pending|Running"} == 1)'
    gpu_requests = (
        f'sum by ({pool}) ((kube_pod_container_resource_requests{{resource="nvidia_com_gpu"}} * {active_pods})'
        f" * {by_pool})"
    )
    gpu_util = f'label_replace({DCGM_GPU_UTIL}, "node", "$1", "Hostname", "(.*)")'
    cost = cost_per_hour_expr(instance_hourly_usd)
    return Dashboard(
        uid="ml-platform-infrastructure",
        title="ML platform / Infrastructure and cost",
        panels=(
            Panel(
                "Cluster CPU utilization",
                (Target('1 - avg(rate(node_cpu_seconds_total{mode="idle"}[$__rate_interval]))', "CPU"),),
                unit="percentunit",
            ),
            Panel(
                "Cluster memory utilization",
                (Target("1 - sum(node_memory_MemAvailable_bytes) / sum(node_memory_MemTotal_bytes)", "memory"),),
                unit="percentunit",
            ),
            Panel("Nodes by pool", (Target(f"count by ({pool}) (kube_node_labels)", f"{{{{{pool}}}}}"),)),
            Panel(
                "GPUs requested by pool",
                (Target(gpu_requests, f"{{{{{pool}}}}}"),),
                description="nvidia.com/gpu requested by pending and running pods, by the pool of their node "
                "(time-sliced pools count replicas). MIG devices are requested as nvidia.com/mig-* resources.",
            ),
            Panel(
                "GPU utilization by pool",
                (Target(f"avg by ({pool}) ({gpu_util} * {by_pool})", f"{{{{{pool}}}}}"),),
                unit="percent",
                description="DCGM_FI_DEV_GPU_UTIL joined to the node's pool (MIG GPUs do not report it).",
            ),
            Panel(
                "Cost per hour by pool (on-demand)",
                (Target(cost, f"{{{{{pool}}}}}"),),
                unit="currencyUSD",
                description="Nodes by instance type x the on-demand price of config/catalog.py; spot nodes "
                "cost less, so this is an upper bound.",
            ),
            Panel(
                "Cost per hour (on-demand)",
                (Target(f"sum({cost})", "total"),),
                kind="stat",
                unit="currencyUSD",
                width=6,
            ),
            Panel(
                "Cost per month at this rate (on-demand)",
                (Target(f"sum({cost}) * {HOURS_PER_MONTH}", "total"),),
                kind="stat",
                unit="currencyUSD",
                width=6,
            ),
        ),
    )


def dashboards(instance_hourly_usd: Mapping[str, float]) -> dict[str, Dashboard]:
    """Return every platform dashboard by ConfigMap key (training, inference, infrastructure)."""
    return {
        "training": training_dashboard(),
        "inference": inference_dashboard(),
        "infrastructure": infrastructure_dashboard(instance_hourly_usd),
    }


class DashboardsChart(cdk8s.Chart):
    """Define one ConfigMap per dashboard for Grafana's sidecar to load.

    Args:
        namespace: where the ConfigMaps live (the sidecar searches every namespace).
        instance_hourly_usd: instance type -> on-demand hourly price, for the cost panels.
        folder: the Grafana folder the dashboards go into. Defaults to "ML platform".
        extra_dashboards: further dashboards by key. Defaults to none.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        namespace: str,
        instance_hourly_usd: Mapping[str, float],
        folder: str = FOLDER,
        extra_dashboards: Mapping[str, Dashboard] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        boards = {**dashboards(instance_hourly_usd), **dict(extra_dashboards or {})}
        _check_unique_uids(boards.values())
        for key, board in boards.items():
            cdk8s.ApiObject(
                self,
                f"{key}-dashboard",
                api_version="v1",
                kind="ConfigMap",
                metadata=cdk8s.ApiObjectMetadata(
                    name=f"dashboard-{key}",
                    namespace=namespace,
                    labels={DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE},
                    annotations={FOLDER_ANNOTATION: folder},
                ),
            ).add_json_patch(
                cdk8s.JsonPatch.add("/data", {f"{key}.json": json.dumps(board.model(), indent=1, sort_keys=True)})
            )


def _check_unique_uids(boards: Iterable[Dashboard]) -> None:
    uids = [b.uid for b in boards]
    duplicates = sorted({uid for uid in uids if uids.count(uid) > 1})
    if duplicates:
        raise ValueError(f"dashboard uids must be unique: {', '.join(duplicates)} appear twice")
