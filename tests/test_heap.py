"""After `keep_freed`, a member loss's megabyte blocks are reused by the next writer, not faulted
in afresh (pipeline/heap.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# A writer's step during a member loss, over and over: the response's bytes joined (4.5 MB) and
# gRPC's copy of them, both freed once written. Prints the page faults per step, after a few
# steps to warm up, in a process of its own (the setting is process-wide).
_STEPS = """
import json, os, sys
from xdsfleet.pipeline.heap import keep_freed
took = keep_freed() if sys.argv[1] == "keep" else None
def faults():
    return int(open("/proc/thread-self/stat").read().rsplit(")", 1)[1].split()[7])
pieces = [os.urandom(4500) for _ in range(1000)]
def step():
    data = b"".join(pieces)
    copy = bytearray(data)
    del data, copy
for _ in range(3):
    step()
before = faults()
for _ in range(20):
    step()
print(json.dumps({"took": took, "faults_per_step": (faults() - before) / 20}))
"""


def _steps(mode: str) -> tuple[bool | None, float]:
    """Whether `keep_freed` took (None: not called) and the page faults per step."""
    done = subprocess.run(
        [sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    return result["took"], float(result["faults_per_step"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_a_freed_megabyte_block_is_reused_without_page_faults() -> None:
    took, faults = _steps("keep")
    assert took is True
    # A 4.5 MB block faulted in afresh is ~1,100 faults; reused, none but the odd page.
    assert faults < 50
    # What it changes: glibc's defaults give both blocks back and fault them in again.
    assert _steps("default")[1] > 1_000
