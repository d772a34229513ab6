"""kube-prometheus-stack: Prometheus, Alertmanager (to the stage's SNS topic), Grafana, kube-state-metrics.

What the values decide, and why:

- Prometheus keeps ``retention`` of samples on a gp3 volume (``storageSpec.volumeClaimTemplate``) and stops
  at 85% of it (``retentionSize``) so a busy week cannot fill the disk and crash it.
- Every ``*SelectorNilUsesHelmValues`` is false: Prometheus picks up ServiceMonitors, PodMonitors,
  PrometheusRules, Probes and ScrapeConfigs from every namespace, whoever made them (the GPU Operator's
  DCGM exporter, Linkerd, the inference servers), without the release label.
- Grafana loads dashboards from ConfigMaps labelled ``grafana_dashboard: "1"`` in any namespace (files them
  by their ``grafana_folder`` annotation), reads its admin credentials from the ``grafana-admin`` Secret
  that an ExternalSecret copies from Secrets Manager (no password in values), and runs without the
  chown init container (root with CAP_CHOWN, which the restricted ``monitoring`` namespace refuses).
- node-exporter goes to the privileged ``node-exporter`` namespace the tenancy chart creates
  (hostNetwork, hostPID, hostPath), so ``monitoring`` stays restricted.
- kube-state-metrics exports the nodes' pool, instance type and capacity type labels on
  ``kube_node_labels`` (the dashboards join GPUs and cost to pools with them).
- The control-plane components EKS hides (controller manager, scheduler, etcd) and kube-proxy (metrics on
  127.0.0.1 only) are not scraped, and their rules are off: they would only raise "target down" alerts.
- The Prometheus Operator's admission webhook validates every PrometheusRule at admission. ``monitoring``
  is not meshed and denies all traffic by default, so the operator's pods carry a label of ours
  (``OPERATOR_POD_LABELS``) that the webhook allow of ``k8s_charts.monitoring.monitoring_allows`` admits
  from the cluster subnets; the certificate Jobs run on the system pool like everything else.
- Alertmanager sends ``notify_severities`` to the SNS topic with SigV4 (EKS Pod Identity credentials,
  sns:Publish on that topic only); Watchdog and everything else go to the ``null`` receiver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from k8s_charts.dashboards import DASHBOARD_LABEL, DASHBOARD_LABEL_VALUE, DATASOURCE_UID, FOLDER_ANNOTATION
from k8s_charts.monitoring import (
    GRAFANA_ADMIN_PASSWORD_KEY,
    GRAFANA_ADMIN_SECRET,
    GRAFANA_ADMIN_USER_KEY,
    OPERATOR_POD_LABELS,
)
from k8s_charts.storage import GP3
from k8s_charts.tenancy import NODE_EXPORTER_NAMESPACE
from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: prometheus-community/kube-prometheus-stack --version 88.5.3
CHART: Final = HelmChartRef(
    repository="https://prometheus-community.github.io/helm-charts", chart="kube-prometheus-stack", version="88.5.3"
)
NAMESPACE: Final = "monitoring"
RELEASE: Final = "kube-prometheus-stack"
# Services the chart names after the release (fullname = release name when it contains the chart name).
PROMETHEUS_URL: Final = f"http://{RELEASE}-prometheus.{NAMESPACE}.svc:9090"
ALERTMANAGER_URL: Final = f"http://{RELEASE}-alertmanager.{NAMESPACE}.svc:9093"
ALERTMANAGER_SERVICE_ACCOUNT: Final = f"{RELEASE}-alertmanager"
# Node labels kube-state-metrics exports on kube_node_labels (as label_<sanitized key>).
NODE_LABELS_EXPORTED: Final = ("ml-platform/pool", "node.kubernetes.io/instance-type", "karpenter.sh/capacity-type")
# Control-plane scrape jobs that cannot work on EKS, and the default rule groups that watch them.
_UNSCRAPABLE: Final = ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy")
_RULES_OFF: Final = (
    "etcd", "kubeControllerManager", "kubeProxy", "kubeSchedulerAlerting", "kubeSchedulerRecording", "windows",
)  # fmt: skip
SNS_RECEIVER: Final = "sns"
# Prometheus stops adding blocks at this share of its volume (retentionSize), before the disk is full.
RETENTION_SIZE_SHARE: Final = 0.85


def alertmanager_config(*, topic_arn: str, region: str, notify_severities: Sequence[str]) -> dict[str, Any]:
    """Return Alertmanager's ``global``, ``route`` and ``receivers``: the given severities go to the SNS topic.

    The chart's ``inhibit_rules`` and ``templates`` stay as they are (Helm merges the map).
    """
    if not notify_severities:
        raise ValueError("notify_severities is empty: no alert would ever reach the SNS topic")
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "group_by": ["namespace", "alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "receiver": "null",
            "routes": [
                # The always-firing dead man's switch proves the pipeline works; it must not page anyone.
                {"receiver": "null", "matchers": ['alertname = "Watchdog"']},
                {"receiver": SNS_RECEIVER, "matchers": [f'severity =~ "{"|".join(notify_severities)}"']},
            ],
        },
        "receivers": [
            {"name": "null"},
            {
                "name": SNS_RECEIVER,
                "sns_configs": [
                    {
                        "topic_arn": topic_arn,
                        "sigv4": {"region": region},
                        "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                        "send_resolved": True,
                    }
                ],
            },
        ],
    }


def kube_prometheus_stack_values(
    *,
    node_selector: Mapping[str, str],
    alert_topic_arn: str,
    region: str,
    prometheus_retention: str = "15d",
    prometheus_volume_gib: int = 100,
    prometheus_replicas: int = 1,
    prometheus_memory_gib: int = 8,
    alertmanager_replicas: int = 1,
    alertmanager_volume_gib: int = 5,
    notify_severities: Sequence[str] = ("critical", "warning"),
    storage_class: str = GP3,
    grafana_admin_secret: str = GRAFANA_ADMIN_SECRET,
) -> dict[str, Any]:
    """Return the chart values of the kube-prometheus-stack release (every key exists in the pinned chart).

    Args:
        node_selector: node labels that place the operator, Prometheus, Alertmanager, Grafana and
            kube-state-metrics on the system pool.
        alert_topic_arn: the SNS topic Alertmanager publishes to.
        region: the topic's region (SigV4).
        prometheus_retention: how long samples are kept. Defaults to 15d.
        prometheus_volume_gib: size of Prometheus's gp3 volume. Defaults to 100.
        prometheus_replicas: identical Prometheus replicas (Alertmanager deduplicates). Defaults to 1.
        prometheus_memory_gib: Prometheus's memory limit (requests are half). Defaults to 8.
        alertmanager_replicas: Alertmanager replicas (they gossip). Defaults to 1.
        alertmanager_volume_gib: Alertmanager's volume (silences, notification log). Defaults to 5.
        notify_severities: severities routed to SNS. Defaults to critical and warning.
        storage_class: the class of both volumes. Defaults to gp3.
        grafana_admin_secret: the Secret with ``admin-user`` and ``admin-password``. Defaults to grafana-admin.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: give the system pool's label so monitoring stays off GPU nodes")
    if prometheus_volume_gib < 10:
        raise ValueError(f"prometheus_volume_gib {prometheus_volume_gib} is too small: use at least 10")
    selector = dict(node_selector)

    def volume(gib: int) -> dict[str, Any]:
        return {
            "volumeClaimTemplate": {
                "spec": {
                    "storageClassName": storage_class,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{gib}Gi"}},
                }
            }
        }

    values: dict[str, Any] = {
        "crds": {"enabled": True},
        "defaultRules": {"create": True, "rules": dict.fromkeys(_RULES_OFF, False)},
        "prometheusOperator": {
            "nodeSelector": selector,
            "podLabels": dict(OPERATOR_POD_LABELS),
            "admissionWebhooks": {"enabled": True, "patch": {"nodeSelector": selector}},
        },
        "prometheus": {
            "prometheusSpec": {
                "nodeSelector": selector,
                "replicas": prometheus_replicas,
                "retention": prometheus_retention,
                "retentionSize": f"{int(prometheus_volume_gib * RETENTION_SIZE_SHARE)}GiB",
                "storageSpec": volume(prometheus_volume_gib),
                "resources": {
                    "requests": {"cpu": "500m", "memory": f"{prometheus_memory_gib * 512}Mi"},
                    "limits": {"memory": f"{prometheus_memory_gib}Gi"},
                },
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "probeSelectorNilUsesHelmValues": False,
                "scrapeConfigSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "serviceAccount": {"create": True, "name": ALERTMANAGER_SERVICE_ACCOUNT},
            "config": alertmanager_config(
                topic_arn=alert_topic_arn, region=region, notify_severities=notify_severities
            ),
            "alertmanagerSpec": {
                "nodeSelector": selector,
                "replicas": alertmanager_replicas,
                "storage": volume(alertmanager_volume_gib),
            },
        },
        "grafana": {
            "nodeSelector": selector,
            "initChownData": {"enabled": False},
            "admin": {
                "existingSecret": grafana_admin_secret,
                "userKey": GRAFANA_ADMIN_USER_KEY,
                "passwordKey": GRAFANA_ADMIN_PASSWORD_KEY,
            },
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": DASHBOARD_LABEL,
                    "labelValue": DASHBOARD_LABEL_VALUE,
                    "searchNamespace": "ALL",
                    "folderAnnotation": FOLDER_ANNOTATION,
                    "provider": {"foldersFromFilesStructure": True},
                },
                "datasources": {"uid": DATASOURCE_UID},
            },
        },
        "kube-state-metrics": {
            "nodeSelector": selector,
            "metricLabelsAllowlist": [f"nodes=[{','.join(NODE_LABELS_EXPORTED)}]"],
        },
        "prometheus-node-exporter": {"namespaceOverride": NODE_EXPORTER_NAMESPACE},
    }
    for component in _UNSCRAPABLE:
        values[component] = {"enabled": False}
    return values


