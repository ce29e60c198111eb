"""The allocator keeps freed memory for the next responses (pipeline/allocator.py)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc has mallopt")
def test_glibc_takes_the_thresholds() -> None:
    # In a process of its own: the thresholds would hold for every later test of this one.
    check = (
        "from xdsfleet.pipeline import allocator\n"
        "assert allocator.keep_freed_memory()\n"
        "assert allocator.keep_freed_memory()  # and again: the benchmarks call it too\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
