"""The checks behind the policy gates, as plain functions, so each gate's test can also seed a violation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# CloudFormation's hard limits, and the share of them a template may use: the headroom is room to grow
# before a stack must be split, found in a test rather than in a failed deployment.
MAX_TEMPLATE_BYTES = 1_000_000
MAX_RESOURCES = 500
HEADROOM = 0.8
# A reason must say why the rule does not apply or what compensates; a few words cannot.
MIN_REASON_CHARS = 40
_LAZY_REASONS = ("suppress", "todo", "fixme", "not needed", "n/a", "ignore", "false positive")


def cfn_lint_errors(template_path: Path, regions: Iterable[str]) -> list[str]:
    """Return cfn-lint's errors (E rules) for one template, linted for the given regions."""
    from cfnlint.api import ManualArgs, lint  # imported here: loading cfn-lint's specs takes seconds

    matches = lint(template_path.read_text(), config=ManualArgs(regions=list(regions)))
    return [
        f"{template_path.name}: {m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in matches
        if m.rule.id.startswith("E")
    ]


def size_violations(name: str, template: dict[str, Any], template_bytes: int) -> list[str]:
    """Return why a template is too close to CloudFormation's size or resource limits, if it is."""
    problems = []
    if template_bytes > MAX_TEMPLATE_BYTES * HEADROOM:
        problems.append(f"{name}: {template_bytes} bytes is over {HEADROOM:.0%} of the {MAX_TEMPLATE_BYTES} byte limit")
    count = len(template.get("Resources", {}))
    if count > MAX_RESOURCES * HEADROOM:
        problems.append(f"{name}: {count} resources is over {HEADROOM:.0%} of the {MAX_RESOURCES} resource limit")
    return problems


def unacknowledged_findings(report: dict[str, Any]) -> list[str]:
    """Return every finding of every validation plugin (cdk-nag included) that nobody acknowledged."""
    found = []
    for plugin in report.get("pluginReports", []):
        for violation in plugin.get("violations", []):
            for construct in violation.get("violatingConstructs", []):
                found.append(
                    f"{plugin.get('pluginName')}: {violation['ruleName']} at {construct['constructPath']}: "
                    f"{violation.get('description', '')[:160]}"
                )
    return found


def weak_acknowledgements(acks: Iterable[tuple[str, str, str]]) -> list[str]:
    """Return acknowledgements whose reason is missing, too short or boilerplate."""
    weak = []
    for path, rule, reason in acks:
        text = reason.strip().lower()
        if len(text) < MIN_REASON_CHARS or any(text.startswith(w) for w in _LAZY_REASONS):
            weak.append(f"{rule} at {path}: reason {reason!r} does not say why the rule does not apply")
    return weak


def template_bytes(path: Path) -> int:
    """Return the size CloudFormation sees: the template as deployed, minified JSON."""
    return len(json.dumps(json.loads(path.read_text()), separators=(",", ":")).encode())
