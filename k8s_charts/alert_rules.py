"""Define the platform's Prometheus alerting rules, the metrics they may use, and a PromQL sanity check.

``EXPORTER_METRICS`` is the table of metric names each exporter on the platform publishes (DCGM exporter of
the GPU Operator, kube-state-metrics, the kubelet and cAdvisor, node-exporter, vLLM, the Linkerd proxy) plus
the metrics the platform's own jobs publish (``ml_platform_*``). Every rule and every dashboard panel may
reference only names from it (``promql_problems`` checks at synth time), so a renamed exporter metric shows
up as a failed synth instead of an alert that silently never fires.

EFS has no capacity to run out of (it is elastic), so there is no EFS rule here: the ObservabilityStack
alarms on the file system's CloudWatch metrics (PercentIOLimit and the stored bytes) instead, and the PVC
rule below ignores claims of the ``efs`` storage class (their kubelet stats report an 8 EiB capacity).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

import cdk8s
import constructs

from config.observability import AlertThresholds
from k8s_charts.storage import EFS

Severity = Literal["critical", "warning", "info"]

# --- metrics ------------------------------------------------------------------------------------------------

# Gauges the training jobs publish on their container port named "metrics" (scraped by the training-metrics
# PodMonitor of k8s_charts/monitoring.py, for pods labelled ml-platform.io/training-metrics: "true").
# Labels: namespace and pod from the scrape, plus training_job (the TrainJob's name) set by the job itself.
TRAINING_LOSS_METRIC: Final = "ml_platform_training_loss"
TRAINING_ACCURACY_METRIC: Final = "ml_platform_training_accuracy"
# Completed share of the planned steps, 0 to 1.
TRAINING_PROGRESS_METRIC: Final = "ml_platform_training_progress_ratio"
# The hook for model-drift detection: a drift job (batch, on a schedule) computes a drift score per served
# model (population stability index or similar; 0 means no drift) and publishes it as this gauge with the
# labels model_name and model_version, through the OpenTelemetry collector's Prometheus exporter or its
# own "metrics" port. ModelDriftDetected fires when it exceeds observability.thresholds.model_drift_score.
MODEL_DRIFT_METRIC: Final = "ml_platform_model_drift_score"
# vLLM (OpenAI-compatible server, /metrics).
VLLM_E2E_LATENCY_BUCKET: Final = "vllm:e2e_request_latency_seconds_bucket"
VLLM_REQUEST_SUCCESS: Final = "vllm:request_success_total"
# DCGM exporter (GPU Operator). DCGM_FI_DEV_GPU_UTIL is not reported for MIG devices: MIG pools show the
# profiling metric DCGM_FI_PROF_GR_ENGINE_ACTIVE instead.
DCGM_GPU_UTIL: Final = "DCGM_FI_DEV_GPU_UTIL"

EXPORTER_METRICS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "dcgm-exporter": frozenset(
            {
                DCGM_GPU_UTIL,
                "DCGM_FI_DEV_FB_USED",
                "DCGM_FI_DEV_FB_FREE",
                "DCGM_FI_DEV_GPU_TEMP",
                "DCGM_FI_DEV_POWER_USAGE",
                "DCGM_FI_DEV_MEM_COPY_UTIL",
                "DCGM_FI_DEV_XID_ERRORS",
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            }
        ),
        "kube-state-metrics": frozenset(
            {
                "kube_job_status_failed",
                "kube_job_status_succeeded",
                "kube_node_status_condition",
                "kube_node_labels",
                "kube_node_info",
                "kube_node_status_allocatable",
                "kube_pod_container_resource_requests",
                "kube_pod_status_phase",
                "kube_persistentvolumeclaim_info",
            }
        ),
        "kubelet": frozenset(
            {
                "kubelet_volume_stats_available_bytes",
                "kubelet_volume_stats_capacity_bytes",
                # cAdvisor, served by the kubelet
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes",
            }
        ),
        "node-exporter": frozenset(
            {"node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"}
        ),
        "vllm": frozenset(
            {
                VLLM_E2E_LATENCY_BUCKET,
                "vllm:e2e_request_latency_seconds_count",
                "vllm:e2e_request_latency_seconds_sum",
                "vllm:time_to_first_token_seconds_bucket",
                VLLM_REQUEST_SUCCESS,
                "vllm:num_requests_running",
                "vllm:num_requests_waiting",
            }
        ),
        "linkerd-proxy": frozenset({"request_total", "response_total", "response_latency_ms_bucket"}),
        "ml-platform": frozenset(
            {TRAINING_LOSS_METRIC, TRAINING_ACCURACY_METRIC, TRAINING_PROGRESS_METRIC, MODEL_DRIFT_METRIC}
        ),
    }
)
KNOWN_METRICS: Final = frozenset().union(*EXPORTER_METRICS.values())

# --- PromQL sanity check ------------------------------------------------------------------------------------

PROMQL_FUNCTIONS: Final = frozenset(
    {
        # aggregation operators
        "sum", "avg", "min", "max", "count", "count_values", "group", "stddev", "stdvar", "topk", "bottomk",
        "quantile", "limitk", "limit_ratio",
        # functions
        "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
        "day_of_week", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters",
        "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute",
        "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt",
        "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time",
        "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time",
        "last_over_time", "present_over_time",
    }
)  # fmt: skip
# Keywords followed by a parenthesized label list (not an expression).
_LABEL_LIST_KEYWORDS: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_OPERATOR_KEYWORDS: Final = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_GROUPING_FIRST = re.compile(r"(by|without)\s*\(", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?)[a-zA-Z]*")
_CLOSING = {")": "(", "]": "[", "}": "{"}


def _skip_string(expr: str, start: int) -> int | None:
    """Return the index after the string literal starting at ``start``, or None when it is unterminated."""
    quote = expr[start]
    i = start + 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    return None


def _skip_group(expr: str, start: int, closing: str) -> int | None:
    """Return the index after the ``closing`` bracket that ends the group opened at ``start`` (strings skipped)."""
    i = start + 1
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            end = _skip_string(expr, i)
            if end is None:
                return None
            i = end
            continue
        if char == closing:
            return i + 1
        if char in "([{" or char in ")]}":
            return None
        i += 1
    return None


def promql_metric_names(expr: str) -> tuple[set[str], list[str]]:
    """Return the metric names an expression selects, and the problems found while reading it.

    A deliberately small reader, not a PromQL parser: it checks that parentheses, brackets and braces balance,
    that strings end, that every function call names a PromQL function, and collects every bare identifier
    that is not a keyword, a label list or a function as a metric name.
    """
    problems: list[str] = []
    names: set[str] = set()
    stack: list[str] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char in "\"'`":
            end = _skip_string(expr, i)
            if end is None:
                problems.append(f"unterminated string at {i}")
                break
            i = end
        elif char in "{[":
            # Label matchers and range selectors hold label names and durations, never metric names.
            end = _skip_group(expr, i, "}" if char == "{" else "]")
            if end is None:
                problems.append(f"unbalanced {char!r} at {i}")
                break
            i = end
        elif char == "(":
            stack.append("(")
            i += 1
        elif char in _CLOSING:
            if not stack or stack[-1] != _CLOSING[char]:
                problems.append(f"unbalanced {char!r} at {i}")
                break
            stack.pop()
            i += 1
        elif char.isdigit() or (char == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            match = _NUMBER.match(expr, i)
            i = match.end() if match else i + 1
        elif _IDENTIFIER.match(expr, i):
            match = _IDENTIFIER.match(expr, i)
            assert match is not None
            word = match.group(0)
            i = match.end()
            rest = expr[i:].lstrip()
            # "sum by (x) (...)": an aggregation whose grouping comes before its argument.
            follows_paren = rest.startswith("(") or bool(_GROUPING_FIRST.match(rest))
            lowered = word.lower()
            if lowered in _LABEL_LIST_KEYWORDS:
                if follows_paren:
                    start = len(expr) - len(rest)
                    end = _skip_group(expr, start, ")")
                    if end is None:
                        problems.append(f"unbalanced label list after {word!r}")
                        break
                    i = end
            elif lowered in _OPERATOR_KEYWORDS:
                continue
            elif follows_paren:
                if word not in PROMQL_FUNCTIONS:
                    problems.append(f"unknown function {word!r}")
            else:
                names.add(word)
        else:
            i += 1
    if stack and not problems:
        problems.append(f"{len(stack)} unclosed '('")
    return names, problems


def promql_problems(expr: str, known_metrics: Iterable[str] = KNOWN_METRICS) -> list[str]:
    """Return what is wrong with an expression: syntax slips and metrics no exporter publishes."""
    names, problems = promql_metric_names(expr)
    if not names and not problems:
        problems.append("selects no metric")
    known = frozenset(known_metrics)
    problems += [f"unknown metric {name!r} (not in EXPORTER_METRICS)" for name in sorted(names - known)]
    return problems


# --- rules --------------------------------------------------------------------------------------------------

RULES_NAME: Final = "ml-platform-alerts"
RUNBOOK_DOC: Final = "docs/operations.md"
_ALERT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]+$")
_DURATION = re.compile(r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$")


@dataclass(frozen=True)
class AlertRule:
    """Define one alerting rule.

    Args:
        alert: the alert's name, PascalCase.
        expr: the PromQL condition.
        duration: how long the condition must hold before the alert fires (``for``).
        severity: critical (someone acts now), warning (act today) or info.
        summary: one line naming what is wrong; may use {{ $labels.x }}.
        description: what it means and what to look at first; may use {{ $value }}.
    """

    alert: str
    expr: str
    duration: str
    severity: Severity
    summary: str
    description: str

    def render(self, runbook_doc: str) -> dict[str, Any]:
        """Return the rule as a PrometheusRule entry; fail on a bad name, duration or expression."""
        if not _ALERT_NAME.match(self.alert):
            raise ValueError(f"alert name {self.alert!r} must be PascalCase letters and digits")
        if not _DURATION.match(self.duration):
            raise ValueError(f"alert {self.alert}: duration {self.duration!r} is not a duration such as 15m")
        problems = promql_problems(self.expr)
        if problems:
            raise ValueError(f"alert {self.alert}: {'; '.join(problems)} in {self.expr!r}")
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": runbook_url(self.alert, runbook_doc),
            },
        }


def runbook_url(alert: str, runbook_doc: str = RUNBOOK_DOC) -> str:
    """Return the runbook link of an alert: ``<doc>#<alert name in lowercase>`` (a Markdown heading anchor)."""
    return f"{runbook_doc}#{alert.lower()}"


