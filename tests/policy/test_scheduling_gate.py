"""The scheduling gate runs inside synth (a validation plugin) and fails on a workload that fits no pool."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.model import StageConfig
from platform_constructs.scheduling_check import SchedulingCheck
from platform_constructs.template_manifests import MANIFEST_TYPE
from tests.support.assembly import CloudAssembly


@dataclass
class Context:
    template_paths: list[str] = field(default_factory=list)


def template_with(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"Resources": {"Seeded": {"Type": MANIFEST_TYPE, "Properties": {"Manifest": json.dumps(list(objects))}}}}


def job(requests: dict[str, Any], selector: dict[str, str], tolerations: list[dict[str, str]]) -> dict[str, Any]:
    pod = {"nodeSelector": selector, "tolerations": tolerations,
           "containers": [{"name": "c", "image": "x:1", "resources": {"requests": requests}}]}  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "seeded", "namespace": "training"},
            "spec": {"template": {"spec": pod}}}  # fmt: skip


def plugin(cfg: StageConfig) -> SchedulingCheck:
    return SchedulingCheck(pools=cfg.cluster.node_pools, quotas=cfg.tenancy.quotas, mig_layouts=cfg.cluster.mig_layouts)


def test_the_synthesized_app_passes_the_scheduling_gate(assembly: CloudAssembly) -> None:
    reports = {p["pluginName"]: p for p in assembly.validation_report.get("pluginReports", [])}
    # The plugin only appears in the report when it finds something; synth succeeded, so it found nothing.
    assert "ml-platform-scheduling" not in reports or not reports["ml-platform-scheduling"]["violations"]


def test_gate_fails_on_a_workload_no_pool_can_hold(tmp_path: Path, stage_configs: dict[str, StageConfig]) -> None:
    path = tmp_path / "seeded.template.json"
    path.write_text(json.dumps(template_with(job({"nvidia.com/gpu": 4}, {"workload-type": "training"}, []))))
    report = plugin(stage_configs["prod"]).validate(Context([str(path)]))  # type: ignore[arg-type]
    assert report.success is False
    (violation,) = report.violations
    assert violation.rule_name == "workload-fits-a-node-pool"
    assert violation.description.startswith("workload training/seeded (Job): fits no node pool: system:")
    assert "a100-timeslice: does not tolerate taint gpu=true:NoSchedule" in violation.description


def test_gate_passes_a_workload_that_fits(tmp_path: Path, stage_configs: dict[str, StageConfig]) -> None:
    fits = job({"nvidia.com/gpu": 1, "cpu": "8"}, {"workload-type": "training"},
               [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}])  # fmt: skip
    path = tmp_path / "fits.template.json"
    path.write_text(json.dumps(template_with(fits)))
    report = plugin(stage_configs["prod"]).validate(Context([str(path)]))  # type: ignore[arg-type]
    assert report.success is True and not report.violations
