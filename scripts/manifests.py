"""Write each stage's Kubernetes manifests as plain YAML (dist/<stage>/) for teams that apply them via GitOps.

Reads a synthesized cdk.out: every cdk8s chart the stacks attach becomes one file, and every Helm
release one ``helm-releases.yaml`` entry (repository, chart, version, namespace, values) to render with
``helm template``. Deploy-time values (role ARNs, queue names) appear as ``deploy-time-value``: GitOps
users fill them from the stack outputs.
"""

from __future__ import annotations

import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from tests.support.assembly import CloudAssembly
from tests.support.deployed import deployed_objects, helm_releases


def main(outdir: str = "cdk.out", dist: str = "dist") -> int:
    assembly = CloudAssembly(Path(outdir))
    root = Path(dist)
    shutil.rmtree(root, ignore_errors=True)
    charts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for deployed in deployed_objects(assembly):
        charts[(deployed.stage.lower(), deployed.logical_id)].append(deployed.obj)
    for (stage, chart), objects in sorted(charts.items()):
        path = root / stage / f"{chart}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    releases: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in helm_releases(assembly):
        releases[r.stage.lower()].append(
            {
                "release": r.logical_id,
                "repository": r.repository,
                "chart": r.chart,
                "version": r.version,
                "namespace": r.namespace,
                "values": r.values,
            }
        )
    for stage, entries in releases.items():
        (root / stage).mkdir(parents=True, exist_ok=True)
        (root / stage / "helm-releases.yaml").write_text(yaml.safe_dump(entries, sort_keys=False))
    for stage_dir in sorted(root.iterdir()):
        print(f"{stage_dir}: {len(list(stage_dir.glob('*.yaml')))} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
