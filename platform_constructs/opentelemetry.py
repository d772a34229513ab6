"""OpenTelemetry: the collector's AWS identity, and the (optional) opentelemetry-operator release.

The collector itself is a plain Deployment (``k8s_charts.monitoring.TelemetryChart``): the
``OpenTelemetryCollector`` CRD is not in the pinned k8s reference, so a collector custom resource could not
pass the CRD gate. Its Pod Identity role may write traces and telemetry records to X-Ray and nothing else.

The operator is off by default (``observability.opentelemetry_operator``). Once the collector is a plain
Deployment, all the operator would still add is auto-instrumentation (``Instrumentation`` objects and a
mutating webhook on every pod creation in the cluster), and neither those objects nor its collector CRs can
be validated against the reference; vLLM and the platform's services export OTLP themselves. It costs a
controller, a cluster-wide webhook whose failure slows every pod start, and webhook certificates. Turn it on
when a team needs zero-code instrumentation and the operator's CRDs are added to the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from k8s_charts.monitoring import OTEL_COLLECTOR
from platform_constructs.helm_addon import HelmAddon, HelmChartRef
from platform_constructs.pod_identity import PodIdentityRole

# ../shared/k8s-reference/SOURCES.md: open-telemetry/opentelemetry-operator --version 0.122.0
OPERATOR_CHART: Final = HelmChartRef(
    repository="https://open-telemetry.github.io/opentelemetry-helm-charts",
    chart="opentelemetry-operator",
    version="0.122.0",
)
OPERATOR_NAMESPACE: Final = "opentelemetry-operator-system"
XRAY_ACTIONS: Final = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")


class OpenTelemetryCollectorRole(Construct):
    """Define the collector's Pod Identity role: write traces and telemetry records to X-Ray.

    Args:
        cluster: the cluster the collector runs in.
        namespace: the collector's namespace.
        service_account: the collector's service account. Defaults to ``otel-collector``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str,
        service_account: str = OTEL_COLLECTOR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.identity = PodIdentityRole(
            self,
            "Identity",
            cluster=cluster,
            namespace=namespace,
            service_account=service_account,
            description="OpenTelemetry collector: send traces to AWS X-Ray",
        )
        self.role = self.identity.role
        self.association = self.identity.association
        self.policy = iam.Policy(
            self,
            "XRayWrite",
            statements=[iam.PolicyStatement(actions=list(XRAY_ACTIONS), resources=["*"])],
        )
        self.policy.attach_to_role(self.role)
        cdk.Validations.of(self.policy).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray's PutTraceSegments and PutTelemetryRecords have no resource types: IAM only "
                "accepts '*' for them. The role grants these two write actions only, to one service account.",
            )
        )


def opentelemetry_operator_values(*, node_selector: Mapping[str, str]) -> dict[str, Any]:
    """Return the chart values of the opentelemetry-operator release (every key exists in the pinned chart).

    Args:
        node_selector: node labels that place the operator on the system pool.
    """
    if not node_selector:
        raise ValueError("node_selector is empty: give the system pool's label for the operator")
    return {
        # Helm merges this map into the chart's default (kubernetes.io/os: linux).
        "nodeSelector": dict(node_selector),
        "admissionWebhooks": {
            # The chart signs its own webhook certificate, so the operator needs no cert-manager Issuer.
            "certManager": {"enabled": False},
            "autoGenerateCert": {"enabled": True},
        },
    }


class OpenTelemetryOperator(Construct):
    """Define the opentelemetry-operator release (optional; see the module docstring).

    Args:
        cluster: the cluster to install into.
        node_selector: node labels of the system pool.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=OPERATOR_CHART,
            namespace=OPERATOR_NAMESPACE,
            values=opentelemetry_operator_values(node_selector=node_selector),
            overrides=overrides,
        )
