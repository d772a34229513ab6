"""Stateful-replacement guard: fail when a change would remove or replace a stateful resource.

``make guard BASE=origin/main`` synthesizes BASE (a git worktree in a temp dir) and the working tree,
offline and side by side, then compares the templates stack by stack. A stateful resource (bucket, file
system, database, cache, key, cluster, data-tier secret, backup vault) is flagged when

- its logical ID disappears: a renamed construct ID gives a new logical ID, and CloudFormation creates a
  new, empty resource and deletes (or, when retained, orphans) the old one; or
- a property that CloudFormation can only change by replacement changes. Which properties those are is
  read from the resource schemas cfn-lint ships (``createOnlyProperties``), never written by hand.

Stacks are matched by their construct path (``Prod/Data``): construct IDs of stacks never change either,
so a renamed stack shows up as every stateful resource of the old path being removed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# What holds data or identity that a replacement would lose. Secrets only of the data tier: elsewhere a
# secret is generated and re-read by its consumers, so a new one costs nothing.
STATEFUL_TYPES = (
    "AWS::S3::Bucket",
    "AWS::EFS::FileSystem",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::KMS::Key",
    "AWS::EKS::Cluster",
    "AWS::SecretsManager::Secret",
    "AWS::Backup::BackupVault",
)
DATA_TIER_ONLY = {"AWS::SecretsManager::Secret": ("Data",)}
# cfn-lint keeps one schema set per region; the stateful types' create-only properties are the same in all.
SCHEMA_REGION = "us-east-1"

Template = Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    """One stateful resource that the change would remove or replace."""

    stack: str
    logical_id: str
    resource_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.stack} {self.logical_id} {self.resource_type}: {self.reason}"


def _schemas_dir() -> Path:
    import cfnlint  # imported here: only the table needs it, and importing cfn-lint takes a moment

    return Path(cfnlint.__file__).resolve().parent / "data" / "schemas"


def _schema(resource_type: str, region: str = SCHEMA_REGION) -> dict[str, Any]:
    """Return cfn-lint's provider schema of one resource type."""
    providers = _schemas_dir() / "providers"
    index = providers / f"{region}.json"
    if index.is_file():  # cfn-lint >= 1.x stores schemas once, by hash, with a type -> hash index per region
        digest = json.loads(index.read_text())[resource_type]
        data: dict[str, Any] = json.loads((_schemas_dir() / "resources" / f"{digest}.json").read_text())
        return data
    # Older layout: one folder per region with one file per type (aws-s3-bucket.json).
    path = providers / region.replace("-", "_") / f"{resource_type.lower().replace('::', '-')}.json"
    legacy: dict[str, Any] = json.loads(path.read_text())
    return legacy


@cache
def create_only_properties(resource_type: str) -> tuple[tuple[str, ...], ...]:
    """Return the properties of ``resource_type`` that CloudFormation can only change by replacement.

    Each is a path of property names (``("KubernetesNetworkConfig", "IpFamily")``), from the
    ``createOnlyProperties`` of the resource schema that cfn-lint ships.
    """
    pointers = _schema(resource_type).get("createOnlyProperties", [])
    paths = []
    for pointer in pointers:
        parts = str(pointer).split("/")
        if parts[:2] != ["", "properties"]:
            raise ValueError(f"{resource_type}: unexpected createOnlyProperties entry {pointer!r}")
        paths.append(tuple(parts[2:]))
    return tuple(paths)


_MISSING = object()


