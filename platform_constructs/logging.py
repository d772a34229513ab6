"""aws-for-fluent-bit: every container's logs to one KMS-encrypted CloudWatch Logs group per stage.

The log group is created here in CDK (``/<project>/<stage>/containers``, the stage's retention, the logs
key), not by Fluent Bit (``autoCreateGroup: false``): a group the shipper creates has no retention and no
key, and its IAM role would need logs:CreateLogGroup on every name. The shipper's Pod Identity role may
only create streams in and write to that one group.

Fluent Bit is a DaemonSet that must run on every node, GPU nodes included, so it tolerates every taint the
stage's pools carry (``daemonset_tolerations``). It runs in the privileged ``logging`` namespace
(``k8s_charts.monitoring.MonitoringPrerequisitesChart``) because it reads ``/var/log`` from the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from k8s_charts.monitoring import LOGGING_NAMESPACE
from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole
from platform_constructs.retention import retention_days

# ../shared/k8s-reference/SOURCES.md: https://aws.github.io/eks-charts -> eks/aws-for-fluent-bit 0.2.0
CHART: Final = HelmChartRef(repository="https://aws.github.io/eks-charts", chart="aws-for-fluent-bit", version="0.2.0")
NAMESPACE: Final = LOGGING_NAMESPACE
SERVICE_ACCOUNT: Final = "fluent-bit"
# One stream per container: <namespace>.<pod>.<container> (falls back to the prefix and the tag).
LOG_STREAM_TEMPLATE: Final = "$kubernetes['namespace_name'].$kubernetes['pod_name'].$kubernetes['container_name']"


def container_log_group_name(project: str, stage: str) -> str:
    """Return the stage's container log group name, ``/<project>/<stage>/containers``."""
    for what, value in (("project", project), ("stage", stage)):
        if not value or "/" in value:
            raise ValueError(f"{what} {value!r} must be a non-empty name without '/'")
    return f"/{project}/{stage}/containers"


def daemonset_tolerations(taints: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """Return tolerations that admit a DaemonSet on every node with these (key, effect) taints.

    Each taint key is tolerated with ``Exists`` (any value), once per effect, in a stable order.
    """
    seen: set[tuple[str, str]] = set()
    tolerations = []
    for key, effect in taints:
        if (key, effect) in seen:
            continue
        seen.add((key, effect))
        tolerations.append({"key": key, "operator": "Exists", "effect": effect})
    return sorted(tolerations, key=lambda t: (t["key"], t["effect"]))


def fluent_bit_values(
    *,
    log_group_name: str,
    region: str,
    tolerations: Iterable[Mapping[str, str]],
    service_account: str = SERVICE_ACCOUNT,
) -> dict[str, Any]:
    """Return the chart values of the aws-for-fluent-bit release (every key exists in the pinned chart).

    Args:
        log_group_name: the existing CloudWatch Logs group to write to.
        region: its region.
        tolerations: the DaemonSet's tolerations (see ``daemonset_tolerations``).
        service_account: the service account the Pod Identity role is bound to. Defaults to fluent-bit.
    """
    if not log_group_name.startswith("/"):
        raise ValueError(f"log group {log_group_name!r} must be a path such as /ml-platform/dev/containers")
    return {
        "serviceAccount": {"create": True, "name": service_account},
        "cloudWatchLogs": {
            "enabled": True,
            "region": region,
            "logGroupName": log_group_name,
            # The group exists (CDK owns its retention and key); the role may not create groups.
            "autoCreateGroup": False,
            "logStreamPrefix": "fluent-bit-",
            "logStreamTemplate": LOG_STREAM_TEMPLATE,
        },
        "tolerations": [dict(t) for t in tolerations],
        # containerd keeps logs under /var/log/pods (linked from /var/log/containers); the chart's default
        # /var/lib/docker/containers mount does not exist on the AL2023 nodes.
        "volumes": [{"name": "varlog", "hostPath": {"path": "/var/log"}}],
        "volumeMounts": [{"name": "varlog", "mountPath": "/var/log"}],
        "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # Root (the log files and its position database on the host belong to root), but no capabilities.
        "containerSecurityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


class FluentBit(Construct):
    """Define the container log group, Fluent Bit's role on it, and the aws-for-fluent-bit release.

    The ``logging`` namespace must exist before the release (it carries the privileged Pod Security label).

    Args:
        cluster: the cluster to install into.
        log_group_name: the group's name (see ``container_log_group_name``).
        log_retention_days: the group's retention.
        logs_key: the stage's logs key, which encrypts the group.
        node_taints: (key, effect) of every taint any node pool carries.
        removal_policy: what happens to the group (and its logs) when the stack goes.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        log_group_name: str,
        log_retention_days: int,
        logs_key: kms.IKey,
        node_taints: Iterable[tuple[str, str]],
        removal_policy: cdk.RemovalPolicy,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=log_group_name,
            encryption_key=logs_key,
            retention=retention_days(log_retention_days),
            removal_policy=removal_policy,
        )
        self.role = PodIdentityRole(
            self,
            "Role",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description="Fluent Bit: write container logs to the stage's container log group",
        )
        # The group's ARN ends in :* and so covers its streams (PutLogEvents acts on a stream).
        self.log_group.grant(self.role.role, "logs:CreateLogStream", "logs:PutLogEvents")
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=fluent_bit_values(
                log_group_name=log_group_name,
                region=cdk.Stack.of(self).region,
                tolerations=daemonset_tolerations(node_taints),
            ),
            overrides=overrides,
        )
        # Shipping starts as soon as the pods run: the group and the role's association must already exist.
        self.release.node.add_dependency(self.log_group, self.role.association, self.role.role)
