"""The event loop's lag, always measured: how late a timer fires is how long something held the
loop, and while it is held grpc.aio moves no byte of any stream (BENCHMARKS.md, finding 2.1).

A timer is set `interval` seconds ahead, again and again; the difference between when it was due
and when its callback ran goes to `xdsfleet_event_loop_lag_seconds`. The timer is a plain
callback (`call_at`), not a task sleeping: a task's wake-up takes one more loop iteration after
its timer, which is the scheduling of tasks, not a hold. The figure is wall time: on a machine
shared with other work, a loop thread that waits for a core, or for the GIL, lags too without
holding anything. What part of a sample was the loop thread's own CPU needs clocks read at every
loop iteration, which the server does not pay for: the benchmarks pass a `probe`, told of each
sample's due and run times in the loop's thread (`benchmarks/iterations.py`). The largest
sample is kept for the benchmarks, which report it beside each measure; so that a largest
figure can be told from a common one, they also get how many samples lagged more than each of
`OVER` and the few largest, with when they were taken: a maximum set by two samples in a minute
is another finding than one set by a hundred. A `HoldWatch` (`pipeline/loophold.py`), told of
each run, names what held the loop while it is held.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from dataclasses import dataclass

from xdsfleet.pipeline.loophold import HoldWatch
from xdsfleet.telemetry import metrics

INTERVAL = 0.05
OVER = (0.02, 0.05, 0.1)  # samples lagging more than these are counted
WORST = 5  # the largest samples kept


@dataclass(frozen=True, order=True, slots=True)
class Sample:
    lag: float  # seconds late
    at: float  # loop.time() (time.monotonic()) when it ran


# Told of each sample: when its timer was due and when it ran, in loop.time().
Probe = Callable[[float, float], object]


class LoopLag:
    def __init__(
        self,
        interval: float = INTERVAL,
        *,
        probe: Probe | None = None,
        watch: HoldWatch | None = None,
    ) -> None:
        self.interval = interval
        self.probe = probe
        self.watch = watch
        self.reset()

    def reset(self) -> None:
        """Forget the samples so far, and the watch's holds (a benchmark's window starts)."""
        if self.watch is not None:
            self.watch.reset()
        self.largest = 0.0  # seconds
        self.samples = 0
        self.over = dict.fromkeys(OVER, 0)  # lag over each limit
        self._worst: list[Sample] = []  # a min-heap of the largest

    @property
    def worst(self) -> list[Sample]:
        """The largest samples since the start or the last `reset`, largest first."""
        return sorted(self._worst, reverse=True)

    async def run(self) -> None:
        """Sample (and watch, if given a watch) until cancelled."""
        loop = asyncio.get_running_loop()
        timer = self._arm(loop)
        if self.watch is not None:
            self.watch.start(loop)
        try:
            await asyncio.Event().wait()
        finally:
            timer[0].cancel()
            if self.watch is not None:
                self.watch.stop()

    def _record(self, lag: float, at: float) -> None:
        metrics.EVENT_LOOP_LAG.observe(lag)
        self.largest = max(self.largest, lag)
        self.samples += 1
        for limit in OVER:
            if lag > limit:
                self.over[limit] += 1
        if lag > OVER[0]:
            sample = Sample(lag, at)
            if len(self._worst) < WORST:
                heapq.heappush(self._worst, sample)
            else:
                heapq.heappushpop(self._worst, sample)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
        """Set the first timer; each sets the next. The list holds the one pending."""
        timer: list[asyncio.TimerHandle] = []

        def sample(due: float) -> None:
            ran = loop.time()
            self._record(max(0.0, ran - due), ran)
            if self.probe is not None:
                self.probe(due, ran)
            set_next()

        def set_next() -> None:
            now = loop.time()
            due = now + self.interval
            timer[:] = [loop.call_at(due, sample, due)]
            if self.watch is not None:
                self.watch.beat(now, due)

        set_next()
        return timer
