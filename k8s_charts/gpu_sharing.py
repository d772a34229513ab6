"""Define the GPU Operator's sharing config: device-plugin configs per pool and the MIG layouts (mig-parted).

Two ConfigMaps in the GPU Operator's namespace, both derived from the node pools:

- ``device-plugin-config``: one named device-plugin config per pool that shares its GPUs. A node picks
  its entry by the ``nvidia.com/device-plugin.config`` label (``config.pools.node_labels`` sets it to
  ``device_plugin_config_name(pool)`` on time-sliced pools); a GPU node without the label gets the
  ``default`` entry (whole GPUs, no sharing). The operator points at this ConfigMap through
  ``devicePlugin.config.name`` / ``devicePlugin.config.default`` (see platform_constructs/gpu_operator.py).
- ``mig-parted-config`` (key ``config.yaml``): the MIG layouts the MIG manager applies. A node picks its
  layout by the ``nvidia.com/mig.config`` label (the pool's ``gpu_sharing.layout``); MIG-capable GPUs
  without the label (the A100/H100 time-sliced pools) get ``all-disabled``, the operator's default.

MIG strategy, per node and cluster-wide (GPU Operator v26.7.0): the ClusterPolicy's ``mig.strategy``
(Helm value ``mig.strategy``) is not a default for the per-node configs but an override. When it is set,
the operator puts ``MIG_STRATEGY=<strategy>`` in the environment of the device plugin and GPU Feature
Discovery on every GPU node (``applyMIGConfiguration`` in controllers/object_controls.go), and the device
plugin ranks command line, then environment, above its config file (``NewConfig`` in k8s-device-plugin's
api/config/v1), so ``flags.migStrategy`` in the entries below is ignored. Only with ``mig.strategy``
unset does each node's entry choose. The platform sets ``mig.strategy: mixed`` for the whole cluster,
which is what the MIG pool needs: its nodes carry no device-plugin label and would otherwise run the
``default`` entry. Mixed is safe elsewhere: GPUs with MIG disabled are advertised as whole
``nvidia.com/gpu`` and time-slicing applies to them as usual. The entries still state the strategy
their pool needs (``none`` for whole or time-sliced GPUs, ``mixed`` for MIG), so that they stay right
if the cluster-wide override is ever removed.

The mig-parted config holds only the layouts some pool uses, plus ``all-disabled``: those are the
layouts the stage config has checked against the pool's GPU model (``ClusterConfig._check_mig``); an
unused layout was never checked and would fail on the node that is labelled with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import cdk8s
import constructs
import yaml

from config.model import Mig, NodePoolConfig, TimeSlicing
from config.pools import device_plugin_config_name, gpus_per_node
from k8s_charts.objects import api_object

DEVICE_PLUGIN_CONFIG_MAP: Final = "device-plugin-config"
# The entry a GPU node without the nvidia.com/device-plugin.config label runs with.
DEFAULT_DEVICE_PLUGIN_CONFIG: Final = "default"
MIG_PARTED_CONFIG_MAP: Final = "mig-parted-config"
# The MIG manager reads the mig-parted config from this key of its ConfigMap (and no other).
MIG_PARTED_CONFIG_KEY: Final = "config.yaml"
# The layout the MIG manager applies to MIG-capable GPUs whose node has no nvidia.com/mig.config label;
# the ClusterPolicy CRD accepts only this name (or "") for migManager.config.default.
MIG_DISABLED_LAYOUT: Final = "all-disabled"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# The config-file format version of the device plugin and of mig-parted.
_CONFIG_VERSION: Final = "v1"

# Layout name -> MIG profile -> devices per GPU (the stage's cluster.mig_layouts).
MigLayouts: TypeAlias = Mapping[str, Mapping[str, int]]


def device_plugin_config(pools: Sequence[NodePoolConfig]) -> dict[str, str]:
    """Return the device-plugin ConfigMap data: config name -> the config as a YAML document.

    ``default`` (whole GPUs) is always present. Every time-sliced pool adds an entry named
    ``device_plugin_config_name(pool)`` that advertises each GPU as ``replicas`` ``nvidia.com/gpu``;
    every MIG pool adds one in the mixed strategy. Pools that do not share their GPUs, and CPU pools,
    use ``default`` and add nothing.
    """
    whole_gpus = {"version": _CONFIG_VERSION, "flags": {"migStrategy": "none"}}
    data = {DEFAULT_DEVICE_PLUGIN_CONFIG: _dump(whole_gpus)}
    for pool in pools:
        sharing = pool.gpu_sharing
        if isinstance(sharing, TimeSlicing):
            config = {
                "version": _CONFIG_VERSION,
                "flags": {"migStrategy": "none"},
                "sharing": {
                    "timeSlicing": {
                        # Keep the resource name nvidia.com/gpu: workloads and quotas ask for it, and
                        # Karpenter knows no other (it sizes GPU nodes by nvidia.com/gpu).
                        "renameByDefault": False,
                        # A replica is a time slice, not memory or compute: a pod asking for two would
                        # get two slices of what may be the same GPU, so refuse it.
                        "failRequestsGreaterThanOne": True,
                        "resources": [{"name": GPU_RESOURCE, "replicas": sharing.replicas}],
                    }
                },
            }
        elif isinstance(sharing, Mig):
            config = {"version": _CONFIG_VERSION, "flags": {"migStrategy": "mixed"}}
        else:
            continue
        name = device_plugin_config_name(pool)
        if name == DEFAULT_DEVICE_PLUGIN_CONFIG:
            raise ValueError(
                f"node pool {pool.name}: its device-plugin config name {name!r} is the name of the entry for "
                "GPU nodes without a config label: rename the pool"
            )
        if name in data:
            raise ValueError(f"node pool {pool.name}: device-plugin config {name!r} is defined twice")
        data[name] = _dump(config)
    return data


def mig_parted_config(mig_layouts: MigLayouts, pools: Sequence[NodePoolConfig]) -> str:
    """Return the mig-parted config (YAML) with ``all-disabled`` and every layout a MIG pool uses.

    Each layout applies to all GPUs of a node: MIG enabled, and ``mig_layouts[layout]`` devices of each
    profile per GPU. Layouts no pool uses are left out (see the module docstring).
    """
    configs: dict[str, list[dict[str, Any]]] = {
        MIG_DISABLED_LAYOUT: [{"devices": "all", "mig-enabled": False}],
    }
    for pool in pools:
        if not isinstance(pool.gpu_sharing, Mig):
            continue
        layout = pool.gpu_sharing.layout
        if layout == MIG_DISABLED_LAYOUT:
            raise ValueError(
                f"node pool {pool.name}: mig layout {layout!r} is reserved for GPUs without MIG: "
                "name the layout differently"
            )
        devices = _layout(pool.name, layout, mig_layouts)
        configs[layout] = [{"devices": "all", "mig-enabled": True, "mig-devices": dict(devices)}]
    return _dump({"version": _CONFIG_VERSION, "mig-configs": configs})


def mig_devices_per_node(pool: NodePoolConfig, mig_layouts: MigLayouts) -> dict[str, int]:
    """Return MIG profile -> devices one node of ``pool`` offers: the layout's count x GPUs per node.

    A pool that does not use MIG offers none (an empty map). The device plugin advertises each profile
    as the extended resource ``nvidia.com/mig-<profile>`` (mixed strategy).
    """
    if not isinstance(pool.gpu_sharing, Mig):
        return {}
    gpus = gpus_per_node(pool)
    devices = _layout(pool.name, pool.gpu_sharing.layout, mig_layouts)
    return {profile: count * gpus for profile, count in devices.items()}


def mig_capacity(pool: NodePoolConfig, mig_layouts: MigLayouts) -> dict[str, int]:
    """Return MIG profile -> devices the whole pool offers at ``max_nodes`` (empty for a pool without MIG)."""
    per_node = mig_devices_per_node(pool, mig_layouts)
    return {profile: count * pool.max_nodes for profile, count in per_node.items()}


class GpuSharingChart(cdk8s.Chart):
    """Define the GPU Operator's device-plugin ConfigMap and MIG-layout ConfigMap.

    Both must live in the GPU Operator's namespace, which the operator's Helm release creates: attach
    this chart after the release.

    Args:
        namespace: the GPU Operator's namespace.
        pools: the stage's node pools; pools that share their GPUs get a device-plugin entry, MIG pools
            their layout.
        mig_layouts: layout name -> MIG profile -> devices per GPU (the stage's ``cluster.mig_layouts``).
    """

    def __init__(
        self,
        scope: constructs.Construct,
        construct_id: str,
        *,
        namespace: str,
        pools: Sequence[NodePoolConfig],
        mig_layouts: MigLayouts,
    ) -> None:
        if not namespace:
            raise ValueError("namespace is empty: give the GPU Operator's namespace (gpu-operator)")
        # Compute first, so that a bad pool fails before any construct exists.
        device_plugin_data = device_plugin_config(pools)
        mig_parted_data = {MIG_PARTED_CONFIG_KEY: mig_parted_config(mig_layouts, pools)}
        super().__init__(scope, construct_id, namespace=namespace)
        _config_map(self, DEVICE_PLUGIN_CONFIG_MAP, device_plugin_data)
        _config_map(self, MIG_PARTED_CONFIG_MAP, mig_parted_data)


def _config_map(scope: constructs.Construct, name: str, data: Mapping[str, str]) -> cdk8s.ApiObject:
    return api_object(
        scope,
        name,
        api_version="v1",
        kind="ConfigMap",
        name=name,
        labels={"app.kubernetes.io/part-of": "gpu-operator"},
        body={"data": dict(data)},
    )


def _layout(pool_name: str, layout: str, mig_layouts: MigLayouts) -> Mapping[str, int]:
    devices = mig_layouts.get(layout)
    if devices is None:
        raise ValueError(
            f"node pool {pool_name}: mig layout {layout!r} is not in mig_layouts "
            f"(defined: {', '.join(mig_layouts) or 'none'})"
        )
    if not devices:
        raise ValueError(f"node pool {pool_name}: mig layout {layout!r} lists no MIG devices")
    return devices


def _dump(document: Mapping[str, Any]) -> str:
    # Key order as written (version first), block style: the ConfigMap reads like NVIDIA's examples.
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
