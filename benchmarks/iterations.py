"""The event loop's iterations, timed in the loop thread's CPU: how long our code held the loop.

`xdsfleet_event_loop_lag_seconds` is wall time, which on a machine shared with other work also
counts the moments the process was not scheduled (at a load of 6-9 on 2 cores, most of a lag of
a second). What the loop-lag target is about is how long the server's own code keeps the loop
from its timers and sockets: the thread CPU of one iteration (every callback that was ready,
back to back, between two looks at the sockets), which scheduling does not inflate. A timer
waits at most the iteration it fell due in and the part of the next before it.

For the benchmarks only: it wraps asyncio's private `BaseEventLoop._run_once` on the loop
instance (the server never does this).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

OVER = (0.02, 0.05)  # iterations longer than these are counted


class Iterations:
    def __init__(self) -> None:
        self.largest = 0.0  # thread CPU seconds of the longest iteration since `reset`
        self.over = dict.fromkeys(OVER, 0)
        self.count = 0

    def reset(self) -> None:
        self.largest = 0.0
        self.over = dict.fromkeys(OVER, 0)
        self.count = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Time every iteration of `loop` from now on; returns the undo."""
        # Another measure's look may be installed already (two servers on one loop): wrap it,
        # and give it back on undo.
        outer = vars(loop).get("_run_once")
        run_once: Callable[[], Any] = getattr(loop, "_run_once")  # noqa: B009

        def timed() -> None:
            started = time.thread_time()
            run_once()
            took = time.thread_time() - started
            self.count += 1
            self.largest = max(self.largest, took)
            for limit in OVER:
                if took > limit:
                    self.over[limit] += 1

        setattr(loop, "_run_once", timed)  # noqa: B010

        def undo() -> None:
            if outer is not None:
                setattr(loop, "_run_once", outer)  # noqa: B010
            elif vars(loop).get("_run_once") is timed:
                delattr(loop, "_run_once")

        return undo
