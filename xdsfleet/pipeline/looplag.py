"""The event loop's lag, always measured: how late a timer fires is how long something held the
loop, and while it is held grpc.aio moves no byte of any stream (BENCHMARKS.md, finding 2.1).

A timer is set `interval` seconds ahead, again and again; the difference between when it was due
and when it ran goes to `xdsfleet_event_loop_lag_seconds`. The largest seen is also kept for the
benchmarks, which report it beside each measure, with the part of it the loop's own thread spent
computing (`largest_own`: a sample's lag, at most the thread's CPU time over the sample): on a
machine shared with other work, a process that is not scheduled lags too, without holding
anything.
"""

from __future__ import annotations

import asyncio
import time

from xdsfleet.telemetry import metrics

INTERVAL = 0.05


class LoopLag:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.largest = 0.0  # seconds, since the start or the last `reset`
        self.largest_own = 0.0

    def reset(self) -> None:
        self.largest = self.largest_own = 0.0

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due, cpu = loop.time() + self.interval, time.thread_time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)
            metrics.EVENT_LOOP_LAG.observe(lag)
            self.largest = max(self.largest, lag)
            self.largest_own = max(self.largest_own, min(lag, time.thread_time() - cpu))
