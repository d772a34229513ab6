"""KarpenterPoolsChart: the prod pools as Karpenter v1 objects, field by field and against the CRDs."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import cdk8s
import jsonschema
import pytest
import yaml

from config.loader import load_stage
from config.model import NodePoolConfig, Taint
from config.pools import device_plugin_config_name
from k8s_charts.karpenter_pools import (
    AMI_ALIAS,
    KarpenterPoolsChart,
    pool_limits,
    root_volume_gib,
    timesliced_capacity,
)
from tests.support.k8s_reference import validate_custom_resource

REPO = Path(__file__).resolve().parents[2]
PROD = load_stage(REPO / "config" / "prod.yaml")
POOLS = {p.name: p for p in PROD.cluster.node_pools}
CHART_ARGS: dict[str, Any] = {
    "cluster_name": "ml-platform-prod",
    "node_role_name": "ml-platform-prod-karpenter-node",
    "discovery_tag": "ml-platform-prod",
    "kubernetes_version": PROD.cluster.kubernetes_version,
}
CRD_FILES = {
    ("karpenter.sh/v1", "NodePool"): "crds/karpenter/v1.14.1/karpenter.sh_nodepools.yaml",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): "crds/karpenter/v1.14.1/karpenter.k8s.aws_ec2nodeclasses.yaml",
}


def synth(pools: list[NodePoolConfig], **overrides: Any) -> list[dict[str, Any]]:
    chart = KarpenterPoolsChart(cdk8s.Testing.app(), "karpenter-pools", pools=pools, **{**CHART_ARGS, **overrides})
    manifests: list[dict[str, Any]] = cdk8s.Testing.synth(chart)
    return manifests


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def requirement(node_pool: dict[str, Any], key: str) -> dict[str, Any]:
    reqs: list[dict[str, Any]] = [r for r in node_pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    assert len(reqs) == 1, f"expected one requirement on {key}, found {reqs}"
    return reqs[0]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return synth(list(PROD.cluster.node_pools))


# -- which pools become objects ----------------------------------------------------------------------


def test_only_karpenter_pools_become_objects(manifests: list[dict[str, Any]]) -> None:
    names = sorted((m["kind"], m["metadata"]["name"]) for m in manifests)
    karpenter = ["a100-timeslice", "cpu-inference", "h100-timeslice", "memory-optimized"]
    assert names == sorted([("EC2NodeClass", n) for n in karpenter] + [("NodePool", n) for n in karpenter])


@pytest.mark.parametrize("name", ["system", "a100-mig", "t4-inference"])
def test_no_objects_for_nodegroup_pools(manifests: list[dict[str, Any]], name: str) -> None:
    assert POOLS[name].provisioner == "nodegroup"
    assert [m for m in manifests if m["metadata"]["name"] == name] == []


def test_api_versions(manifests: list[dict[str, Any]]) -> None:
    for m in manifests:
        expected = "karpenter.sh/v1" if m["kind"] == "NodePool" else "karpenter.k8s.aws/v1"
        assert m["apiVersion"] == expected


# -- NodePools ---------------------------------------------------------------------------------------


def test_a100_timeslice_node_pool(manifests: list[dict[str, Any]]) -> None:
    np = find(manifests, "NodePool", "a100-timeslice")
    template = np["spec"]["template"]
    assert requirement(np, "node.kubernetes.io/instance-type") == {
        "key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p4d.24xlarge"],
    }  # fmt: skip
    assert requirement(np, "workload-type") == {
        "key": "workload-type",
        "operator": "In",
        "values": ["research", "training", "development", "batch-inference"],
    }
    assert requirement(np, "karpenter.sh/capacity-type")["values"] == ["on-demand"]
    assert requirement(np, "kubernetes.io/arch")["values"] == ["amd64"]
    assert template["spec"]["taints"] == [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
    assert template["metadata"]["labels"] == {
        "ml-platform/pool": "a100-timeslice",
        "nvidia.com/device-plugin.config": "a100-timeslice",
        "workload-type.ml-platform.io/research": "true",
        "workload-type.ml-platform.io/training": "true",
        "workload-type.ml-platform.io/development": "true",
        "workload-type.ml-platform.io/batch-inference": "true",
    }
    assert "workload-type" not in template["metadata"]["labels"]
    assert np["spec"]["limits"]["nvidia.com/gpu"] == "32"
    assert np["spec"]["limits"] == {"cpu": "384", "memory": "4608Gi", "nvidia.com/gpu": "32"}
    assert template["spec"]["nodeClassRef"] == {
        "group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "a100-timeslice",
    }  # fmt: skip
    assert template["spec"]["expireAfter"] == "720h"
    assert np["spec"]["disruption"] == {
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": "5m",
        "budgets": [{"nodes": "10%"}],
    }


def test_device_plugin_label_is_the_device_plugin_config_name(manifests: list[dict[str, Any]]) -> None:
    for name in ("a100-timeslice", "h100-timeslice"):
        labels = find(manifests, "NodePool", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["nvidia.com/device-plugin.config"] == device_plugin_config_name(POOLS[name])


def test_h100_timeslice_node_pool(manifests: list[dict[str, Any]]) -> None:
    np = find(manifests, "NodePool", "h100-timeslice")
    assert requirement(np, "karpenter.sh/capacity-type")["values"] == ["on-demand", "spot"]
    assert requirement(np, "node.kubernetes.io/instance-type")["values"] == ["p5.48xlarge"]
    assert np["spec"]["template"]["spec"]["taints"] == [{"key": "gpu", "value": "h100", "effect": "NoSchedule"}]
    assert np["spec"]["limits"] == {"cpu": "768", "memory": "8192Gi", "nvidia.com/gpu": "32"}
    assert np["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"


def test_cpu_inference_node_pool(manifests: list[dict[str, Any]]) -> None:
    np = find(manifests, "NodePool", "cpu-inference")
    assert requirement(np, "karpenter.sh/capacity-type")["values"] == ["spot"]
    assert requirement(np, "node.kubernetes.io/instance-type")["values"] == [
        "m5.2xlarge", "m5.4xlarge", "r5.2xlarge", "r5.4xlarge",
    ]  # fmt: skip
    assert requirement(np, "workload-type")["values"] == ["cpu-inference"]
    assert np["spec"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert "taints" not in np["spec"]["template"]["spec"]
    assert np["spec"]["template"]["metadata"]["labels"] == {
        "ml-platform/pool": "cpu-inference",
        "workload-type.ml-platform.io/cpu-inference": "true",
    }
    # cpu from the 16-vCPU types, memory from r5.4xlarge (128 GiB); no GPU limit on a CPU pool.
    assert np["spec"]["limits"] == {"cpu": "320", "memory": "2560Gi"}


def test_production_inference_pool_is_not_disrupted_during_peak() -> None:
    pool = POOLS["cpu-inference"].model_copy(update={"workload_types": ("online-inference", "cpu-inference")})
    np = find(synth([pool]), "NodePool", "cpu-inference")
    assert np["spec"]["disruption"]["budgets"] == [
        {"nodes": "10%"},
        {"nodes": "0", "schedule": "0 8 * * *", "duration": "14h"},
    ]


def test_taint_without_value_omits_the_value() -> None:
    pool = NodePoolConfig(
        name="plain",
        provisioner="karpenter",
        instance_types=("m5.xlarge",),
        workload_types=("batch",),
        taints=(Taint(key="dedicated", effect="NoExecute"),),
        max_nodes=2,
    )
    np = find(synth([pool]), "NodePool", "plain")
    assert np["spec"]["template"]["spec"]["taints"] == [{"key": "dedicated", "effect": "NoExecute"}]


# -- EC2NodeClasses ----------------------------------------------------------------------------------


def test_ec2_node_class_security_and_discovery(manifests: list[dict[str, Any]]) -> None:
    nc = find(manifests, "EC2NodeClass", "cpu-inference")["spec"]
    assert nc["amiSelectorTerms"] == [{"alias": AMI_ALIAS}]
    assert "amiFamily" not in nc
    assert nc["role"] == "ml-platform-prod-karpenter-node"
    discovery = [{"tags": {"karpenter.sh/discovery": "ml-platform-prod"}}]
    assert nc["subnetSelectorTerms"] == discovery
    assert nc["securityGroupSelectorTerms"] == discovery
    assert nc["metadataOptions"]["httpTokens"] == "required"
    assert nc["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert nc["blockDeviceMappings"] == [
        {
            "deviceName": "/dev/xvda",
            "ebs": {
                "volumeSize": "100Gi",
                "volumeType": "gp3",
                "encrypted": True,
                "deleteOnTermination": True,
            },
        }
    ]
    assert nc["tags"]["ml-platform/pool"] == "cpu-inference"


@pytest.mark.parametrize("name", ["a100-timeslice", "h100-timeslice", "cpu-inference", "memory-optimized"])
def test_every_node_class_is_imdsv2_and_encrypted_gp3(manifests: list[dict[str, Any]], name: str) -> None:
    nc = find(manifests, "EC2NodeClass", name)["spec"]
    assert nc["metadataOptions"]["httpTokens"] == "required"
    assert nc["metadataOptions"]["httpPutResponseHopLimit"] == 1
    (root,) = nc["blockDeviceMappings"]
    assert root["ebs"]["volumeType"] == "gp3"
    assert root["ebs"]["encrypted"] is True


def test_gpu_pools_default_to_a_larger_root_volume(manifests: list[dict[str, Any]]) -> None:
    gpu = find(manifests, "EC2NodeClass", "a100-timeslice")["spec"]["blockDeviceMappings"][0]
    assert gpu["ebs"]["volumeSize"] == "200Gi"
    explicit = POOLS["a100-timeslice"].model_copy(update={"root_volume_gib": 100})
    assert root_volume_gib(explicit) == 100  # a size set in the stage config is used as given
    assert root_volume_gib(POOLS["memory-optimized"]) == 100


# -- pure functions ----------------------------------------------------------------------------------


def test_pool_limits() -> None:
    assert pool_limits(POOLS["a100-timeslice"]) == {"cpu": "384", "memory": "4608Gi", "nvidia.com/gpu": "32"}
    assert pool_limits(POOLS["memory-optimized"]) == {"cpu": "320", "memory": "2560Gi"}


def test_timesliced_capacity() -> None:
    assert timesliced_capacity(POOLS["a100-timeslice"]) == 4 * 8 * 3
    assert timesliced_capacity(POOLS["h100-timeslice"]) == 4 * 8 * 3
    assert timesliced_capacity(POOLS["t4-inference"]) == 30  # no sharing: one per GPU
    assert timesliced_capacity(POOLS["cpu-inference"]) == 0


def test_fails_when_asking_time_sliced_capacity_of_a_mig_pool() -> None:
    with pytest.raises(ValueError, match="a100-mig partitions its GPUs with MIG"):
        timesliced_capacity(POOLS["a100-mig"])


# -- errors ------------------------------------------------------------------------------------------


def test_fails_when_ami_alias_is_latest() -> None:
    with pytest.raises(ValueError, match=r"ami_alias 'al2023@latest' is not a pinned AL2023 release"):
        synth([], ami_alias="al2023@latest")


def test_fails_when_pinned_ami_is_not_published_for_the_kubernetes_version() -> None:
    with pytest.raises(ValueError, match=r"is not published for Kubernetes 1\.99: bump AMI_ALIAS"):
        synth([], kubernetes_version="1.99")


def test_fails_when_node_role_is_an_arn() -> None:
    with pytest.raises(ValueError, match="is an ARN: pass the role's name"):
        synth([], node_role_name="arn:aws:iam::333333333333:role/node")


def test_fails_when_a_mig_pool_is_karpenter_provisioned() -> None:
    pool = POOLS["a100-mig"].model_copy(update={"provisioner": "karpenter"})
    with pytest.raises(ValueError, match="a100-mig: a MIG pool must be a nodegroup"):
        synth([pool])


# -- CRD schemas -------------------------------------------------------------------------------------


def _reference_dir() -> Path:
    path = Path(os.environ.get("K8S_REFERENCE", REPO.parent / "shared" / "k8s-reference"))
    if not path.is_dir():
        pytest.fail(f"k8s reference data not found at {path}: set K8S_REFERENCE to the k8s-reference directory")
    return path


def _strip_kubernetes_extensions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_kubernetes_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [_strip_kubernetes_extensions(v) for v in node]
    return node


@cache
def _schema(api_version: str, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((_reference_dir() / CRD_FILES[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert entry["served"], f"{kind} {api_version} is not served by the pinned CRD"
    schema: dict[str, Any] = _strip_kubernetes_extensions(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
    return schema


def _validate(obj: dict[str, Any]) -> None:
    errors = validate_custom_resource(obj)
    assert not errors, "\n".join(errors)


def _all_manifests(prod: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from prod
    # The shapes prod does not exercise: a peak budget and a taint without a value.
    peak = POOLS["cpu-inference"].model_copy(update={"workload_types": ("production-inference",)})
    bare = POOLS["memory-optimized"].model_copy(update={"taints": (Taint(key="dedicated"),)})
    yield from synth([peak, bare])


def test_every_object_matches_its_crd_schema(manifests: list[dict[str, Any]]) -> None:
    for obj in _all_manifests(manifests):
        _validate(obj)


def test_schema_check_catches_a_bad_object(manifests: list[dict[str, Any]]) -> None:
    bad = copy.deepcopy(find(manifests, "NodePool", "a100-timeslice"))
    bad["spec"]["disruption"]["consolidationPolicy"] = "Sometimes"
    bad["spec"]["template"]["spec"]["taints"][0]["value"] = ""
    with pytest.raises((AssertionError, ValueError, jsonschema.ValidationError)):
        _validate(bad)


def test_label_keys_avoid_karpenter_restricted_domains(manifests: list[dict[str, Any]]) -> None:
    # The CRD enforces these with CEL rules (x-kubernetes-validations), which the JSON Schema check skips.
    allowed = {"karpenter.sh/capacity-type"}
    for np in (m for m in manifests if m["kind"] == "NodePool"):
        template = np["spec"]["template"]
        keys = set(template["metadata"]["labels"]) | {r["key"] for r in template["spec"]["requirements"]}
        for key in keys - allowed:
            domain = key.split("/")[0] if "/" in key else ""
            assert not domain.endswith(("karpenter.sh", "karpenter.k8s.aws")), key
            assert key != "kubernetes.io/hostname", key
        for budget in np["spec"]["disruption"]["budgets"]:
            assert ("schedule" in budget) == ("duration" in budget), budget
