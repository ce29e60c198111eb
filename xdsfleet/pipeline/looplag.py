"""The event loop's lag, always measured: how late a timer fires is how long something held the
loop, and while it is held grpc.aio moves no byte of any stream (BENCHMARKS.md, finding 2.1).

A timer is set `interval` seconds ahead, again and again; the difference between when it was due
and when its callback ran goes to `xdsfleet_event_loop_lag_seconds`. The timer is a plain
callback (`call_at`), not a task sleeping: a task's wake-up takes one more loop iteration after
its timer, which is the scheduling of tasks, not a hold. The largest seen is also kept for the
benchmarks, which report it beside each measure, with the part of it the loop's own thread spent
computing (`largest_own`: a sample's lag, at most the thread's CPU time since the timer was
set): on a machine shared with other work, a process that is not scheduled lags too, without
holding anything. So that a largest figure can be told from a common one, the benchmarks also
get how many samples lagged more than each of `OVER` (wall and own) and the few largest, with
when they were taken: a maximum set by two samples in a minute is another finding than one set
by a hundred.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from dataclasses import dataclass

from xdsfleet.telemetry import metrics

INTERVAL = 0.05
OVER = (0.02, 0.05, 0.1)  # samples lagging more than these are counted
WORST = 5  # the largest samples kept


@dataclass(frozen=True, order=True, slots=True)
class Sample:
    lag: float  # seconds late
    own: float  # ... of which, at most, the loop thread's CPU
    at: float  # time.monotonic() when it ran


class LoopLag:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        """Forget the samples so far (a benchmark's window starts)."""
        self.largest = self.largest_own = 0.0  # seconds
        self.samples = 0
        self.over = dict.fromkeys(OVER, 0)  # wall lag over each limit
        self.over_own = dict.fromkeys(OVER, 0)
        self._worst: list[Sample] = []  # a min-heap of the largest

    @property
    def worst(self) -> list[Sample]:
        """The largest samples since the start or the last `reset`, largest first."""
        return sorted(self._worst, reverse=True)

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        timer = self._arm(loop)
        try:
            await asyncio.Event().wait()
        finally:
            timer[0].cancel()

    def _record(self, lag: float, own: float) -> None:
        metrics.EVENT_LOOP_LAG.observe(lag)
        self.largest = max(self.largest, lag)
        self.largest_own = max(self.largest_own, own)
        self.samples += 1
        for limit in OVER:
            if lag > limit:
                self.over[limit] += 1
                self.over_own[limit] += own > limit
        if lag > OVER[0]:
            sample = Sample(lag, own, time.monotonic())
            if len(self._worst) < WORST:
                heapq.heappush(self._worst, sample)
            else:
                heapq.heappushpop(self._worst, sample)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
        """Set the first timer; each sets the next. The list holds the one pending."""
        timer: list[asyncio.TimerHandle] = []

        def sample(due: float, cpu: float) -> None:
            lag = max(0.0, loop.time() - due)
            self._record(lag, min(lag, time.thread_time() - cpu))
            set_next()

        def set_next() -> None:
            due = loop.time() + self.interval
            handle = loop.call_at(due, sample, due, time.thread_time())
            timer[:] = [handle]

        set_next()
        return timer
