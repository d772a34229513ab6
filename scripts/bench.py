"""Measure, in one run: a full synth of every stage, a one-stage synth, and `make test`.

Prints wall time and peak memory (the largest resident set of any process in the command's tree:
Python, the jsii Node runtime, the CDK CLI) next to the goals of issue #2, so a change that slows the
platform down shows up here rather than in a timed test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (name, command, wall-time goal in seconds, memory goal in MiB or None)
CASES = [
    ("full synth (all stages)", ["node_modules/.bin/cdk", "synth", "--quiet", "--output", "{out}"], 14.0, 1024),
    ("one-stage synth (dev)", ["node_modules/.bin/cdk", "synth", "--quiet", "-c", "stages=dev", "--output", "{out}"],
     6.4, 1024),
    ("make test", ["make", "--no-print-directory", "test"], 120.0, None),
]  # fmt: skip

_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{code} {wall:.2f} {peak_kib}")
"""


def measure(command: list[str]) -> tuple[int, float, float]:
    """Run ``command`` in a fresh process; return its exit code, wall seconds and peak RSS in MiB."""
    env = dict(os.environ, PATH=f"{ROOT / 'node_modules/.bin'}{os.pathsep}{ROOT / '.venv/bin'}{os.pathsep}"
               f"{os.environ.get('PATH', '')}")  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def main() -> int:
    failed = 0
    print(f"{'case':<26} {'wall s':>8} {'goal s':>7} {'peak MiB':>9} {'goal MiB':>9}  result")
    for name, command, wall_goal, mem_goal in CASES:
        with tempfile.TemporaryDirectory() as out:
            code, wall, peak = measure([part.format(out=out) for part in command])
        ok = code == 0 and wall <= wall_goal and (mem_goal is None or peak <= mem_goal)
        failed += not ok
        verdict = "ok" if ok else (f"FAILED (exit {code})" if code else "over goal")
        print(f"{name:<26} {wall:>8.1f} {wall_goal:>7.1f} {peak:>9.0f} {mem_goal or '-':>9}  {verdict}")
        time.sleep(0.5)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
