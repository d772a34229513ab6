"""Print a short table per stage of a synthesized cdk.out: stacks, resources, size, cdk-nag status."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from tests.support.assembly import CloudAssembly
from tests.support.gates import template_bytes, unacknowledged_findings


def main(outdir: str) -> int:
    assembly = CloudAssembly(Path(outdir))
    findings = unacknowledged_findings(assembly.validation_report)
    acks: dict[str, int] = defaultdict(int)
    for path, _rule, _reason in assembly.acknowledgements():
        acks[path.strip("/").split("/")[0]] += 1
    for stage in assembly.stages:
        stacks = [s for s in assembly.stacks if s.stage == stage]
        stage_findings = [f for f in findings if f" at {stage}/" in f]
        print(
            f"\n{stage}: {len(stacks)} stacks, cdk-nag {'FAIL' if stage_findings else 'pass'} "
            f"({len(stage_findings)} open, {acks[stage]} acknowledged)"
        )
        print(f"  {'stack':<36} {'resources':>9} {'KiB':>7}")
        for s in stacks:
            name = s.properties.get("stackName", s.construct_id)
            print(f"  {name:<36} {len(s.resources):>9} {template_bytes(s.template_path) / 1024:>7.0f}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cdk.out"))
