"""NVIDIA GPU Operator: device plugin with per-pool sharing configs, MIG manager, DCGM exporter, NFD.

The nodes run the EKS-optimized AL2023 NVIDIA AMI (Karpenter's ``al2023@`` alias picks it for GPU types;
the GPU nodegroups use the AL2023 NVIDIA AMI type), which ships the NVIDIA driver and the NVIDIA
Container Toolkit with ``nvidia`` registered as a containerd runtime. The operator therefore installs
neither (``driver.enabled`` and ``toolkit.enabled`` false): a second driver would fight the one baked
into the AMI, and the driver version moves with the AMI release, not with this chart.

What the operator does install on every GPU node: the device plugin (its named configs come from
``GpuSharingChart``'s ``device-plugin-config``), GPU Feature Discovery, the MIG manager (layouts from
``mig-parted-config``), the DCGM exporter and the validator; node-feature-discovery (a subchart)
labels the nodes that have an NVIDIA PCI device, which is how the operator finds GPU nodes at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from k8s_charts.gpu_sharing import (
    DEFAULT_DEVICE_PLUGIN_CONFIG,
    DEVICE_PLUGIN_CONFIG_MAP,
    MIG_DISABLED_LAYOUT,
    MIG_PARTED_CONFIG_MAP,
)
from platform_constructs.helm_addon import HelmAddon, HelmChartRef

# ../shared/k8s-reference/SOURCES.md: https://helm.ngc.nvidia.com/nvidia -> nvidia/gpu-operator v26.7.0
CHART: Final = HelmChartRef(repository="https://helm.ngc.nvidia.com/nvidia", chart="gpu-operator", version="v26.7.0")
NAMESPACE: Final = "gpu-operator"
# The cluster-wide MIG strategy (see k8s_charts/gpu_sharing.py: it overrides every node's config file).
MIG_STRATEGY: Final = "mixed"
# Every GPU pool is tainted with key "gpu" (values true, mig, h100 and whatever comes next), so the
# toleration matches the key with any value. nvidia.com/gpu is the chart's own default, kept because a
# values list replaces the chart's list instead of extending it.
GPU_TOLERATIONS: Final = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
)


def gpu_operator_values(
    *,
    node_selector: Mapping[str, str],
    device_plugin_config_map: str = DEVICE_PLUGIN_CONFIG_MAP,
    default_device_plugin_config: str = DEFAULT_DEVICE_PLUGIN_CONFIG,
    mig_config_map: str = MIG_PARTED_CONFIG_MAP,
    service_monitor: bool = True,
    service_monitor_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return the chart values of the GPU Operator release (every key exists in the pinned values.yaml).

    Args:
        node_selector: node labels that place the operator and the NFD master and garbage collector
            (Deployments) on the system pool; the per-node operands are DaemonSets on the GPU nodes.
        device_plugin_config_map: the ConfigMap of named device-plugin configs. Defaults to
            ``GpuSharingChart``'s.
        default_device_plugin_config: the entry a GPU node without the ``nvidia.com/device-plugin.config``
            label uses. Defaults to ``GpuSharingChart``'s ``default``.
        mig_config_map: the ConfigMap holding the mig-parted config (key ``config.yaml``). Defaults to
            ``GpuSharingChart``'s.
        service_monitor: create a ServiceMonitor for the DCGM exporter. Defaults to True, which needs the
            Prometheus Operator CRDs (kube-prometheus-stack) installed before the operator reconciles:
            without them the ClusterPolicy stays not-ready ("couldn't find ServiceMonitor CRD").
        service_monitor_labels: extra labels on that ServiceMonitor, such as the ``release`` label a
            kube-prometheus-stack Prometheus selects by. Defaults to none.
    """
    for arg, value in (
        ("device_plugin_config_map", device_plugin_config_map),
        ("default_device_plugin_config", default_device_plugin_config),
        ("mig_config_map", mig_config_map),
    ):
        if not value:
            raise ValueError(f"{arg} is empty: the GPU Operator needs it to find the GPU sharing config")
    if not node_selector:
        raise ValueError(
            "node_selector is empty: give the system pool's label (ml-platform/pool: system) so the operator "
            "does not land on a GPU or spot node"
        )
    tolerations = [dict(t) for t in GPU_TOLERATIONS]
    service_monitor_values: dict[str, Any] = {"enabled": service_monitor}
    if service_monitor_labels:
        service_monitor_values["additionalLabels"] = dict(service_monitor_labels)
    return {
        # Helm merges this map into the chart's default (kubernetes.io/os: linux). The system pool has no
        # taints, so the chart's operator tolerations (control-plane only) need no change.
        "operator": {"nodeSelector": dict(node_selector)},
        # Preinstalled on the AL2023 NVIDIA AMI (see the module docstring).
        "driver": {"enabled": False},
        "toolkit": {"enabled": False},
        # Operands (device plugin, GFD, DCGM exporter, MIG manager, validator) must run on tainted GPU nodes.
        "daemonsets": {"tolerations": tolerations},
        "mig": {"strategy": MIG_STRATEGY},
        "devicePlugin": {
            "enabled": True,
            "config": {"name": device_plugin_config_map, "default": default_device_plugin_config},
        },
        "migManager": {
            "enabled": True,
            # A custom config replaces the one the MIG manager would generate from the hardware: only the
            # layouts in it exist, and all-disabled is what unlabelled MIG-capable GPUs get.
            "config": {"name": mig_config_map, "default": MIG_DISABLED_LAYOUT},
        },
        "dcgmExporter": {"enabled": True, "serviceMonitor": service_monitor_values},
        "node-feature-discovery": {
            # The worker labels every node, GPU nodes included, so it tolerates their taints.
            "worker": {"tolerations": [dict(t) for t in GPU_TOLERATIONS]},
            "master": {"nodeSelector": dict(node_selector)},
            "gc": {"nodeSelector": dict(node_selector)},
        },
    }


