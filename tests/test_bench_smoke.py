"""`make bench` keeps working: a quick run exits cleanly and prints a server row and a floor row.

No timing is asserted: figures depend on the machine, and the table is where to read them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A table row for the quick run's 20 clients, whatever box characters the terminal allows.
ROW = re.compile(r"^\W*20\W+(server|floor)\W")


def test_quick_bench_prints_server_and_floor_rows() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    paths = [m.group(1) for line in done.stdout.splitlines() if (m := ROW.match(line))]
    assert paths == ["server", "floor"], done.stdout