def _number(value: float) -> str:
    return f"{value:g}"


def alert_groups(thresholds: AlertThresholds) -> dict[str, list[AlertRule]]:
    """Return the platform's rules by group, with the stage's thresholds filled in."""
    t = thresholds
    fb_used_ratio = "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
    return {
        "ml-platform.gpu": [
            AlertRule(
                alert="GpuUtilizationLow",
                expr=f"avg by (Hostname, gpu, modelName) ({DCGM_GPU_UTIL}) < {_number(t.gpu_utilization_low_percent)}",
                duration="30m",
                severity="warning",
                summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is nearly idle",
                description="GPU utilization has stayed below "
                f"{_number(t.gpu_utilization_low_percent)}% for 30 minutes ({{{{ $value }}}}%): a paid GPU is doing "
                "little. Check for stuck jobs or notebooks holding a GPU, and whether the pool can shrink.",
            ),
            AlertRule(
                alert="GpuSaturated",
                expr=f"avg by (Hostname, gpu, modelName) ({DCGM_GPU_UTIL}) > {_number(t.gpu_utilization_high_percent)}",
                duration="30m",
                severity="warning",
                summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is saturated",
                description="GPU utilization has stayed above "
                f"{_number(t.gpu_utilization_high_percent)}% for 30 minutes ({{{{ $value }}}}%): time-sliced "
                "tenants on it slow each other down. Check the pool's sharing replicas and queueing.",
            ),
            AlertRule(
                alert="GpuMemoryPressure",
                expr=f"{fb_used_ratio} > {_number(t.gpu_memory_used_ratio)}",
                duration="15m",
                severity="warning",
                summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is running out of memory",
                description=f"More than {_number(t.gpu_memory_used_ratio * 100)}% of the GPU's frame buffer has "
                "been in use for 15 minutes; the next allocation may fail with CUDA out of memory.",
            ),
            AlertRule(
                alert="GpuXidErrors",
                expr="max by (Hostname, gpu) (DCGM_FI_DEV_XID_ERRORS) > 0",
                duration="5m",
                severity="critical",
                summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reports XID error {{ $value }}",
                description="The driver reported an XID error: the GPU may have fallen off the bus or hit an "
                "uncorrectable memory error. Cordon the node and check the XID code against NVIDIA's table.",
            ),
        ],
        "ml-platform.training": [
            AlertRule(
                alert="TrainingJobFailed",
                expr='kube_job_status_failed{namespace="training"} > 0',
                duration="1m",
                severity="warning",
                summary="Training job {{ $labels.job_name }} has failed pods",
                description="A Job in the training namespace has {{ $value }} failed pod(s). Read the pod logs "
                "(CloudWatch Logs, /<project>/<stage>/containers) before the Job is cleaned up.",
            ),
        ],
        "ml-platform.nodes": [
            AlertRule(
                alert="NodeNotReady",
                expr='kube_node_status_condition{condition="Ready", status="true"} == 0',
                duration="10m",
                severity="critical",
                summary="Node {{ $labels.node }} has not been Ready for 10 minutes",
                description="The kubelet stopped reporting Ready. Pods on it are being evicted; GPU pools lose "
                "capacity until the node recovers or Karpenter/the nodegroup replaces it.",
            ),
        ],
        "ml-platform.storage": [
            AlertRule(
                alert="PersistentVolumeFillingUp",
                expr="(kubelet_volume_stats_available_bytes / kubelet_volume_stats_capacity_bytes) "
                f"< {_number(t.pvc_free_ratio)} and on (namespace, persistentvolumeclaim) "
                f'kube_persistentvolumeclaim_info{{storageclass!="{EFS}"}}',
                duration="15m",
                severity="warning",
                summary="Volume {{ $labels.namespace }}/{{ $labels.persistentvolumeclaim }} is almost full",
                description=f"Less than {_number(t.pvc_free_ratio * 100)}% of the claim is free. Grow the claim "
                "(gp3 volumes expand online) or clean up. EFS claims are excluded: EFS is elastic and alarmed "
                "in CloudWatch.",
            ),
        ],
        "ml-platform.inference": [
            AlertRule(
                alert="InferenceErrorRateHigh",
                expr='sum by (namespace, deployment) (rate(response_total{direction="inbound", '
                'namespace="inference", classification="failure"}[5m])) / sum by (namespace, deployment) '
                '(rate(response_total{direction="inbound", namespace="inference"}[5m])) '
                f"> {_number(t.inference_error_ratio)}",
                duration="10m",
                severity="critical",
                summary="{{ $labels.deployment }} fails {{ $value | humanizePercentage }} of its requests",
                description=f"More than {_number(t.inference_error_ratio * 100)}% of the responses of a model "
                "server failed (Linkerd classifies 5xx and gRPC errors as failures) for 10 minutes.",
            ),
            AlertRule(
                alert="InferenceLatencyHigh",
                expr="histogram_quantile(0.99, sum by (le, namespace, model_name) "
                f"(rate({VLLM_E2E_LATENCY_BUCKET}[5m]))) > {_number(t.inference_p99_latency_seconds)}",
                duration="10m",
                severity="warning",
                summary="p99 latency of {{ $labels.model_name }} is {{ $value | humanizeDuration }}",
                description="The 99th percentile end-to-end request latency of a vLLM model has been above "
                f"{_number(t.inference_p99_latency_seconds)}s for 10 minutes. Check the queue "
                "(vllm:num_requests_waiting) and whether the server needs more replicas.",
            ),
        ],
        "ml-platform.models": [
            AlertRule(
                alert="ModelDriftDetected",
                expr=f"max by (namespace, model_name, model_version) ({MODEL_DRIFT_METRIC}) "
                f"> {_number(t.model_drift_score)}",
                duration="5m",
                severity="warning",
                summary="Model {{ $labels.model_name }} {{ $labels.model_version }} drifts (score {{ $value }})",
                description=f"The drift job's score exceeds {_number(t.model_drift_score)}: live inputs no longer "
                "look like the training data. Review the drift report and consider retraining.",
            ),
        ],
    }