class NvidiaGpuOperator(Construct):
    """Define the NVIDIA GPU Operator release for one cluster.

    The sharing ConfigMaps it points at come from ``k8s_charts.gpu_sharing.GpuSharingChart`` in the
    same namespace; the release creates that namespace, so attach the chart after the release.

    Args:
        cluster: the cluster to install into.
        node_selector: node labels that place the operator's Deployments on the system pool.
        device_plugin_config_map: see ``gpu_operator_values``. Defaults to ``device-plugin-config``.
        default_device_plugin_config: see ``gpu_operator_values``. Defaults to ``default``.
        mig_config_map: see ``gpu_operator_values``. Defaults to ``mig-parted-config``.
        service_monitor: create the DCGM exporter's ServiceMonitor. Defaults to True; the monitoring stack
            (Prometheus Operator CRDs) must then be installed before this release.
        service_monitor_labels: extra labels on that ServiceMonitor. Defaults to none.
        overrides: stage-specific values, deep-merged last. Defaults to none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        node_selector: Mapping[str, str],
        device_plugin_config_map: str = DEVICE_PLUGIN_CONFIG_MAP,
        default_device_plugin_config: str = DEFAULT_DEVICE_PLUGIN_CONFIG,
        mig_config_map: str = MIG_PARTED_CONFIG_MAP,
        service_monitor: bool = True,
        service_monitor_labels: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.release = HelmAddon(
            self,
            "Release",
            cluster=cluster,
            chart=CHART,
            namespace=NAMESPACE,
            values=gpu_operator_values(
                node_selector=node_selector,
                device_plugin_config_map=device_plugin_config_map,
                default_device_plugin_config=default_device_plugin_config,
                mig_config_map=mig_config_map,
                service_monitor=service_monitor,
                service_monitor_labels=service_monitor_labels,
            ),
            overrides=overrides,
        )
