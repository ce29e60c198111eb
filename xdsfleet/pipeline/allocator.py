"""The C allocator, told to keep the memory that responses pass through for the next ones.

Why: a member lost or restored makes every stream's EDS response carry all of the fleet's
assignments (4.5 MB at E = 100,000). Each is joined into new bytes and copied again by gRPC,
with a dozen or more under way at once (`server.budget`). glibc's defaults map a buffer that
large afresh, or give the heap back after it, so each copy faulted in new pages: 2-4 ms per
4.5 MB join where one into reused memory takes 0.2 ms, in the loop iterations of the fan-out
that every stream waits for. A fixed mmap threshold keeps such buffers on the heap, and a trim
threshold above what a fan-out has under way keeps the freed heap for the next one: the
process stays near the peak of its last burst instead of giving it back and faulting it in
again (BENCHMARKS.md, issue 10, fifth pass).

Only glibc has `mallopt`; elsewhere (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes

# mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest threshold glibc's own adjustment reaches on 64-bit: larger blocks are still
# mapped (and unmapped) on their own.
MMAP_THRESHOLD = 32 << 20
# Free memory kept at the top of the heap: twice the write budget's bytes (ours under way,
# and gRPC's copies of them).
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory() -> bool:
    """Set the thresholds for this process; whether the allocator took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
