"""The C heap keeps what a member loss's responses free, instead of giving it back at each free.

A member loss sends every stream a response of megabytes (4.5 MB at E = 100,000), and while it
is written it exists twice: the bytes the writer joins and gRPC's copy. By default glibc's
malloc serves a block that large from a fresh `mmap` and unmaps it when it is freed (its
threshold rises after the first, but then the heap's top is handed back past twice that), so
the next writer's block is fresh pages again: ~1,100 page faults per 4.5 MB, each zero-filled
by the kernel in the loop thread's time: ~2 ms of its CPU per block on this 2-core machine, and
several times that when the machine is busy. In churn runs at E = 100,000 and 1,000 streams
that was 232,000-1,071,000 faults between a member's loss and its restore (0.5-2.5 s of the
loop's CPU; the defaults fall into re-faulting in some runs more than others), and what made a
writer's step 15-27 ms; with `keep_freed`, 110,000-127,000 (issue 10, eighth pass).

So `serve` calls `keep_freed` once at start: blocks up to `MMAP_THRESHOLD` come from the heap,
and the heap's top is given back only once more than `TRIM_THRESHOLD` of it is free, so a
fan-out's blocks are reused from one write to the next, faulted in once. The price is memory
held after a burst: up to the threshold's worth of freed blocks (the write budget's 64 MiB,
`server/budget.py`) stays resident (`python -m benchmarks rss`, 2,000 streams: 411-464 MiB
against 383-422 without, in the same half hour). Setting these turns glibc's own adjustment of
the thresholds off: both are set, as the trim threshold alone would leave every block past the
default mmap threshold (128 KiB) to a fresh mmap.

glibc only (`mallopt`); on another C library, or where the call fails, nothing changes and
`keep_freed` says so.
"""

from __future__ import annotations

import ctypes

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MIB = 1024 * 1024
# The largest blocks served from the heap: glibc's maximum (HEAP_MAX_SIZE / 2 on 64 bits).
MMAP_THRESHOLD = 32 * MIB
# Free memory at the heap's top kept before it is given back: the write budget's blocks. As
# few faults per member loss as with twice that (126,500 against 110,000-126,000), and less
# memory held after a burst.
TRIM_THRESHOLD = 64 * MIB


def keep_freed() -> bool:
    """Keep freed blocks for reuse (the module docstring); whether the C library took it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt in this C library
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
