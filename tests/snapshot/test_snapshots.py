"""One snapshot per stack per stage: any drift in a template is a reviewed change (`make snapshots`)."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.assembly import CloudAssembly

SNAPSHOTS = Path(__file__).parent / "__snapshots__"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"


def normalized(template: dict[str, Any]) -> str:
    """Return the template without CDK's usage metadata (which encodes library internals, not our resources)."""
    data = json.loads(json.dumps(template))
    data.get("Resources", {}).pop("CDKMetadata", None)
    data.get("Conditions", {}).pop("CDKMetadataAvailable", None)
    if not data.get("Conditions", True):
        data.pop("Conditions")
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def test_every_stack_matches_its_snapshot(assembly: CloudAssembly) -> None:
    drifted, missing = [], []
    seen = set()
    for stack in assembly.stacks:
        path = SNAPSHOTS / stack.stage.lower() / f"{stack.construct_id}.json"
        seen.add(path)
        current = normalized(stack.template)
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(current)
            continue
        if not path.exists():
            missing.append(str(path.relative_to(SNAPSHOTS)))
            continue
        expected = path.read_text()
        if expected != current:
            diff = difflib.unified_diff(
                expected.splitlines(), current.splitlines(), str(path), "synthesized", n=2, lineterm=""
            )
            drifted.append("\n".join(list(diff)[:60]))
    stale = sorted(str(p.relative_to(SNAPSHOTS)) for p in SNAPSHOTS.rglob("*.json") if p not in seen)
    if UPDATE:
        for name in stale:
            (SNAPSHOTS / name).unlink()
        pytest.skip("snapshots rewritten")
    assert not missing, f"no snapshot for {missing}: review the templates, then run `make snapshots`"
    assert not stale, f"snapshots of stacks the app no longer has: {stale} (run `make snapshots`)"
    assert not drifted, "templates drifted from their snapshots (review, then `make snapshots`):\n" + "\n\n".join(
        drifted
    )


def test_snapshot_check_notices_a_change(assembly: CloudAssembly) -> None:
    stack = assembly.stack("Dev", "Network")
    changed = json.loads(json.dumps(stack.template))
    first = next(iter(changed["Resources"]))
    changed["Resources"][first]["Properties"] = {"Seeded": True}
    assert normalized(changed) != normalized(stack.template)