class KubePrometheusStack(Construct):
    """Define the kube-prometheus-stack release and Alertmanager's permission to publish to the SNS topic.

    The ``monitoring`` and ``node-exporter`` namespaces and the ``grafana-admin`` ExternalSecret must exist
    before the release (Grafana waits for the Secret; Helm waits for Grafana).

    Args:
        cluster: the cluster to install into.
        alert_topic: the stage's alarm topic.
        alert_topic_key: the topic's KMS key. Defaults to None (an unencrypted topic needs no key grant).
        node_selector: node labels of the system pool (see ``kube_prometheus_stack_values``).
        prometheus_retention: how long samples are kept. Defaults to 15d.
        prometheus_volume_gib: size of Prometheus's gp3 volume. Defaults to 100.
        prometheus_replicas: Prometheus replicas. Defaults to 1.
        prometheus_memory_gib: Prometheus's memory limit. Defaults to 8.
        alertmanager_replicas: Alertmanager replicas. Defaults to 1.
        notify_severities: severities routed to SNS. Defaults to critical and warning.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        alert_topic: sns.ITopic,
        node_selector: Mapping[str, str],
        alert_topic_key: kms.IKey | None = None,
        prometheus_retention: str = "15d",
        prometheus_volume_gib: int = 100,
        prometheus_replicas: int = 1,
        prometheus_memory_gib: int = 8,
        alertmanager_replicas: int = 1,
        notify_severities: Sequence[str] = ("critical", "warning"),
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        region = alert_topic.stack.region
        self.alertmanager_role = PodIdentityRole(
            self,
            "AlertmanagerRole",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=ALERTMANAGER_SERVICE_ACCOUNT,
            description="Alertmanager: publish alerts to the stage's alarm topic",
        )
        # sns:Publish on this topic and, for an encrypted topic, exactly the two key actions publishing needs
        # (Topic.grant_publish would grant kms:GenerateDataKey*, a wildcard).
        self.alertmanager_role.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sns:Publish"], resources=[alert_topic.topic_arn])
        )
        if alert_topic_key is not None:
            self.alertmanager_role.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=[alert_topic_key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"sns.{region}.amazonaws.com"}},
                )
            )
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            release=RELEASE,
            values=kube_prometheus_stack_values(
                node_selector=node_selector,
                alert_topic_arn=alert_topic.topic_arn,
                region=region,
                prometheus_retention=prometheus_retention,
                prometheus_volume_gib=prometheus_volume_gib,
                prometheus_replicas=prometheus_replicas,
                prometheus_memory_gib=prometheus_memory_gib,
                alertmanager_replicas=alertmanager_replicas,
                notify_severities=notify_severities,
            ),
            overrides=overrides,
        )
        # Alertmanager must hold its credentials before the first alert: association and policy come first.
        self.release.node.add_dependency(self.alertmanager_role.association, self.alertmanager_role.role)