def alert_names(thresholds: AlertThresholds | None = None) -> list[str]:
    """Return every alert name, in group order (the runbook needs one section per name)."""
    groups = alert_groups(thresholds or AlertThresholds())
    return [rule.alert for rules in groups.values() for rule in rules]


class AlertRulesChart(cdk8s.Chart):
    """Define the platform's PrometheusRule (monitoring.coreos.com/v1) in the monitoring namespace.

    Args:
        namespace: where the rule object lives (Prometheus selects rules in every namespace).
        thresholds: the stage's thresholds.
        rule_labels: labels on the PrometheusRule, such as the ``release`` label a Prometheus selects rules
            by. Defaults to none (the platform's Prometheus selects every rule).
        runbook_doc: the runbook document the runbook_url annotations point into. Defaults to
            ``docs/operations.md``.
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        namespace: str,
        thresholds: AlertThresholds,
        rule_labels: Mapping[str, str] | None = None,
        runbook_doc: str = RUNBOOK_DOC,
    ) -> None:
        super().__init__(scope, construct_id)
        groups = alert_groups(thresholds)
        names = [rule.alert for rules in groups.values() for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"alert names must be unique: {', '.join(duplicates)} appear twice")
        rule = cdk8s.ApiObject(
            self,
            "rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=cdk8s.ApiObjectMetadata(name=RULES_NAME, namespace=namespace, labels=dict(rule_labels or {})),
        )
        rule.add_json_patch(
            cdk8s.JsonPatch.add(
                "/spec",
                {
                    "groups": [
                        {"name": name, "rules": [r.render(runbook_doc) for r in rules]}
                        for name, rules in groups.items()
                    ]
                },
            )
        )
