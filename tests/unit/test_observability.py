"""Observability: config, alert rules and their PromQL check, dashboards, the monitoring charts and add-on
values, and the Observability and Monitoring stacks of every stage (read from the session's synthesized app).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml
from pydantic import ValidationError

from config.catalog import INSTANCE_TYPES
from config.loader import load_stage
from config.model import StageConfig
from config.observability import AlertThresholds, CloudTrailConfig, ObservabilityConfig, PrometheusConfig
from k8s_charts.alert_rules import (
    EXPORTER_METRICS,
    KNOWN_METRICS,
    MODEL_DRIFT_METRIC,
    RULES_NAME,
    AlertRule,
    AlertRulesChart,
    alert_groups,
    alert_names,
    promql_metric_names,
    promql_problems,
    runbook_url,
)
from k8s_charts.dashboards import (
    DASHBOARD_LABEL,
    DASHBOARD_LABEL_VALUE,
    FOLDER_ANNOTATION,
    DashboardsChart,
    cost_per_hour_expr,
    dashboards,
)
from k8s_charts.monitoring import (
    GRAFANA_ADMIN_SECRET,
    LOGGING_NAMESPACE,
    OPERATOR_POD_LABELS,
    OTEL_COLLECTOR,
    OTEL_COLLECTOR_IMAGE,
    MonitoringPrerequisitesChart,
    TelemetryChart,
    monitoring_allows,
    otel_collector_config,
)
from k8s_charts.secrets import CLUSTER_SECRET_STORE
from k8s_charts.storage import GP3
from k8s_charts.tenancy import NODE_EXPORTER_NAMESPACE
from platform_constructs import logging as fluent_bit
from platform_constructs import monitoring, opentelemetry
from platform_constructs.logging import container_log_group_name, daemonset_tolerations, fluent_bit_values
from platform_constructs.monitoring import PROMETHEUS_URL, RELEASE, alertmanager_config, kube_prometheus_stack_values
from platform_constructs.opentelemetry import opentelemetry_operator_values
from stacks.observability_stack import cache_node_ids
from tests.support.assembly import CloudAssembly, StackArtifact
from tests.support.deployed import deployed_objects, helm_releases
from tests.support.k8s_reference import require_reference_dir, validate_helm_values, validate_object

REPO = Path(__file__).resolve().parents[2]
STAGES = {name: load_stage(REPO / "config" / f"{name}.yaml") for name in ("dev", "staging", "prod")}
SYSTEM = {"ml-platform/pool": "system"}
NODE_CIDRS = ("10.0.64.0/18", "10.0.128.0/18")
TOPIC_ARN = "arn:aws:sns:us-east-1:111111111111:ml-platform-dev-alarms"
PRICES = {
    "p4d.24xlarge": INSTANCE_TYPES["p4d.24xlarge"].hourly_usd,
    "m5.2xlarge": INSTANCE_TYPES["m5.2xlarge"].hourly_usd,
}
Manifests = list[dict[str, Any]]

# Logical IDs of the stateful resources: a change means CloudFormation replaces (or orphans) the resource.
OBSERVABILITY_STATEFUL_IDS = {
    "AlarmTopicKey31769A28": "AWS::KMS::Key",
    "TrailKey37E679A9": "AWS::KMS::Key",
    "TrailBucketFC732D74": "AWS::S3::Bucket",
    "TrailAccessLogs2343EF80": "AWS::S3::Bucket",
    "TrailLogs3B05809D": "AWS::Logs::LogGroup",
}
MONITORING_STATEFUL_IDS = {
    "FluentBitLogGroupE1D00D63": "AWS::Logs::LogGroup",
    "GrafanaAdmin809E6EA7": "AWS::SecretsManager::Secret",
}


def of_kind(manifests: Manifests, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def tolerates(tolerations: list[dict[str, Any]], key: str, value: str, effect: str) -> bool:
    for tol in tolerations:
        if tol.get("effect") not in (None, "", effect):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", key):
            return True
        if tol.get("key") == key and tol.get("operator", "Equal") == "Equal" and tol.get("value", "") == value:
            return True
    return False


# --- config ------------------------------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    config = ObservabilityConfig()
    assert config.prometheus.retention == "15d"
    assert config.cloudtrail.enabled
    assert config.alarm_emails == ()


def test_stage_files_set_their_observability_sections() -> None:
    assert STAGES["dev"].observability.prometheus.retention == "7d"
    assert STAGES["prod"].observability.prometheus.replicas == 2
    assert STAGES["prod"].observability.alertmanager.replicas == 2
    assert STAGES["prod"].observability.container_log_retention_days == 90


def test_fails_when_gpu_low_threshold_is_not_below_high() -> None:
    with pytest.raises(ValidationError, match=r"gpu_utilization_low_percent .* must be below"):
        AlertThresholds(gpu_utilization_low_percent=95, gpu_utilization_high_percent=90)


def test_fails_when_prometheus_retention_is_not_a_duration() -> None:
    with pytest.raises(ValidationError, match="is not a duration such as 15d"):
        PrometheusConfig(retention="two weeks")


def test_fails_when_an_alarm_email_is_not_an_address() -> None:
    with pytest.raises(ValidationError, match="is not an email address"):
        ObservabilityConfig(alarm_emails=("ops.example.com",))


def test_fails_when_an_alarm_email_is_listed_twice() -> None:
    with pytest.raises(ValidationError, match="lists an address twice"):
        ObservabilityConfig(alarm_emails=("ops@example.com", "ops@example.com"))


def test_fails_when_container_log_retention_is_not_a_cloudwatch_period() -> None:
    with pytest.raises(ValidationError, match="is not a CloudWatch Logs retention period"):
        ObservabilityConfig(container_log_retention_days=10)


def test_fails_when_trail_logs_expire_inside_the_glacier_minimum() -> None:
    with pytest.raises(ValidationError, match="Glacier minimum storage duration"):
        CloudTrailConfig(glacier_after_days=90, expire_after_days=120)


def test_fails_when_a_notify_severity_is_unknown() -> None:
    with pytest.raises(ValidationError, match="unknown severity 'page'"):
        ObservabilityConfig.model_validate({"alertmanager": {"notify_severities": ["page"]}})


# --- PromQL check ------------------------------------------------------------------------------------------


def test_promql_reader_collects_metrics_not_labels_functions_or_keywords() -> None:
    names, problems = promql_metric_names(
        'sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{model_name=~"a(b)"}[5m])) '
        "/ on (node) group_left (pool) kube_node_labels offset 5m > bool 0.5"
    )
    assert problems == []
    assert names == {"vllm:e2e_request_latency_seconds_bucket", "kube_node_labels"}


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(kube_node_labels[5m])", "unclosed"),
        ("kube_node_labels)", "unbalanced ')'"),
        ('kube_node_labels{node="a"', "unbalanced '{'"),
        ("rate(kube_node_labels[5m)", "unbalanced '['"),
        ('kube_node_labels{node="a}', "unbalanced '{'"),
        ('label_replace(kube_node_labels, "dst)', "unterminated string"),
        ("ratez(kube_node_labels[5m])", "unknown function 'ratez'"),
        ("gpu_util_percent > 5", "unknown metric 'gpu_util_percent'"),
        ("1 + 1", "selects no metric"),
    ],
)
def test_promql_check_reports(expr: str, problem: str) -> None:
    assert any(problem in p for p in promql_problems(expr)), promql_problems(expr)


def test_every_rule_parses_and_uses_only_metrics_from_the_exporter_table() -> None:
    for rules in alert_groups(AlertThresholds()).values():
        for rule in rules:
            names, problems = promql_metric_names(rule.expr)
            assert problems == [], f"{rule.alert}: {problems}"
            assert names, f"{rule.alert} selects no metric"
            assert names <= KNOWN_METRICS, f"{rule.alert}: {names - KNOWN_METRICS}"


def test_rules_cover_every_exporter_the_platform_depends_on() -> None:
    used = set().union(*(promql_metric_names(r.expr)[0] for rs in alert_groups(AlertThresholds()).values() for r in rs))
    for exporter in ("dcgm-exporter", "kube-state-metrics", "kubelet", "vllm", "linkerd-proxy", "ml-platform"):
        assert used & EXPORTER_METRICS[exporter], f"no rule uses a metric of {exporter}"


def test_rule_render_fails_on_an_unknown_metric() -> None:
    rule = AlertRule("Broken", "made_up_metric > 1", "5m", "warning", "s", "d")
    with pytest.raises(ValueError, match="unknown metric 'made_up_metric'"):
        rule.render("docs/operations.md")


def test_rule_render_fails_on_a_bad_duration() -> None:
    rule = AlertRule("Broken", "kube_node_labels > 1", "5 minutes", "warning", "s", "d")
    with pytest.raises(ValueError, match="is not a duration"):
        rule.render("docs/operations.md")


def test_thresholds_reach_the_expressions() -> None:
    rules = {r.alert: r for rs in alert_groups(AlertThresholds(gpu_utilization_low_percent=12.5)).values() for r in rs}
    assert rules["GpuUtilizationLow"].expr.endswith("< 12.5")
    assert rules["GpuUtilizationLow"].duration == "30m"
    assert "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)" in rules["GpuMemoryPressure"].expr
    assert MODEL_DRIFT_METRIC in rules["ModelDriftDetected"].expr


# --- alert rules chart -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules_manifests() -> Manifests:
    chart = AlertRulesChart(cdk8s.Testing.app(), "alert-rules", namespace="monitoring", thresholds=AlertThresholds())
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def test_prometheus_rule_is_valid_against_its_crd(rules_manifests: Manifests) -> None:
    require_reference_dir()
    (rule,) = of_kind(rules_manifests, "PrometheusRule", RULES_NAME)
    assert validate_object(rule, "1.35") == []


def test_every_rule_has_severity_summary_description_and_runbook(rules_manifests: Manifests) -> None:
    (rule,) = of_kind(rules_manifests, "PrometheusRule")
    entries = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {e["alert"] for e in entries} == set(alert_names())
    for entry in entries:
        assert entry["labels"]["severity"] in ("critical", "warning", "info")
        assert entry["annotations"]["summary"] and entry["annotations"]["description"]
        assert entry["annotations"]["runbook_url"] == f"docs/operations.md#{entry['alert'].lower()}"


def test_expected_alerts_exist() -> None:
    assert set(alert_names()) >= {
        "GpuUtilizationLow",
        "GpuSaturated",
        "GpuMemoryPressure",
        "TrainingJobFailed",
        "NodeNotReady",
        "PersistentVolumeFillingUp",
        "InferenceErrorRateHigh",
        "InferenceLatencyHigh",
        "ModelDriftDetected",
    }
    assert runbook_url("NodeNotReady") == "docs/operations.md#nodenotready"


def test_pvc_rule_ignores_efs_claims() -> None:
    rules = {r.alert: r for rs in alert_groups(AlertThresholds()).values() for r in rs}
    assert 'storageclass!="efs"' in rules["PersistentVolumeFillingUp"].expr


# --- dashboards --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard_manifests() -> Manifests:
    chart = DashboardsChart(cdk8s.Testing.app(), "dashboards", namespace="monitoring", instance_hourly_usd=PRICES)
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def parsed_dashboards(manifests: Manifests) -> dict[str, dict[str, Any]]:
    boards: dict[str, dict[str, Any]] = {}
    for config_map in of_kind(manifests, "ConfigMap"):
        ((key, text),) = config_map["data"].items()
        boards[key] = json.loads(text)
    return boards


def test_one_labelled_config_map_per_dashboard(dashboard_manifests: Manifests) -> None:
    config_maps = of_kind(dashboard_manifests, "ConfigMap")
    assert {c["metadata"]["name"] for c in config_maps} == {
        "dashboard-training",
        "dashboard-inference",
        "dashboard-infrastructure",
    }
    for config_map in config_maps:
        assert config_map["metadata"]["labels"] == {DASHBOARD_LABEL: DASHBOARD_LABEL_VALUE}
        assert FOLDER_ANNOTATION in config_map["metadata"]["annotations"]
        assert validate_object(config_map, "1.35") == []


def test_dashboards_are_complete_grafana_models(dashboard_manifests: Manifests) -> None:
    boards = parsed_dashboards(dashboard_manifests)
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    for key, board in boards.items():
        assert board["title"] and board["uid"].startswith("ml-platform-"), key
        assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
        assert board["panels"], f"{key} has no panels"
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids)
        for panel in board["panels"]:
            assert panel["title"] and panel["type"] and panel["gridPos"]["w"] <= 24
            assert panel["targets"], f"{key}/{panel['title']} has no query"
            for target in panel["targets"]:
                assert target["expr"], f"{key}/{panel['title']} has a target without expr"
                assert promql_problems(target["expr"]) == [], f"{key}/{panel['title']}: {target['expr']}"


def test_training_dashboard_shows_loss_accuracy_progress_and_gpu(dashboard_manifests: Manifests) -> None:
    board = parsed_dashboards(dashboard_manifests)["training.json"]
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in ("ml_platform_training_loss", "ml_platform_training_accuracy", "ml_platform_training_progress_ratio",
                   "DCGM_FI_DEV_GPU_UTIL"):  # fmt: skip
        assert metric in exprs


def test_inference_dashboard_shows_latency_percentiles_rate_and_errors(dashboard_manifests: Manifests) -> None:
    board = parsed_dashboards(dashboard_manifests)["inference.json"]
    latency = next(p for p in board["panels"] if p["title"] == "End-to-end latency")
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.9",
        "histogram_quantile(0.99",
    ]
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    assert "vllm:request_success_total" in exprs and 'classification="failure"' in exprs


def test_cost_query_multiplies_nodes_by_catalog_prices() -> None:
    expr = cost_per_hour_expr(PRICES)
    for instance_type, price in PRICES.items():
        assert f'label_node_kubernetes_io_instance_type="{instance_type}"}}) * {price:g})' in expr
    assert expr.startswith("sum by (label_ml_platform_pool) (")
    assert promql_problems(expr) == []


def test_fails_when_a_price_is_missing_or_not_positive() -> None:
    with pytest.raises(ValueError, match="instance_hourly_usd is empty"):
        cost_per_hour_expr({})
    with pytest.raises(ValueError, match="must be positive"):
        cost_per_hour_expr({"m5.2xlarge": 0.0})


def test_gpu_allocation_is_joined_to_pools() -> None:
    board = dashboards(PRICES)["infrastructure"].model()
    panel = next(p for p in board["panels"] if p["title"] == "GPUs requested by pool")
    expr = panel["targets"][0]["expr"]
    assert 'resource="nvidia_com_gpu"' in expr and "group_left (label_ml_platform_pool) kube_node_labels" in expr


# --- monitoring charts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prerequisites() -> Manifests:
    chart = MonitoringPrerequisitesChart(
        cdk8s.Testing.app(),
        "monitoring-prerequisites",
        monitoring_namespace="monitoring",
        grafana_admin_secret_key="ml-platform-dev/grafana-admin",
        kubernetes_version="1.35",
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


@pytest.fixture(scope="module")
def telemetry() -> Manifests:
    chart = TelemetryChart(
        cdk8s.Testing.app(),
        "telemetry",
        namespace="monitoring",
        region="us-east-1",
        node_selector=SYSTEM,
        webhook_cidrs=NODE_CIDRS,
    )
    manifests: Manifests = cdk8s.Testing.synth(chart)
    return manifests


def test_prerequisite_and_telemetry_objects_are_valid(prerequisites: Manifests, telemetry: Manifests) -> None:
    require_reference_dir()
    errors = [e for obj in [*prerequisites, *telemetry] for e in validate_object(obj, "1.35")]
    assert errors == []


def test_logging_namespace_is_privileged_but_audited_at_restricted(prerequisites: Manifests) -> None:
    (namespace,) = of_kind(prerequisites, "Namespace", LOGGING_NAMESPACE)
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert "hostPath" in namespace["metadata"]["annotations"]["ml-platform/reason"]


def test_grafana_admin_comes_from_an_external_secret(prerequisites: Manifests) -> None:
    (secret,) = of_kind(prerequisites, "ExternalSecret", GRAFANA_ADMIN_SECRET)
    assert secret["apiVersion"] == "external-secrets.io/v1"
    assert secret["spec"]["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": CLUSTER_SECRET_STORE}
    assert {d["secretKey"] for d in secret["spec"]["data"]} == {"admin-user", "admin-password"}
    assert {d["remoteRef"]["key"] for d in secret["spec"]["data"]} == {"ml-platform-dev/grafana-admin"}
    assert of_kind(prerequisites, "Secret") == []


def test_collector_is_a_pinned_restricted_deployment_on_the_system_pool(telemetry: Manifests) -> None:
    (deployment,) = of_kind(telemetry, "Deployment", OTEL_COLLECTOR)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image_tag = container["image"].rsplit(":", 1)[1]
    assert container["image"] == OTEL_COLLECTOR_IMAGE and image_tag not in ("latest", "")
    assert image_tag.count(".") == 2
    assert pod["nodeSelector"] == SYSTEM
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {p["containerPort"] for p in container["ports"]} >= {4317, 4318}
    (service,) = of_kind(telemetry, "Service", OTEL_COLLECTOR)
    assert {p["port"] for p in service["spec"]["ports"]} >= {4317, 4318}


def test_collector_config_receives_otlp_and_exports_to_xray_and_prometheus(telemetry: Manifests) -> None:
    (config_map,) = of_kind(telemetry, "ConfigMap", f"{OTEL_COLLECTOR}-config")
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config == otel_collector_config(region="us-east-1")
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["awsxray"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert config["exporters"]["awsxray"]["region"] == "us-east-1"


def test_collector_gets_a_disruption_budget_only_with_replicas(telemetry: Manifests) -> None:
    assert len(of_kind(telemetry, "PodDisruptionBudget", OTEL_COLLECTOR)) == 1
    single = TelemetryChart(
        cdk8s.Testing.app(),
        "telemetry",
        namespace="monitoring",
        region="us-east-1",
        node_selector=SYSTEM,
        webhook_cidrs=NODE_CIDRS,
        replicas=1,
    )
    assert of_kind(cdk8s.Testing.synth(single), "PodDisruptionBudget") == []


def test_collector_and_training_jobs_are_scraped(telemetry: Manifests) -> None:
    (monitor,) = of_kind(telemetry, "ServiceMonitor", OTEL_COLLECTOR)
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (pods,) = of_kind(telemetry, "PodMonitor", "training-metrics")
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["training"]}


def policies_by_name(manifests: Manifests) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p["spec"] for p in of_kind(manifests, "NetworkPolicy")}


def test_monitoring_pods_may_talk_to_each_other(telemetry: Manifests) -> None:
    policies = policies_by_name(telemetry)
    for direction in ("ingress", "egress"):
        spec = policies[f"allow-monitoring-peers-{direction}"]
        assert spec["podSelector"] == {}
        # Same namespace, every port: Grafana -> Prometheus, Prometheus -> Alertmanager, gossip over UDP.
        assert spec[direction] == [{("from" if direction == "ingress" else "to"): [{"podSelector": {}}]}]


def test_api_server_reaches_the_operator_webhook_from_the_cluster_subnets(telemetry: Manifests) -> None:
    spec = policies_by_name(telemetry)["allow-operator-webhook"]
    assert spec["podSelector"] == {"matchLabels": dict(OPERATOR_POD_LABELS)}
    (rule,) = spec["ingress"]
    assert [peer["ipBlock"]["cidr"] for peer in rule["from"]] == list(NODE_CIDRS)
    assert rule["ports"] == [{"protocol": "TCP", "port": 10250}]


def test_otlp_and_prometheus_queries_are_admitted(telemetry: Manifests) -> None:
    policies = policies_by_name(telemetry)
    otlp = policies["allow-otlp"]["ingress"][0]
    assert otlp["from"] == [{"namespaceSelector": {}}]
    assert {p["port"] for p in otlp["ports"]} == {4317, 4318}
    queries = policies["allow-prometheus-queries"]["ingress"][0]
    assert queries["ports"] == [{"protocol": "TCP", "port": 9090}]
    assert queries["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["keda", "linkerd-viz"]


def test_fails_without_webhook_cidrs() -> None:
    with pytest.raises(ValueError, match="webhook_cidrs is empty"):
        monitoring_allows(otlp_pod_labels={"app": "x"}, webhook_cidrs=())


# --- add-on values -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_values() -> dict[str, Any]:
    return kube_prometheus_stack_values(
        node_selector=SYSTEM, alert_topic_arn=TOPIC_ARN, region="us-east-1", prometheus_retention="30d",
        prometheus_volume_gib=200,
    )  # fmt: skip


def test_kube_prometheus_stack_values_exist_in_the_pinned_chart(prometheus_values: dict[str, Any]) -> None:
    require_reference_dir()
    assert monitoring.CHART.version == "88.5.3"
    assert validate_helm_values("kube-prometheus-stack", monitoring.CHART.version, prometheus_values) == []


def test_prometheus_keeps_its_samples_on_gp3_and_scrapes_every_namespace(prometheus_values: dict[str, Any]) -> None:
    spec = prometheus_values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d"
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == GP3
    assert claim["resources"]["requests"]["storage"] == "200Gi"
    assert spec["retentionSize"] == "170GiB"
    for selector in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{selector}SelectorNilUsesHelmValues"] is False


def test_monitoring_runs_on_the_system_pool(prometheus_values: dict[str, Any]) -> None:
    assert prometheus_values["prometheusOperator"]["nodeSelector"] == SYSTEM
    assert prometheus_values["prometheusOperator"]["admissionWebhooks"]["patch"]["nodeSelector"] == SYSTEM
    assert prometheus_values["prometheus"]["prometheusSpec"]["nodeSelector"] == SYSTEM
    assert prometheus_values["alertmanager"]["alertmanagerSpec"]["nodeSelector"] == SYSTEM
    assert prometheus_values["grafana"]["nodeSelector"] == SYSTEM


def test_grafana_has_no_literal_password_and_no_chown(prometheus_values: dict[str, Any]) -> None:
    grafana = prometheus_values["grafana"]
    assert grafana["admin"]["existingSecret"] == GRAFANA_ADMIN_SECRET
    assert "adminPassword" not in json.dumps(prometheus_values)
    assert grafana["initChownData"]["enabled"] is False
    assert grafana["sidecar"]["dashboards"]["label"] == DASHBOARD_LABEL
    assert grafana["sidecar"]["dashboards"]["labelValue"] == DASHBOARD_LABEL_VALUE


def test_node_exporter_goes_to_its_privileged_namespace(prometheus_values: dict[str, Any]) -> None:
    require_reference_dir()
    assert prometheus_values["prometheus-node-exporter"] == {"namespaceOverride": NODE_EXPORTER_NAMESPACE}
    # The check reaches into the subchart section: a misspelled key there is reported.
    assert validate_helm_values(
        "kube-prometheus-stack", "88.5.3", {"prometheus-node-exporter": {"namespaceOverrid": "x"}}
    )


def test_alertmanager_routes_the_chosen_severities_to_sns() -> None:
    config = alertmanager_config(topic_arn=TOPIC_ARN, region="us-east-1", notify_severities=("critical",))
    sns_route = config["route"]["routes"][-1]
    assert sns_route == {"receiver": "sns", "matchers": ['severity =~ "critical"']}
    sns = next(r for r in config["receivers"] if r["name"] == "sns")["sns_configs"][0]
    assert sns["topic_arn"] == TOPIC_ARN and sns["sigv4"] == {"region": "us-east-1"}
    with pytest.raises(ValueError, match="notify_severities is empty"):
        alertmanager_config(topic_arn=TOPIC_ARN, region="us-east-1", notify_severities=())


def test_operator_pods_carry_the_label_the_webhook_allow_selects(prometheus_values: dict[str, Any]) -> None:
    operator = prometheus_values["prometheusOperator"]
    assert operator["podLabels"] == dict(OPERATOR_POD_LABELS)
    assert operator["admissionWebhooks"]["enabled"] is True


def test_prometheus_url_names_the_release_service() -> None:
    assert PROMETHEUS_URL == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
    assert RELEASE == "kube-prometheus-stack"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_fluent_bit_tolerates_every_taint_of_the_stage(stage: str) -> None:
    require_reference_dir()
    pools = STAGES[stage].cluster.node_pools
    values = fluent_bit_values(
        log_group_name=container_log_group_name("ml-platform", stage),
        region="us-east-1",
        tolerations=daemonset_tolerations((t.key, t.effect) for p in pools for t in p.taints),
    )
    assert validate_helm_values("aws-for-fluent-bit", fluent_bit.CHART.version, values) == []
    for pool in pools:
        for taint in pool.taints:
            assert tolerates(values["tolerations"], taint.key, taint.value, taint.effect), (pool.name, taint)
    assert values["cloudWatchLogs"]["logGroupName"] == f"/ml-platform/{stage}/containers"
    assert values["cloudWatchLogs"]["autoCreateGroup"] is False


def test_daemonset_tolerations_are_deduplicated() -> None:
    assert daemonset_tolerations([("gpu", "NoSchedule"), ("gpu", "NoSchedule"), ("gpu", "NoExecute")]) == [
        {"key": "gpu", "operator": "Exists", "effect": "NoExecute"},
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


def test_fails_on_a_bad_log_group_name() -> None:
    with pytest.raises(ValueError, match="without '/'"):
        container_log_group_name("ml/platform", "dev")


def test_opentelemetry_operator_values_exist_in_the_pinned_chart() -> None:
    require_reference_dir()
    values = opentelemetry_operator_values(node_selector=SYSTEM)
    assert validate_helm_values("opentelemetry-operator", opentelemetry.OPERATOR_CHART.version, values) == []


def test_cache_node_ids_follow_elasticache_naming() -> None:
    assert cache_node_ids("rg", shards=2, replicas_per_shard=1) == [
        ["rg-0001-001", "rg-0001-002"],
        ["rg-0002-001", "rg-0002-002"],
    ]
    with pytest.raises(ValueError, match="at least 1 shard"):
        cache_node_ids("rg", shards=0, replicas_per_shard=0)


# --- stacks (the session's synthesized app) ----------------------------------------------------------------


def resources_of(stack: StackArtifact, cfn_type: str) -> dict[str, dict[str, Any]]:
    return stack.resources_of(cfn_type)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_alarms_notify_the_encrypted_tls_only_topic(assembly: CloudAssembly, stage: str) -> None:
    stack = assembly.stack(stage.capitalize(), "Observability")
    (topic_id, topic) = next(iter(resources_of(stack, "AWS::SNS::Topic").items()))
    assert "KmsMasterKeyId" in topic["Properties"]
    policy = json.dumps(resources_of(stack, "AWS::SNS::TopicPolicy"))
    assert '"aws:SecureTransport": "false"' in policy
    alarms = resources_of(stack, "AWS::CloudWatch::Alarm")
    assert alarms
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_alarm_count_follows_the_stage(assembly: CloudAssembly, stage: str) -> None:
    config: StageConfig = STAGES[stage]
    stack = assembly.stack(stage.capitalize(), "Observability")
    edge = 3 if config.components.edge else 0
    expected = 3 + 3 * config.data.cache.shards + 1 + edge
    assert len(resources_of(stack, "AWS::CloudWatch::Alarm")) == expected


def test_database_and_cache_alarms_watch_the_right_metrics(assembly: CloudAssembly) -> None:
    alarms = resources_of(assembly.stack("Prod", "Observability"), "AWS::CloudWatch::Alarm")
    names = {a["Properties"]["AlarmName"]: a["Properties"] for a in alarms.values()}
    assert names["ml-platform-prod-database-cpu"]["MetricName"] == "CPUUtilization"
    assert names["ml-platform-prod-database-free-storage"]["ComparisonOperator"] == "LessThanThreshold"
    assert names["ml-platform-prod-database-connections"]["MetricName"] == "DatabaseConnections"
    shard_cpu = names["ml-platform-prod-cache-shard8-engine-cpu"]["Metrics"]
    assert shard_cpu[0]["Expression"] == "MAX([s8n0, s8n1])"
    assert "ml-platform-prod-waf-blocked-spike" in names


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_trail_is_encrypted_validated_and_multi_region(assembly: CloudAssembly, stage: str) -> None:
    stack = assembly.stack(stage.capitalize(), "Observability")
    if not STAGES[stage].observability.cloudtrail.enabled:
        assert resources_of(stack, "AWS::CloudTrail::Trail") == {}
        return
    (trail,) = resources_of(stack, "AWS::CloudTrail::Trail").values()
    props = trail["Properties"]
    assert props["EnableLogFileValidation"] is True
    assert props["IsMultiRegionTrail"] is True
    assert props["KMSKeyId"] == {"Fn::GetAtt": ["TrailKey37E679A9", "Arn"]}
    bucket = stack.resources["TrailBucketFC732D74"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    expire = STAGES[stage].observability.cloudtrail.expire_after_days
    assert rules["ArchiveThenExpireTrailLogs"]["ExpirationInDays"] == expire
    key_policy = json.dumps(stack.resources["TrailKey37E679A9"]["Properties"]["KeyPolicy"])
    assert "cloudtrail.amazonaws.com" in key_policy


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stateful_logical_ids_are_stable(assembly: CloudAssembly, stage: str) -> None:
    observability = assembly.stack(stage.capitalize(), "Observability")
    for logical_id, cfn_type in OBSERVABILITY_STATEFUL_IDS.items():
        assert observability.resources[logical_id]["Type"] == cfn_type
    monitoring_stack = assembly.stack(stage.capitalize(), "Monitoring")
    for logical_id, cfn_type in MONITORING_STATEFUL_IDS.items():
        assert monitoring_stack.resources[logical_id]["Type"] == cfn_type


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_container_log_group_is_encrypted_and_only_writable_by_fluent_bit(assembly: CloudAssembly, stage: str) -> None:
    stack = assembly.stack(stage.capitalize(), "Monitoring")
    group = stack.resources["FluentBitLogGroupE1D00D63"]["Properties"]
    assert group["LogGroupName"] == f"/ml-platform/{stage}/containers"
    assert group["RetentionInDays"] == STAGES[stage].observability.container_log_retention_days
    assert "KmsKeyId" in group
    policies = [p for lid, p in resources_of(stack, "AWS::IAM::Policy").items() if lid.startswith("FluentBitRole")]
    (policy,) = policies
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == {"Fn::GetAtt": ["FluentBitLogGroupE1D00D63", "Arn"]}


def test_collector_may_only_write_to_xray(assembly: CloudAssembly) -> None:
    stack = assembly.stack("Prod", "Monitoring")
    (policy,) = [p for lid, p in resources_of(stack, "AWS::IAM::Policy").items() if lid.startswith("CollectorRole")]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
    associations = [a["Properties"] for a in resources_of(stack, "AWS::EKS::PodIdentityAssociation").values()]
    assert {(a["Namespace"], a["ServiceAccount"]) for a in associations} == {
        ("monitoring", "otel-collector"),
        ("monitoring", "kube-prometheus-stack-alertmanager"),
        ("logging", "fluent-bit"),
    }


def test_monitoring_releases_are_pinned_and_their_values_exist(assembly: CloudAssembly) -> None:
    require_reference_dir()
    releases = [r for r in helm_releases(assembly) if r.stack == "Monitoring"]
    assert {(r.stage, r.chart) for r in releases} >= {
        (stage.capitalize(), chart) for stage in STAGES for chart in ("kube-prometheus-stack", "aws-for-fluent-bit")
    }
    for release in releases:
        assert validate_helm_values(release.chart, release.version, release.values) == []
        assert "adminPassword" not in json.dumps(release.values)


def test_monitoring_objects_are_deployed_and_valid(assembly: CloudAssembly) -> None:
    require_reference_dir()
    objects = [d for d in deployed_objects(assembly) if d.stack == "Monitoring" and d.stage == "Prod"]
    kinds = {d.obj["kind"] for d in objects}
    assert kinds >= {"PrometheusRule", "ConfigMap", "Deployment", "ExternalSecret", "Namespace", "PodMonitor"}
    errors = [e for d in objects for e in validate_object(d.obj, "1.35")]
    assert errors == []


def test_monitoring_deploys_after_the_namespaces_and_the_alarm_topic(assembly: CloudAssembly) -> None:
    stack = assembly.stack("Prod", "Monitoring")
    stage_dir = stack.template_path.parent
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    dependencies = manifest["artifacts"][stack.artifact_id].get("dependencies", [])
    for needed in ("Platform", "Observability", "Cluster"):
        assert any(needed in d and not d.endswith(".assets") for d in dependencies), needed
