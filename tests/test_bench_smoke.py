"""`make bench` keeps working: a quick run of every measure exits cleanly and prints each table.

No timing is asserted: figures depend on the machine, and the tables are where to read them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each measure's table title starts so (see benchmarks/measures/).
TITLES = (
    "Convergence",
    "Translation + encode",
    "Cold start",
    "RSS",
    "Sustained churn",
    "One stalled stream",
    "One oversized client",
)
# A convergence row for the quick run's 24 clients, whatever box characters the terminal allows.
ROW = re.compile(r"^\W*24\W+(xdsfleet|floor)\W")


def test_quick_bench_prints_every_measure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    titles = [t for t in TITLES if any(line.startswith(t) for line in done.stdout.splitlines())]
    assert titles == list(TITLES), done.stdout
    paths = [m.group(1) for line in done.stdout.splitlines() if (m := ROW.match(line))]
    assert paths == ["xdsfleet", "floor"], done.stdout
    assert "Targets" in done.stdout
