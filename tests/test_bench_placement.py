"""`python -m benchmarks --cpus LIST`: the measured servers on those CPUs, the load generators on
the others (benchmarks/run.py, `place`).

Each case runs in a fresh interpreter: placing pins the whole process, and pytest's must not be.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = sorted(os.sched_getaffinity(0))

# Places this process on the first CPU allowed, then reports the CPUs of its own threads (one
# started before placing, one after), of a child started as a load generator and of one not.
PLACED = """
import json, os, subprocess, sys, threading
from benchmarks import run
ready, done = threading.Event(), threading.Event()
early = threading.Thread(target=lambda: (ready.set(), done.wait()))
early.start(); ready.wait()
run.place(frozenset([min(os.sched_getaffinity(0))]))
seen = {}
late = threading.Thread(target=lambda: seen.update(late=sorted(os.sched_getaffinity(0))))
late.start(); late.join()
seen["early"] = sorted(os.sched_getaffinity(early.native_id))
done.set(); early.join()
ask = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
child = lambda argv: json.loads(subprocess.run(argv, capture_output=True, text=True).stdout)
print(json.dumps({
    "main": sorted(os.sched_getaffinity(0)),
    "early": seen["early"],
    "late": seen["late"],
    "load": child([*run.load_prefix(), *ask]),
    "server": child(ask),
    "setting": run.setting(),
}))
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(len(ALLOWED) < 2, reason="placement needs two CPUs")
def test_servers_and_load_generators_get_cpus_of_their_own() -> None:
    done = _python(PLACED)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    server, rest = [ALLOWED[0]], ALLOWED[1:]
    assert seen["main"] == seen["early"] == seen["late"] == seen["server"] == server
    assert seen["load"] == rest
    assert f"on CPU {','.join(map(str, rest))}; servers on CPU {ALLOWED[0]}" in seen["setting"]


def test_placing_on_every_cpu_or_none_is_refused() -> None:
    every = ",".join(map(str, ALLOWED))
    for cpus in (every, "4096"):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--cpus", cpus, "convergence"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0
        assert f"--cpus {cpus}: must name some, not all" in done.stderr, done.stderr
