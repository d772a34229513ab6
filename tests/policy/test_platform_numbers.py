"""The platform's numbers, read from the synthesized app (what CloudFormation would apply), not from a chart."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.assembly import CloudAssembly
from tests.support.deployed import DeployedObject, deployed_objects, helm_releases


@pytest.fixture(scope="module")
def prod(assembly: CloudAssembly) -> list[DeployedObject]:
    return [d for d in deployed_objects(assembly) if d.stage == "Prod"]


def find(objects: list[DeployedObject], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [d.obj for d in objects if d.obj["kind"] == kind and d.obj["metadata"]["name"] == name]
    return obj


def test_priority_classes_exactly(prod: list[DeployedObject]) -> None:
    values = {d.obj["metadata"]["name"]: d.obj["value"] for d in prod if d.obj["kind"] == "PriorityClass"}
    assert values == {
        "production-inference": 1000,
        "critical-agents": 900,
        "training": 500,
        "research": 100,
        "development": 50,
    }


def test_resource_quotas_exactly(prod: list[DeployedObject]) -> None:
    quotas = {d.obj["metadata"]["namespace"]: d.obj["spec"]["hard"] for d in prod if d.obj["kind"] == "ResourceQuota"}
    expected = {"training": ("20", "160", "640Gi"), "inference": ("10", "80", "800Gi"), "agentic": ("8", "64", "320Gi"),
                "mlops": ("0", "32", "64Gi")}  # fmt: skip
    for namespace, (gpus, cpu, memory) in expected.items():
        hard = quotas[namespace]
        assert (hard["requests.nvidia.com/gpu"], hard["requests.cpu"], hard["requests.memory"]) == (gpus, cpu, memory)
        # MIG slices count against the same GPU share: a namespace cannot escape its quota through them.
        assert {k for k in hard if k.startswith("requests.nvidia.com/mig-")} == {
            "requests.nvidia.com/mig-1g.10gb",
            "requests.nvidia.com/mig-2g.20gb",
            "requests.nvidia.com/mig-3g.40gb",
        }


def test_time_slicing_configs_have_three_replicas(prod: list[DeployedObject]) -> None:
    data = find(prod, "ConfigMap", "device-plugin-config")["data"]
    for pool in ("a100-timeslice", "h100-timeslice"):
        config = yaml.safe_load(data[pool])
        sharing = config["sharing"]["timeSlicing"]
        assert config["version"] == "v1"
        assert sharing["renameByDefault"] is False and sharing["failRequestsGreaterThanOne"] is True
        assert sharing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 3}]


def test_mig_layout_and_strategy(prod: list[DeployedObject], assembly: CloudAssembly) -> None:
    layouts = yaml.safe_load(find(prod, "ConfigMap", "mig-parted-config")["data"]["config.yaml"])["mig-configs"]
    (balanced,) = layouts["balanced"]
    assert balanced["mig-enabled"] is True
    assert balanced["mig-devices"] == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    (operator,) = [r for r in helm_releases(assembly) if r.stage == "Prod" and r.chart == "gpu-operator"]
    assert operator.values["mig"]["strategy"] == "mixed"
    assert operator.values["driver"]["enabled"] is False and operator.values["toolkit"]["enabled"] is False
    assert operator.values["dcgmExporter"]["serviceMonitor"]["enabled"] is True
