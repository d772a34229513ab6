"""GPU Operator: the prod pools' sharing ConfigMaps, MIG arithmetic and the release's Helm values."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml

from config.loader import load_stage
from config.model import Mig, NodePoolConfig
from config.pools import DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_LABEL, node_labels
from k8s_charts.gpu_sharing import (
    GpuSharingChart,
    device_plugin_config,
    mig_capacity,
    mig_devices_per_node,
    mig_parted_config,
)
from platform_constructs.gpu_operator import CHART, NAMESPACE, gpu_operator_values
from tests.support.k8s_reference import (
    pinned_chart_versions,
    require_reference_dir,
    validate_helm_values,
    validate_object,
)

REPO = Path(__file__).resolve().parents[2]
PROD = load_stage(REPO / "config" / "prod.yaml")
POOLS = {p.name: p for p in PROD.cluster.node_pools}
LAYOUTS = PROD.cluster.mig_layouts
SYSTEM = {"ml-platform/pool": "system"}
GPU_TOLERATION = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}


def synth(pools: list[NodePoolConfig], layouts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    chart = GpuSharingChart(cdk8s.Testing.app(), "gpu-sharing", namespace=NAMESPACE, pools=pools, mig_layouts=layouts)
    manifests: list[dict[str, Any]] = cdk8s.Testing.synth(chart)
    return manifests


def config_map(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one ConfigMap {name}, found {len(found)}"
    return found[0]


def tolerates(tolerations: list[dict[str, Any]], key: str, value: str, effect: str) -> bool:
    for tol in tolerations:
        if tol.get("effect") not in (None, "", effect):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", key):
            return True
        if tol.get("key") == key and tol.get("operator", "Equal") == "Equal" and tol.get("value", "") == value:
            return True
    return False


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return synth(list(PROD.cluster.node_pools), LAYOUTS)


@pytest.fixture(scope="module")
def plugin_configs() -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(doc) for name, doc in device_plugin_config(PROD.cluster.node_pools).items()}


@pytest.fixture(scope="module")
def mig_configs() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(mig_parted_config(LAYOUTS, PROD.cluster.node_pools))
    return parsed


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return gpu_operator_values(node_selector=SYSTEM)


# -- device-plugin configs ---------------------------------------------------------------------------


def test_entries_for_default_and_every_sharing_pool(plugin_configs: dict[str, dict[str, Any]]) -> None:
    # t4-inference has GPUs but does not share them: it runs the default entry.
    assert sorted(plugin_configs) == ["a100-mig", "a100-timeslice", "default", "h100-timeslice"]


@pytest.mark.parametrize("name", ["a100-timeslice", "h100-timeslice"])
def test_time_slicing_config(plugin_configs: dict[str, dict[str, Any]], name: str) -> None:
    assert plugin_configs[name] == {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": 3}],
            }
        },
    }


def test_default_config_does_not_share(plugin_configs: dict[str, dict[str, Any]]) -> None:
    assert plugin_configs["default"] == {"version": "v1", "flags": {"migStrategy": "none"}}


def test_mig_pool_config_is_mixed(plugin_configs: dict[str, dict[str, Any]]) -> None:
    assert plugin_configs["a100-mig"] == {"version": "v1", "flags": {"migStrategy": "mixed"}}


@pytest.mark.parametrize("name", ["a100-timeslice", "h100-timeslice"])
def test_node_label_names_an_entry(plugin_configs: dict[str, dict[str, Any]], name: str) -> None:
    assert node_labels(POOLS[name])[DEVICE_PLUGIN_CONFIG_LABEL] == name
    assert name in plugin_configs


def test_replicas_follow_the_pool() -> None:
    pool = NodePoolConfig.model_validate(
        {**POOLS["h100-timeslice"].model_dump(), "gpu_sharing": {"mode": "time-slicing", "replicas": 7}}
    )
    config = yaml.safe_load(device_plugin_config([pool])["h100-timeslice"])
    assert config["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 7}]


def test_fails_when_a_sharing_pool_is_named_default() -> None:
    pool = NodePoolConfig.model_validate({**POOLS["a100-timeslice"].model_dump(), "name": "default"})
    with pytest.raises(ValueError, match=r"node pool default: .*rename the pool"):
        device_plugin_config([pool])


# -- mig-parted config -------------------------------------------------------------------------------


def test_mig_parted_version_and_layouts(mig_configs: dict[str, Any]) -> None:
    assert mig_configs["version"] == "v1"
    assert sorted(mig_configs["mig-configs"]) == ["all-disabled", "balanced"]


def test_balanced_layout(mig_configs: dict[str, Any]) -> None:
    assert mig_configs["mig-configs"]["balanced"] == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}}
    ]


def test_all_disabled_layout(mig_configs: dict[str, Any]) -> None:
    assert mig_configs["mig-configs"]["all-disabled"] == [{"devices": "all", "mig-enabled": False}]


def test_mig_node_label_names_a_layout(mig_configs: dict[str, Any]) -> None:
    assert node_labels(POOLS["a100-mig"])[MIG_CONFIG_LABEL] == "balanced"
    assert "balanced" in mig_configs["mig-configs"]


def test_unused_layouts_are_left_out() -> None:
    layouts = {**LAYOUTS, "all-1g": {"1g.10gb": 7}}
    parsed = yaml.safe_load(mig_parted_config(layouts, PROD.cluster.node_pools))
    assert sorted(parsed["mig-configs"]) == ["all-disabled", "balanced"]


def test_fails_when_layout_is_missing() -> None:
    with pytest.raises(ValueError, match="node pool a100-mig: mig layout 'balanced' is not in mig_layouts"):
        mig_parted_config({}, PROD.cluster.node_pools)


def test_fails_when_layout_is_named_all_disabled() -> None:
    pool = POOLS["a100-mig"].model_copy(update={"gpu_sharing": Mig(mode="mig", layout="all-disabled")})
    with pytest.raises(ValueError, match="'all-disabled' is reserved"):
        mig_parted_config({"all-disabled": {"7g.80gb": 1}}, [pool])


# -- MIG capacity ------------------------------------------------------------------------------------


def test_mig_devices_per_node_a100_mig() -> None:
    # balanced per GPU x 8 A100-80GB GPUs of a p4de.24xlarge.
    assert mig_devices_per_node(POOLS["a100-mig"], LAYOUTS) == {"1g.10gb": 16, "2g.20gb": 8, "3g.40gb": 8}


def test_mig_capacity_a100_mig() -> None:
    # x max_nodes 4.
    assert mig_capacity(POOLS["a100-mig"], LAYOUTS) == {"1g.10gb": 64, "2g.20gb": 32, "3g.40gb": 32}


@pytest.mark.parametrize("name", ["a100-timeslice", "t4-inference", "system"])
def test_pools_without_mig_offer_no_mig_devices(name: str) -> None:
    assert mig_devices_per_node(POOLS[name], LAYOUTS) == {}
    assert mig_capacity(POOLS[name], LAYOUTS) == {}


# -- the chart ---------------------------------------------------------------------------------------


def test_chart_emits_two_config_maps_in_the_operator_namespace(manifests: list[dict[str, Any]]) -> None:
    assert sorted((m["kind"], m["metadata"]["name"]) for m in manifests) == [
        ("ConfigMap", "device-plugin-config"),
        ("ConfigMap", "mig-parted-config"),
    ]
    assert {m["metadata"]["namespace"] for m in manifests} == {"gpu-operator"}


def test_device_plugin_config_map_data(manifests: list[dict[str, Any]]) -> None:
    data = config_map(manifests, "device-plugin-config")["data"]
    assert data == device_plugin_config(PROD.cluster.node_pools)
    assert yaml.safe_load(data["a100-timeslice"])["sharing"]["timeSlicing"]["resources"][0]["replicas"] == 3


def test_mig_parted_config_map_data(manifests: list[dict[str, Any]]) -> None:
    data = config_map(manifests, "mig-parted-config")["data"]
    assert list(data) == ["config.yaml"]
    assert yaml.safe_load(data["config.yaml"])["mig-configs"]["balanced"][0]["mig-devices"] == {
        "1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1,
    }  # fmt: skip


def test_objects_validate(manifests: list[dict[str, Any]]) -> None:
    require_reference_dir()
    for obj in manifests:
        assert validate_object(obj, PROD.cluster.kubernetes_version) == []


def test_fails_when_namespace_is_empty() -> None:
    with pytest.raises(ValueError, match="namespace is empty"):
        GpuSharingChart(cdk8s.Testing.app(), "gpu-sharing", namespace="", pools=[], mig_layouts={})


# -- Helm values -------------------------------------------------------------------------------------


def test_chart_is_the_pinned_reference_version() -> None:
    require_reference_dir()
    assert CHART.version == pinned_chart_versions()["gpu-operator"] == "v26.7.0"
    assert (CHART.repository, CHART.chart) == ("https://helm.ngc.nvidia.com/nvidia", "gpu-operator")
    assert NAMESPACE == "gpu-operator"


def test_values_pass_the_pinned_chart(values: dict[str, Any]) -> None:
    require_reference_dir()
    assert validate_helm_values("gpu-operator", "v26.7.0", values) == []


def test_misspelled_values_key_is_caught(values: dict[str, Any]) -> None:
    require_reference_dir()
    bad = copy.deepcopy(values)
    bad["devicePlugin"]["confg"] = bad["devicePlugin"].pop("config")
    errors = validate_helm_values("gpu-operator", "v26.7.0", bad)
    assert len(errors) == 1
    assert "devicePlugin.confg does not exist" in errors[0]
    assert "did you mean devicePlugin.config?" in errors[0]


def test_misspelled_subchart_key_is_caught(values: dict[str, Any]) -> None:
    require_reference_dir()
    bad = copy.deepcopy(values)
    bad["node-feature-discovery"]["workr"] = bad["node-feature-discovery"].pop("worker")
    errors = validate_helm_values("gpu-operator", "v26.7.0", bad)
    assert len(errors) == 1
    assert "node-feature-discovery.workr does not exist" in errors[0]


def test_mig_strategy_is_mixed(values: dict[str, Any]) -> None:
    assert values["mig"] == {"strategy": "mixed"}


def test_driver_and_toolkit_come_from_the_ami(values: dict[str, Any]) -> None:
    assert values["driver"] == {"enabled": False}
    assert values["toolkit"] == {"enabled": False}


def test_dcgm_exporter_and_service_monitor(values: dict[str, Any]) -> None:
    assert values["dcgmExporter"] == {"enabled": True, "serviceMonitor": {"enabled": True}}


def test_service_monitor_can_be_turned_off_and_labelled() -> None:
    off = gpu_operator_values(node_selector=SYSTEM, service_monitor=False)
    assert off["dcgmExporter"]["serviceMonitor"] == {"enabled": False}
    labelled = gpu_operator_values(node_selector=SYSTEM, service_monitor_labels={"release": "monitoring"})
    assert labelled["dcgmExporter"]["serviceMonitor"] == {
        "enabled": True, "additionalLabels": {"release": "monitoring"},
    }  # fmt: skip
    require_reference_dir()
    assert validate_helm_values("gpu-operator", "v26.7.0", labelled) == []


def test_device_plugin_and_mig_manager_use_the_chart_config_maps(values: dict[str, Any]) -> None:
    assert values["devicePlugin"] == {
        "enabled": True, "config": {"name": "device-plugin-config", "default": "default"},
    }  # fmt: skip
    assert values["migManager"] == {
        "enabled": True, "config": {"name": "mig-parted-config", "default": "all-disabled"},
    }  # fmt: skip


def test_default_entry_exists_in_the_config_map(values: dict[str, Any]) -> None:
    assert values["devicePlugin"]["config"]["default"] in device_plugin_config(PROD.cluster.node_pools)


def test_operator_and_nfd_deployments_run_on_the_system_pool(values: dict[str, Any]) -> None:
    assert values["operator"] == {"nodeSelector": {"ml-platform/pool": "system"}}
    nfd = values["node-feature-discovery"]
    assert nfd["master"] == {"nodeSelector": {"ml-platform/pool": "system"}}
    assert nfd["gc"] == {"nodeSelector": {"ml-platform/pool": "system"}}


def test_operands_and_nfd_worker_tolerate_gpu_taints(values: dict[str, Any]) -> None:
    nfd_worker = values["node-feature-discovery"]["worker"]
    for tolerations in (values["daemonsets"]["tolerations"], nfd_worker["tolerations"]):
        assert GPU_TOLERATION in tolerations
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
        assert len(tolerations) == 2


@pytest.mark.parametrize("name", ["a100-timeslice", "a100-mig", "h100-timeslice"])
def test_tolerations_cover_every_gpu_pool_taint(values: dict[str, Any], name: str) -> None:
    taints = POOLS[name].taints
    assert taints, f"{name} is expected to be tainted"
    for taint in taints:
        for tolerations in (
            values["daemonsets"]["tolerations"],
            values["node-feature-discovery"]["worker"]["tolerations"],
        ):
            assert tolerates(tolerations, taint.key, taint.value, taint.effect)


def test_fails_when_node_selector_is_empty() -> None:
    with pytest.raises(ValueError, match="node_selector is empty"):
        gpu_operator_values(node_selector={})


def test_fails_when_config_map_name_is_empty() -> None:
    with pytest.raises(ValueError, match="mig_config_map is empty"):
        gpu_operator_values(node_selector=SYSTEM, mig_config_map="")
