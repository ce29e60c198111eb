"""The allocator keeps freed memory for the next responses (pipeline/allocator.py)."""

from __future__ import annotations

import platform

import pytest

from xdsfleet.pipeline import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc has mallopt")
def test_glibc_takes_the_thresholds() -> None:
    assert allocator.keep_freed_memory()
    assert allocator.keep_freed_memory()  # and again (the benchmarks' processes call it too)
