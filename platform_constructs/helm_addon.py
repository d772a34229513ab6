"""The base of every Helm add-on: pinned chart coordinates, defaults as data, overrides merged last."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

# Helm waits for the release inside one custom-resource call; CloudFormation gives a custom resource
# 15 minutes at most, the kubectl handler a little less, so releases must finish well before that.
HELM_TIMEOUT = cdk.Duration.minutes(10)


@dataclass(frozen=True)
class HelmChartRef:
    """Where a chart comes from and the exact version to install (see ../shared/k8s-reference/SOURCES.md)."""

    repository: str
    chart: str
    version: str

    def __post_init__(self) -> None:
        if not self.version or self.version in ("latest", "*") or self.version.startswith((">", "^", "~")):
            raise ValueError(f"helm chart {self.chart} must be pinned to an exact version, got {self.version!r}")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class HelmAddon(Construct):
    """Define one pinned Helm release on the cluster.

    Args:
        cluster: the cluster to install into.
        chart: the pinned chart.
        namespace: the release namespace (created when missing).
        release: the release name. Defaults to the chart name.
        values: the add-on's default values.
        overrides: stage-specific values, deep-merged over ``values``.
        wait: wait until the release's resources are ready. Defaults to True.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        chart: HelmChartRef,
        namespace: str,
        release: str | None = None,
        values: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        wait: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self.chart_ref = chart
        self.values = deep_merge(values or {}, overrides or {})
        self.chart = eks.HelmChart(
            self,
            "Resource",
            cluster=cluster,
            repository=chart.repository,
            chart=chart.chart,
            version=chart.version,
            namespace=namespace,
            release=release or chart.chart,
            create_namespace=True,
            values=self.values,
            wait=wait,
            atomic=True,
            timeout=HELM_TIMEOUT,
        )
