"""The architecture diagram (scripts/diagram.py): valid SVG naming every stack, pool and data store."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from config.model import StageConfig
from scripts.diagram import CHARS_PER_LINE, StackView, _wrap, build_columns, stage_svg, stage_views
from tests.support.assembly import CloudAssembly

SVG = "{http://www.w3.org/2000/svg}"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "diagrams"


def _texts(svg: str) -> str:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return "\n".join(t.text or "" for t in root.iter(f"{SVG}text"))


@pytest.fixture(scope="module")
def diagrams(assembly: CloudAssembly, stage_configs: dict[str, StageConfig]) -> dict[str, str]:
    return {name: stage_svg(config, stage_views(assembly, name)) for name, config in stage_configs.items()}


def test_diagram_is_valid_svg_naming_every_stack(assembly: CloudAssembly, diagrams: dict[str, str]) -> None:
    for name, svg in diagrams.items():
        texts = _texts(svg)
        for stack in assembly.stacks:
            if stack.stage == name.capitalize():
                assert stack.construct_id in texts, (name, stack.construct_id)


def test_diagram_shows_every_pool_with_its_size(
    diagrams: dict[str, str], stage_configs: dict[str, StageConfig]
) -> None:
    for name, config in stage_configs.items():
        texts = _texts(diagrams[name])
        for pool in config.cluster.node_pools:
            assert pool.name in texts, (name, pool.name)
            assert f"{pool.min_nodes}-{pool.max_nodes} nodes" in texts, (name, pool.name)
    assert "GPU MIG, layout balanced" in _texts(diagrams["prod"])
    assert "GPU time-slicing x3" in _texts(diagrams["dev"])


def test_diagram_shows_every_data_store(assembly: CloudAssembly, diagrams: dict[str, str]) -> None:
    for name, svg in diagrams.items():
        texts = _texts(svg).replace("\n", "")  # long bucket names wrap across lines
        data = assembly.stack(name.capitalize(), "Data")
        for bucket in data.resources_of("AWS::S3::Bucket").values():
            assert bucket["Properties"]["BucketName"] in texts, name
        (db,) = data.resources_of("AWS::RDS::DBInstance").values()
        assert db["Properties"]["DBInstanceClass"] in texts
        (cache,) = data.resources_of("AWS::ElastiCache::ReplicationGroup").values()
        shards = cache["Properties"]["NumNodeGroups"]
        assert f"{shards} shard(s)" in texts
        assert cache["Properties"]["CacheNodeType"] in texts
        assert "EFS file system" in texts


def test_diagram_shows_the_edge_and_workloads(diagrams: dict[str, str]) -> None:
    texts = _texts(diagrams["prod"])
    for name in ("Internet", "WAF web ACL", "Application Load Balancer", "Namespaces", "Helm releases"):
        assert name in texts
    assert "ML workstation (EC2)" in _texts(diagrams["dev"])


def test_arrows_join_boxes_that_exist(assembly: CloudAssembly, stage_configs: dict[str, StageConfig]) -> None:
    columns, arrows = build_columns(stage_configs["prod"], stage_views(assembly, "prod"))
    keys = {box.key for column in columns for box in column.boxes}
    assert arrows
    assert all(a.source in keys and a.target in keys for a in arrows)
    titles = ["Stacks", "Edge", "VPC 10.0.0.0/16", "Node pools", "Workloads", "Data stores"]
    assert [c.title for c in columns] == titles


def test_a_stage_without_templates_draws_only_its_network(stage_configs: dict[str, StageConfig]) -> None:
    svg = stage_svg(stage_configs["dev"], [StackView("Keys", {"Resources": {}})])
    texts = _texts(svg)
    assert "Keys" in texts
    assert "Public subnets" in texts
    assert "system" not in texts  # no cluster template, no pools


def test_long_lines_wrap_within_the_box() -> None:
    lines = _wrap("a" * (CHARS_PER_LINE + 5) + " tail", CHARS_PER_LINE)
    assert lines == ["a" * CHARS_PER_LINE, "aaaaa tail"]
    assert all(len(line) <= CHARS_PER_LINE for line in _wrap("word " * 40, CHARS_PER_LINE))


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_readme_diagrams_are_committed_and_valid(stage: str) -> None:
    path = DOCS / f"{stage}.svg"
    assert path.exists(), f"{path} is missing: run make diagram"
    assert f"ml-platform {stage}: architecture" in _texts(path.read_text())
