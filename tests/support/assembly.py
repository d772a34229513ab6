"""The synthesized app, read as plain JSON: stages, stacks, templates, the cdk-nag report.

Tests never synthesize on their own: ``tests/conftest.py`` synthesizes every stage once per test
session (once for all xdist workers) and hands this reader to every test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StackArtifact:
    """One synthesized stack: its stage, construct ID, template and metadata."""

    stage: str
    construct_id: str
    artifact_id: str
    template_path: Path
    properties: dict[str, Any]
    metadata_path: Path | None

    @cached_property
    def template(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.template_path.read_text())
        return data

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.template.get("Resources", {})
        return resources

    def resources_of(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == cfn_type}

    @cached_property
    def metadata(self) -> dict[str, list[dict[str, Any]]]:
        if self.metadata_path is None or not self.metadata_path.exists():
            return {}
        data: dict[str, list[dict[str, Any]]] = json.loads(self.metadata_path.read_text())
        return data


class CloudAssembly:
    """Read a cdk.out directory holding one nested assembly per stage."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.manifest: dict[str, Any] = json.loads((outdir / "manifest.json").read_text())

    @cached_property
    def stacks(self) -> list[StackArtifact]:
        found: list[StackArtifact] = []
        for stage_art in self.manifest["artifacts"].values():
            if stage_art["type"] != "cdk:cloud-assembly":
                continue
            stage_dir = self.outdir / stage_art["properties"]["directoryName"]
            stage = stage_art["properties"]["displayName"]
            manifest = json.loads((stage_dir / "manifest.json").read_text())
            for art_id, art in manifest["artifacts"].items():
                if art["type"] != "aws:cloudformation:stack":
                    continue
                display = art.get("displayName", art_id)
                meta = stage_dir / f"{art_id}.metadata.json"
                found.append(
                    StackArtifact(
                        stage=stage,
                        construct_id=display.split("/")[-1],
                        artifact_id=art_id,
                        template_path=stage_dir / art["properties"]["templateFile"],
                        properties=art["properties"],
                        metadata_path=meta if meta.exists() else None,
                    )
                )
        return found

    @property
    def stages(self) -> list[str]:
        return sorted({s.stage for s in self.stacks})

    def stack(self, stage: str, construct_id: str) -> StackArtifact:
        for s in self.stacks:
            if s.stage == stage and s.construct_id == construct_id:
                return s
        known = ", ".join(f"{s.stage}/{s.construct_id}" for s in self.stacks)
        raise KeyError(f"no stack {stage}/{construct_id} in the assembly (have: {known})")

    @cached_property
    def validation_report(self) -> dict[str, Any]:
        path = self.outdir / "validation-report.json"
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"pluginReports": []}
        return data

    def acknowledgements(self) -> list[tuple[str, str, str]]:
        """Return (construct path, rule id, reason) for every ``Validations.acknowledge`` in the app."""
        found: list[tuple[str, str, str]] = []
        for stack in self.stacks:
            for path, entries in stack.metadata.items():
                for entry in entries:
                    if entry.get("type") == "aws:cdk:acknowledged-rules":
                        found.extend((path, rule, reason) for rule, reason in entry["data"].items())
        return found
