"""Stage config: the shipped files are valid, and every kind of bad input fails with a clear message."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loader import CONFIG_DIR, ConfigError, load_stage, load_stages

Mutation = Callable[[dict[str, Any]], None]


def _base(stage: str = "prod") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIG_DIR / f"{stage}.yaml").read_text())
    return data


def _write(tmp_path: Path, data: dict[str, Any], name: str | None = None) -> Path:
    path = tmp_path / f"{name or data['stage']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _pool(data: dict[str, Any], name: str) -> dict[str, Any]:
    pool: dict[str, Any] = next(p for p in data["cluster"]["node_pools"] if p["name"] == name)
    return pool


def test_shipped_stages_are_valid_and_ordered() -> None:
    configs = load_stages()
    assert [c.stage for c in configs] == ["dev", "staging", "prod"]
    prod = configs[-1]
    assert prod.network.nat_gateways == len(prod.availability_zones) == 3
    assert prod.data.rds.multi_az and prod.data.cache.replicas_per_shard >= 1
    # The production cache holds about 500 GB (shards x node memory less the reserved 25%).
    assert prod.data.cache.usable_memory_gib >= prod.data.cache.dataset_gib == 500


def test_selecting_a_stage_builds_only_that_stage() -> None:
    assert [c.stage for c in load_stages(["dev"])] == ["dev"]


def test_fails_when_an_unknown_stage_is_selected() -> None:
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) qa: the stages are dev, prod, staging"):
        load_stages(["qa"])


def test_a_new_stage_is_one_yaml_file(tmp_path: Path) -> None:
    data = _base("staging")
    data["stage"] = "perf"
    data["account"] = "444444444444"
    _write(tmp_path, data)
    (stage,) = load_stages(config_dir=tmp_path)
    assert stage.stage == "perf" and stage.tags["stage"] == "perf"


# Each bad input: (what is wrong, how to break prod.yaml, the field and the message expected).
BAD_INPUTS: list[tuple[str, Mutation, str]] = [
    ("account not 12 digits", lambda d: d.update(account="12345"), r"account: .*must be 12 digits.*got '12345'"),
    ("unknown region", lambda d: d.update(region="us-middle-1"), r"region: .*not an AWS region name"),
    (
        "zone outside the region",
        lambda d: d.update(availability_zones=["us-east-1a", "us-east-1b", "eu-west-1c"]),
        r"'eu-west-1c' is not in region us-east-1",
    ),
    (
        "subnet outside the VPC",
        lambda d: d["network"].update(public_subnets=["10.0.1.0/24", "10.0.2.0/24", "10.1.3.0/24"]),
        r"network: .*public_subnets: 10.1.3.0/24 is not inside the VPC CIDR 10.0.0.0/16",
    ),
    (
        "overlapping subnets",
        lambda d: d["network"].update(data_subnets=["10.0.11.0/24", "10.0.12.0/24", "10.0.1.0/24"]),
        r"data_subnets: 10.0.1.0/24 overlaps 10.0.1.0/24 of public_subnets",
    ),
    (
        "not a CIDR",
        lambda d: d["network"].update(vpc_cidr="10.0.0.0/33"),
        r"network.vpc_cidr: '10.0.0.0/33' is not an IPv4 network in CIDR form",
    ),
    (
        "prod with a single NAT gateway",
        lambda d: d["network"].update(nat_gateways=1),
        r"network.nat_gateways: prod needs one NAT gateway per zone \(3\), got 1",
    ),
    (
        "prod database not Multi-AZ",
        lambda d: d["data"]["rds"].update(multi_az=False),
        r"data.rds.multi_az: prod databases must be Multi-AZ",
    ),
    (
        "prod cache without replicas",
        lambda d: d["data"]["cache"].update(replicas_per_shard=0),
        r"prod needs at least 1 replica per shard",
    ),
    (
        "prod data destroyed on removal",
        lambda d: d["data"].update(removal_policy="destroy"),
        r"data.removal_policy: prod keeps its data; only a dev stage may use 'destroy'",
    ),
    (
        "cache too small for its dataset",
        lambda d: d["data"]["cache"].update(shards=2),
        r"data.cache: 2 shard\(s\) of cache.r7g.4xlarge hold 159 GiB, less than dataset_gib 500: "
        r"use at least 7 shards",
    ),
    (
        "log retention CloudWatch does not offer",
        lambda d: d.update(log_retention_days=45),
        r"log_retention_days: 45 is not a CloudWatch Logs retention period: use one of 1, 3, 5",
    ),
    (
        "unknown field",
        lambda d: d["data"]["rds"].update(instance_klass="db.r7g.large"),
        r"data.rds.instance_klass: Extra inputs are not permitted",
    ),
    (
        "wrong type",
        lambda d: d["data"]["rds"].update(backup_retention_days="weekly"),
        r"data.rds.backup_retention_days: Input should be a valid integer.*got 'weekly'",
    ),
    (
        "unknown kubernetes version",
        lambda d: d["cluster"].update(kubernetes_version="1.27"),
        r"cluster.kubernetes_version: Input should be '1.35'.*got '1.27'",
    ),
    (
        "public API endpoint open to the internet",
        lambda d: d["cluster"].update(public_access_cidrs=["0.0.0.0/0"]),
        r"cluster.public_access_cidrs: 0.0.0.0/0 opens the API endpoint to the internet",
    ),
    (
        "unknown cache node type",
        lambda d: d["data"]["cache"].update(node_type="cache.x9.huge"),
        r"data.cache.node_type: unknown cache node type 'cache.x9.huge': use one of",
    ),
    (
        "replication to its own region",
        lambda d: d["data"]["buckets"].update(replication_region="us-east-1"),
        r"data.buckets.replication_region: prod replicates its buckets to another region",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_fails_on_bad_input(tmp_path: Path, case: str, mutate: Mutation, message: str) -> None:
    data = copy.deepcopy(_base())
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_stage(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), "the message names the file first"
    assert re.search(message, text, re.S), f"{case}: {text}"


def test_fails_when_the_file_name_and_stage_differ(tmp_path: Path) -> None:
    path = _write(tmp_path, _base(), name="production")
    with pytest.raises(ConfigError, match=r"production.yaml: stage: 'prod' must match the file name"):
        load_stage(path)


def test_fails_on_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"dev.yaml: a stage config is a mapping of fields, got list"):
        load_stage(path)


def test_a_broken_stage_file_fails_even_when_another_stage_is_selected(tmp_path: Path) -> None:
    good = _base("dev")
    bad = _base("staging")
    bad["account"] = "nope"
    _write(tmp_path, good)
    _write(tmp_path, bad)
    with pytest.raises(ConfigError, match=r"(?s)staging.yaml: .*account"):
        load_stages(["dev"], config_dir=tmp_path)


# Node pools (issue #3): every kind of bad pool spec is refused with its reason.
POOL_INPUTS: list[tuple[str, Mutation, str]] = [
    (
        "unknown instance type",
        lambda d: _pool(d, "a100-timeslice").update(instance_types=["p9.mega"]),
        r"instance_types: unknown instance type 'p9.mega': supported types are",
    ),
    (
        "MIG profile the GPU does not have",
        lambda d: d["cluster"]["mig_layouts"].update(balanced={"1g.5gb": 7}),
        r"mig profile 1g.5gb does not exist on p4de.24xlarge \(A100-80GB\): valid profiles are 1g.10gb, "
        r"1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb",
    ),
    (
        "MIG layout over 7 compute slices",
        lambda d: d["cluster"]["mig_layouts"].update(balanced={"3g.40gb": 2, "2g.20gb": 1}),
        r"mig layout balanced uses 8 compute and 10 memory slices per GPU; a A100-80GB has 7 and 8",
    ),
    (
        "time-slicing replicas out of range",
        lambda d: _pool(d, "a100-timeslice").update(gpu_sharing={"mode": "time-slicing", "replicas": 64}),
        r"node_pools\[1\].gpu_sharing.replicas: Input should be less than or equal to 16",
    ),
    (
        "bad taint key",
        lambda d: _pool(d, "a100-timeslice").update(taints=[{"key": "gpu!", "value": "true"}]),
        r"taint key 'gpu!' is not a valid Kubernetes key",
    ),
    (
        "bad taint effect",
        lambda d: _pool(d, "a100-timeslice").update(taints=[{"key": "gpu", "effect": "NoRun"}]),
        r"taints\[0\].effect: Input should be 'NoSchedule', 'PreferNoSchedule' or 'NoExecute'",
    ),
    (
        "bad workload label",
        lambda d: _pool(d, "cpu-inference").update(workload_types=["CPU inference!"]),
        r"workload type 'CPU inference!' is not a valid Kubernetes label value",
    ),
    (
        "node subnets too small for the pools",
        lambda d: d["network"].update(node_subnets=["10.0.64.0/24", "10.0.65.0/24", "10.0.66.0/24"]),
        r"network.node_subnets: .* hold 753 addresses, but the node pools up to .* need \d+ at their maximum size",
    ),
    (
        "time-slicing on a CPU pool",
        lambda d: _pool(d, "cpu-inference").update(gpu_sharing={"mode": "time-slicing", "replicas": 3}),
        r"gpu_sharing time-slicing needs GPU instance types; m5.2xlarge, m5.4xlarge, r5.2xlarge, r5.4xlarge "
        r"have no GPU",
    ),
    (
        "MIG pool left to Karpenter",
        lambda d: _pool(d, "a100-mig").update(provisioner="karpenter"),
        r"a MIG pool must be a nodegroup: Karpenter counts whole GPUs",
    ),
    (
        "MIG on a GPU without MIG",
        lambda d: _pool(d, "a100-mig").update(instance_types=["g4dn.xlarge"]),
        r"node pool a100-mig: g4dn.xlarge \(T4\) does not support MIG",
    ),
    (
        "peak above the pool maximum",
        lambda d: _pool(d, "t4-inference").update(max_nodes=25),
        r"min_nodes \(20\) plus peak.extra_nodes \(10\) exceed max_nodes \(25\)",
    ),
    (
        "duplicate pool names",
        lambda d: d["cluster"]["node_pools"].append(copy.deepcopy(_pool(d, "system"))),
        r"node pool names must be unique: system appear",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "message"), POOL_INPUTS, ids=[c[0] for c in POOL_INPUTS])
def test_fails_on_bad_pool_spec(tmp_path: Path, case: str, mutate: Mutation, message: str) -> None:
    test_fails_on_bad_input(tmp_path, case, mutate, message)
