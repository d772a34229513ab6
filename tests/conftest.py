"""Session fixtures: the stage configs and one synthesized app shared by every test and xdist worker."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.loader import load_stages
from config.model import StageConfig
from tests.support.assembly import CloudAssembly

ROOT = Path(__file__).resolve().parent.parent


def _synthesize(outdir: Path) -> None:
    """Run the real app (cdk-nag included) in a child process: the same code path as `cdk synth`."""
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    code = f"from app import build_app; build_app(outdir={str(outdir)!r}).synth()"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        report = outdir / "validation-report.json"
        details = report.read_text() if report.exists() else ""
        pytest.fail(
            f"synth of the app failed (exit {result.returncode}):\n{result.stderr[-6000:]}\n{details[:6000]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudAssembly]:
    """Synthesize every stage once per test session; xdist workers share the result through a lock."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist every worker has its own base directory; their parent belongs to this run alone.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    outdir = shared / "cdk.out"
    with (shared / "synth.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (outdir / "manifest.json").exists():
            _synthesize(outdir)
        fcntl.flock(lock, fcntl.LOCK_UN)
    yield CloudAssembly(outdir)


@pytest.fixture(scope="session")
def stage_configs() -> dict[str, StageConfig]:
    return {c.stage: c for c in load_stages()}
