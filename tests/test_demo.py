"""`make demo` stays runnable: a run of it at a lower rate, end to end, must pass."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.envoy


def test_a_short_demo_run_passes() -> None:
    argv = [sys.executable, "-m", "harness.demo", "--rate", "100"]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo passed" in done.stdout
    for member in ("zone-a", "zone-b", "idc"):
        assert member in done.stdout
    assert "Summary" in done.stdout
