"""The event loop's lag, always measured: how late a timer fires is how long something held the
loop, and while it is held grpc.aio moves no byte of any stream (BENCHMARKS.md, finding 2.1).

A timer is set `interval` seconds ahead, again and again; the difference between when it was due
and when its callback ran goes to `xdsfleet_event_loop_lag_seconds`. The timer is a plain
callback (`call_at`), not a task sleeping: a task's wake-up takes one more loop iteration after
its timer, which is the scheduling of tasks, not a hold. The largest seen is also kept for the
benchmarks, which report it beside each measure, with the part of it the loop's own thread spent
computing (`largest_own`: a sample's lag, at most the thread's CPU time since the timer was
set): on a machine shared with other work, a process that is not scheduled lags too, without
holding anything.
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
        timer = self._arm(loop)
        try:
            await asyncio.Event().wait()
        finally:
            timer[0].cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
        """Set the first timer; each sets the next. The list holds the one pending."""
        timer: list[asyncio.TimerHandle] = []

        def sample(due: float, cpu: float) -> None:
            lag = max(0.0, loop.time() - due)
            metrics.EVENT_LOOP_LAG.observe(lag)
            self.largest = max(self.largest, lag)
            self.largest_own = max(self.largest_own, min(lag, time.thread_time() - cpu))
            set_next()

        def set_next() -> None:
            due = loop.time() + self.interval
            handle = loop.call_at(due, sample, due, time.thread_time())
            timer[:] = [handle]

        set_next()
        return timer
