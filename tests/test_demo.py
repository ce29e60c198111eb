"""`make demo` stays runnable: a short run of it, end to end, must pass."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.local import free_port

pytestmark = pytest.mark.envoy


def test_a_short_demo_run_passes() -> None:
    argv = [sys.executable, "-m", "harness.demo", "--requests", "30"]
    done = subprocess.run(
        [*argv, "--listener-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo passed" in done.stdout
    for member in ("zone-a", "zone-b", "idc"):
        assert member in done.stdout
