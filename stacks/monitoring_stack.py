"""MonitoringStack: metrics, logs and traces inside the cluster (Helm releases and cdk8s charts).

Order of deployment, and why:

1. ``MonitoringPrerequisites`` (the privileged ``logging`` namespace, Grafana's ExternalSecret) after the
   ``prerequisites`` (the tenancy chart that creates ``monitoring`` and ``node-exporter``, the External
   Secrets store) and the Secrets Manager secret it copies.
2. kube-prometheus-stack (CRDs, Prometheus, Alertmanager, Grafana) and aws-for-fluent-bit, each after 1:
   Grafana waits for its Secret, Fluent Bit for its namespace.
3. The charts that need the Prometheus Operator CRDs (alert rules, telemetry) and the dashboards, after 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from config.observability import AlertThresholds
from k8s_charts.alert_rules import AlertRulesChart
from k8s_charts.dashboards import DashboardsChart
from k8s_charts.monitoring import (
    GRAFANA_ADMIN_PASSWORD_KEY,
    GRAFANA_ADMIN_USER_KEY,
    MonitoringPrerequisitesChart,
    TelemetryChart,
)
from platform_constructs import monitoring
from platform_constructs.k8s_manifest import attach_chart
from platform_constructs.logging import FluentBit
from platform_constructs.monitoring import KubePrometheusStack
from platform_constructs.opentelemetry import OpenTelemetryCollectorRole, OpenTelemetryOperator
from stacks.base import PlatformStack


class MonitoringStack(PlatformStack):
    """Define the in-cluster observability of one stage.

    Public attributes: ``prometheus`` (the kube-prometheus-stack add-on), ``fluent_bit``,
    ``grafana_admin_secret``, ``collector_role``, ``otel_operator`` (None unless enabled) and the attached
    charts ``prerequisites_manifest``, ``rules_manifest``, ``dashboards_manifest``, ``telemetry_manifest``.

    Args:
        cluster: the stage's EKS cluster.
        name_prefix: ``<project>-<stage>``; names the Grafana admin secret ``<prefix>/grafana-admin``.
        kubernetes_version: the cluster's minor version (Pod Security labels of the logging namespace).
        alert_topic: the stage's alarm topic (ObservabilityStack); Alertmanager publishes to it.
        alert_topic_key: the topic's KMS key (None for an unencrypted topic).
        logs_key: the stage's logs key; encrypts the container log group.
        node_selector: labels of the system pool, where every monitoring Deployment runs.
        node_taints: (key, effect) of every taint of every pool; Fluent Bit tolerates them all.
        node_cidrs: the cluster's (node) subnets; the API server calls the operator's webhook from there.
        instance_hourly_usd: instance type -> on-demand price of every type the pools use (cost panels).
        thresholds: where the Prometheus rules fire.
        container_log_group_name: the CloudWatch Logs group of container logs.
        container_log_retention_days: its retention.
        removal_policy: what happens to the log group and the Grafana secret when the stack goes.
        prometheus_retention: how long Prometheus keeps samples.
        prometheus_volume_gib: Prometheus's gp3 volume.
        prometheus_replicas: Prometheus replicas.
        prometheus_memory_gib: Prometheus's memory limit.
        alertmanager_replicas: Alertmanager replicas.
        notify_severities: alert severities sent to the SNS topic.
        opentelemetry_operator: install the opentelemetry-operator too. Defaults to False.
        otel_collector_replicas: collector replicas. Defaults to 2.
        prerequisites: constructs that must be deployed first: the tenancy chart (namespaces) and the
            External Secrets store. Defaults to none (they must then exist before this stack deploys).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        name_prefix: str,
        kubernetes_version: str,
        alert_topic: sns.ITopic,
        alert_topic_key: kms.IKey | None,
        logs_key: kms.IKey,
        node_selector: Mapping[str, str],
        node_taints: Sequence[tuple[str, str]],
        node_cidrs: Sequence[str],
        instance_hourly_usd: Mapping[str, float],
        thresholds: AlertThresholds,
        container_log_group_name: str,
        container_log_retention_days: int,
        removal_policy: cdk.RemovalPolicy,
        prometheus_retention: str,
        prometheus_volume_gib: int,
        prometheus_replicas: int,
        prometheus_memory_gib: int,
        alertmanager_replicas: int,
        notify_severities: Sequence[str],
        opentelemetry_operator: bool = False,
        otel_collector_replicas: int = 2,
        prerequisites: Sequence[Construct] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        namespace = monitoring.NAMESPACE
        charts = cdk8s.App()

        # Generated in Secrets Manager, never in a template; the External Secrets Operator copies it into
        # the grafana-admin Secret.
        grafana_admin_secret_name = f"{name_prefix}/grafana-admin"
        self.grafana_admin_secret = secretsmanager.Secret(
            self,
            "GrafanaAdmin",
            secret_name=grafana_admin_secret_name,
            description=f"{name_prefix}: Grafana admin user and password (synced into monitoring/grafana-admin)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=f'{{"{GRAFANA_ADMIN_USER_KEY}": "admin"}}',
                generate_string_key=GRAFANA_ADMIN_PASSWORD_KEY,
                password_length=32,
                exclude_punctuation=True,
            ),
            removal_policy=removal_policy,
        )
        cdk.Validations.of(self.grafana_admin_secret).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="Grafana reads its admin password only when it starts, and Secrets Manager has no "
                "rotation function for Grafana; rotate by runbook (new value, ExternalSecret refresh, restart). "
                "Day-to-day access goes through SSO users, not this break-glass account.",
            )
        )

        self.prerequisites_manifest = attach_chart(
            self,
            "MonitoringPrerequisites",
            cluster=cluster,
            chart=MonitoringPrerequisitesChart(
                charts,
                "monitoring-prerequisites",
                monitoring_namespace=namespace,
                # The literal name: ESO looks secrets up by name, and the name needs no deploy-time token.
                grafana_admin_secret_key=grafana_admin_secret_name,
                kubernetes_version=kubernetes_version,
            ),
        )
        self.prerequisites_manifest.node.add_dependency(self.grafana_admin_secret, *prerequisites)

        self.prometheus = KubePrometheusStack(
            self,
            "KubePrometheusStack",
            cluster=cluster,
            alert_topic=alert_topic,
            alert_topic_key=alert_topic_key,
            node_selector=node_selector,
            prometheus_retention=prometheus_retention,
            prometheus_volume_gib=prometheus_volume_gib,
            prometheus_replicas=prometheus_replicas,
            prometheus_memory_gib=prometheus_memory_gib,
            alertmanager_replicas=alertmanager_replicas,
            notify_severities=notify_severities,
        )
        # Grafana starts only once its admin Secret exists, and Helm waits for Grafana.
        self.prometheus.release.node.add_dependency(self.prerequisites_manifest)

        self.fluent_bit = FluentBit(
            self,
            "FluentBit",
            cluster=cluster,
            log_group_name=container_log_group_name,
            log_retention_days=container_log_retention_days,
            logs_key=logs_key,
            node_taints=node_taints,
            removal_policy=removal_policy,
        )
        # The privileged logging namespace comes from the prerequisites chart.
        self.fluent_bit.release.node.add_dependency(self.prerequisites_manifest)

        self.collector_role = OpenTelemetryCollectorRole(self, "CollectorRole", cluster=cluster, namespace=namespace)
        self.telemetry_manifest = attach_chart(
            self,
            "Telemetry",
            cluster=cluster,
            chart=TelemetryChart(
                charts,
                "telemetry",
                namespace=namespace,
                region=self.region,
                node_selector=node_selector,
                webhook_cidrs=node_cidrs,
                replicas=otel_collector_replicas,
            ),
        )
        self.rules_manifest = attach_chart(
            self,
            "AlertRules",
            cluster=cluster,
            chart=AlertRulesChart(charts, "alert-rules", namespace=namespace, thresholds=thresholds),
        )
        self.dashboards_manifest = attach_chart(
            self,
            "Dashboards",
            cluster=cluster,
            chart=DashboardsChart(charts, "dashboards", namespace=namespace, instance_hourly_usd=instance_hourly_usd),
        )
        # ServiceMonitor, PodMonitor and PrometheusRule need the CRDs the release installs; the collector
        # needs its X-Ray role before its pods start (credentials are fetched at start).
        self.telemetry_manifest.node.add_dependency(
            self.prometheus.release, self.collector_role.association, self.collector_role.policy
        )
        self.rules_manifest.node.add_dependency(self.prometheus.release)
        self.dashboards_manifest.node.add_dependency(self.prometheus.release)

        self.otel_operator: OpenTelemetryOperator | None = None
        if opentelemetry_operator:
            self.otel_operator = OpenTelemetryOperator(
                self, "OpenTelemetryOperator", cluster=cluster, node_selector=node_selector
            )
