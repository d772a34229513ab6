"""Attach a cdk8s chart to a cluster from any stack (the chart's objects become one KubernetesManifest)."""

from __future__ import annotations

import cdk8s
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct


def attach_chart(
    scope: Construct, construct_id: str, *, cluster: eks.ICluster, chart: cdk8s.Chart
) -> eks.KubernetesManifest:
    """Apply ``chart`` to ``cluster`` from ``scope``'s stack.

    ``Cluster.add_cdk8s_chart`` puts the manifest in the cluster's own stack; stacks that hold the platform
    services and workloads keep their objects in their own templates, so the cluster stack stays small.
    """
    return eks.KubernetesManifest(scope, construct_id, cluster=cluster, manifest=chart.to_json())