def _at(properties: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = properties
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_stateful(stack: str, resource_type: str) -> bool:
    if resource_type not in STATEFUL_TYPES:
        return False
    only_in = DATA_TIER_ONLY.get(resource_type)
    return only_in is None or stack.rsplit("/", 1)[-1] in only_in


def _resources(template: Template) -> Mapping[str, Mapping[str, Any]]:
    resources: Mapping[str, Mapping[str, Any]] = template.get("Resources", {})
    return resources


def compare(base_templates: Mapping[str, Template], head_templates: Mapping[str, Template]) -> list[Finding]:
    """Return every stateful resource of ``base_templates`` that ``head_templates`` removes or replaces.

    Both map a stack's construct path (``Prod/Data``) to its CloudFormation template.
    """
    findings: list[Finding] = []
    head_locations = {
        logical_id: stack for stack, template in head_templates.items() for logical_id in _resources(template)
    }
    for stack, base in sorted(base_templates.items()):
        head_resources = _resources(head_templates.get(stack, {}))
        for logical_id, resource in sorted(_resources(base).items()):
            rtype = str(resource.get("Type"))
            if not _is_stateful(stack, rtype):
                continue
            new = head_resources.get(logical_id)
            if new is None:
                reason = _removal_reason(stack, logical_id, resource, base, head_templates, head_locations)
                findings.append(Finding(stack, logical_id, rtype, reason))
                continue
            if new.get("Type") != rtype:
                findings.append(Finding(stack, logical_id, rtype, f"type changes to {new.get('Type')}: replaced"))
                continue
            old_props = resource.get("Properties", {})
            new_props = new.get("Properties", {})
            for path in create_only_properties(rtype):
                before, after = _at(old_props, path), _at(new_props, path)
                if before != after:
                    findings.append(
                        Finding(
                            stack,
                            logical_id,
                            rtype,
                            f"replacement-only property {'.'.join(path)} changes: {_shown(before)} -> {_shown(after)}",
                        )
                    )
    return findings


def _removal_reason(
    stack: str,
    logical_id: str,
    resource: Mapping[str, Any],
    base: Template,
    head_templates: Mapping[str, Template],
    head_locations: Mapping[str, str],
) -> str:
    rtype = resource.get("Type")
    retained = resource.get("DeletionPolicy") in ("Retain", "RetainExceptOnCreate", "Snapshot")
    fate = "orphaned (DeletionPolicy retains it)" if retained else "deleted with its data"
    if stack not in head_templates:
        return f"stack {stack} is gone from the app: the resource is no longer deployed and would be {fate}"
    moved_to = head_locations.get(logical_id)
    if moved_to is not None:
        return f"moves to stack {moved_to}: a new resource is created there and this one is {fate}"
    base_ids = set(_resources(base))
    newcomers = sorted(
        lid for lid, r in _resources(head_templates[stack]).items() if r.get("Type") == rtype and lid not in base_ids
    )
    hint = f" (new {rtype} in the stack: {', '.join(newcomers[:3])}; a renamed construct ID?)" if newcomers else ""
    return f"logical ID removed: replaced by a new resource and {fate}{hint}"


def load_templates(outdir: Path) -> dict[str, dict[str, Any]]:
    """Return every stack template of a synthesized cloud assembly, by construct path (``Prod/Data``)."""
    templates: dict[str, dict[str, Any]] = {}

    def read(directory: Path) -> None:
        manifest = json.loads((directory / "manifest.json").read_text())
        for artifact_id, artifact in manifest.get("artifacts", {}).items():
            props = artifact.get("properties", {})
            if artifact["type"] == "cdk:cloud-assembly":
                read(directory / props["directoryName"])
            elif artifact["type"] == "aws:cloudformation:stack":
                name = artifact.get("displayName", artifact_id)
                templates[name] = json.loads((directory / props["templateFile"]).read_text())

    read(outdir)
    return templates


def _synth(source: Path, outdir: Path) -> subprocess.Popen[str]:
    """Start the app of ``source`` offline, the way the tests do, with this repo's venv and pinned Node.js."""
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
    code = f"from app import build_app; build_app(outdir={str(outdir)!r}).synth()"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=source, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _wait(synths: Mapping[str, subprocess.Popen[str]]) -> None:
    """Wait for every synth; fail with the output of each that failed."""
    failures = []
    for label, proc in synths.items():
        output, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"guard: synth of {label} failed (exit {proc.returncode}):\n{output[-4000:]}")
    if failures:
        raise SystemExit("\n".join(failures))


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"guard: git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def run(base: str, head_outdir: Path | None = None) -> list[Finding]:
    """Synthesize ``base`` and the working tree (or read ``head_outdir``) and compare them."""
    commit = _git("rev-parse", "--verify", f"{base}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="guard-") as tmp:
        worktree = Path(tmp) / "base"
        _git("worktree", "add", "--detach", str(worktree), commit)
        try:
            # Both synths at once: each is mostly one process waiting on the other (Python <-> jsii).
            synths = {f"{base} ({commit[:12]})": _synth(worktree, Path(tmp) / "base.out")}
            if head_outdir is None:
                synths["the working tree"] = _synth(ROOT, Path(tmp) / "head.out")
            _wait(synths)
            base_templates = load_templates(Path(tmp) / "base.out")
            head_templates = load_templates(head_outdir or Path(tmp) / "head.out")
        finally:
            _git("worktree", "remove", "--force", str(worktree))
    return compare(base_templates, head_templates)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", required=True, help="git ref to compare with, such as origin/main")
    parser.add_argument("--head", type=Path, help="a synthesized cloud assembly to use instead of the working tree")
    args = parser.parse_args(list(argv) if argv is not None else None)
    findings = run(args.base, args.head)
    for finding in findings:
        print(finding)
    if findings:
        print(f"guard: {len(findings)} stateful resource(s) would be removed or replaced (compared with {args.base})")
        return 1
    print(f"guard: no stateful replacement (compared with {args.base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
