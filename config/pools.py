"""What a node pool's spec means for its nodes: labels, GPU sharing names, capacity.

Plain Python shared by the nodegroups (CDK), the Karpenter NodePools and GPU Operator config
(cdk8s), and the checks: a pool's facts are derived here once.
"""

from __future__ import annotations

from typing import Final

from config.catalog import INSTANCE_TYPES
from config.model import Mig, NodePoolConfig, TimeSlicing

POOL_LABEL: Final = "ml-platform/pool"
# The single-valued label the seed's workloads select on (a node carries one value: its pool's first type).
WORKLOAD_TYPE_LABEL: Final = "workload-type"
# One boolean label per workload type a pool serves, so a node can offer several types at once.
WORKLOAD_TYPE_PREFIX: Final = "workload-type.ml-platform.io"
DEVICE_PLUGIN_CONFIG_LABEL: Final = "nvidia.com/device-plugin.config"
MIG_CONFIG_LABEL: Final = "nvidia.com/mig.config"


def workload_label(workload_type: str) -> str:
    """Return the label key a pod selects to land on a pool serving ``workload_type``."""
    return f"{WORKLOAD_TYPE_PREFIX}/{workload_type}"


def device_plugin_config_name(pool: NodePoolConfig) -> str:
    """Return the GPU Operator device-plugin config a time-sliced pool's nodes use (the pool's name)."""
    return pool.name


def node_labels(pool: NodePoolConfig) -> dict[str, str]:
    """Return the labels every node of ``pool`` carries, whoever launches it."""
    labels = {POOL_LABEL: pool.name, WORKLOAD_TYPE_LABEL: pool.workload_types[0]}
    labels.update({workload_label(t): "true" for t in pool.workload_types})
    if isinstance(pool.gpu_sharing, TimeSlicing):
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = device_plugin_config_name(pool)
    if isinstance(pool.gpu_sharing, Mig):
        labels[MIG_CONFIG_LABEL] = pool.gpu_sharing.layout
    return labels


def gpus_per_node(pool: NodePoolConfig) -> int:
    """Return the physical GPUs of the pool's largest instance type (0 for CPU pools)."""
    return max(INSTANCE_TYPES[t].gpu_count for t in pool.instance_types)
