"""The garbage collector, run on our terms: its passes never hold the event loop for long.

CPython's automatic collector runs a full (generation 2) pass over every tracked object not
frozen whenever the survivors since the last one reach a quarter of the long-lived objects. At
E = 100,000 and 1,000 streams that is a million objects, 100-500 ms each, landing inside a
publish slice or a stream's step (BENCHMARKS.md, issue 10): the loop is held, and grpc.aio
moves no byte meanwhile. So, while `run` runs:

- Young passes (generations 0 and 1) stay automatic: each walks only the objects made since the
  last few, and they collect the short-lived cycles (exceptions and their tracebacks, finished
  tasks' frames) that are nearly all the cyclic garbage there is. A generation 1 pass comes
  every `middle` generation 0 passes (CPython's 10 made it 7-15 ms at 1,000 streams, 25 ms at
  E = 100,000, inside a fan-out's iteration), and walks what they left: while 1,000 streams are
  served that is their operations under way (coroutines, futures and gRPC's batch tags alive
  across an await, 15,000-20,000 objects at 10), all alive, nothing to collect (not one
  object in any young pass of a 30 s churn window at 1,000 streams, BENCHMARKS.md). At 2 each
  such object is walked about as often (once young, once more before it is promoted) but a
  pass walks a fifth of them: 5-7 ms. Promoted sooner is harmless here: generation 2 is
  frozen at the next quiet moment, and what dies there by its last reference is freed as
  ever.
- Automatic full passes are off (the third threshold is never reached).
- At quiet moments (`quiet`: the fan-out calls it once the streams have taken a publish),
  what survived since the last quiet moment is frozen (`gc.freeze`, O(1)): moved out of every
  later pass. A frozen object is still freed when its last reference goes; only a reference
  cycle that dies after it was frozen (or was garbage in generation 2 when frozen) is not
  collected there.
- So that such cycles cannot pile up, a full pass over everything (`gc.unfreeze`, collect,
  freeze) runs at a quiet moment once the heap has grown by `growth` (a quarter, as CPython's
  own rule for full passes) since the last one, and at most once per `interval`: leaked cycles
  stay bounded by that share of the heap or what leaks in an interval, and in a steady state
  (the fleet and the streams not growing) the heap does not grow, so the full pass (the one
  long hold left: ~0.1 s per 200,000 objects, 0.3-0.9 s at E = 100,000) is rare. The heap it
  grows from is not the one at start-up, before any client connected (a full pass then came
  about five minutes after every start, as the clients' streams alone are more than a quarter):
  for `warmup` seconds after the start the baseline follows the heap up at quiet moments, so it
  is the served heap, streams included; what leaks meanwhile is absorbed once. The heap is
  counted by `sys.getallocatedblocks()` (a walk of the allocator's pools, well under a
  millisecond), not `gc.get_freeze_count()`, which walks every frozen object (25 ms at 250,000:
  it was most of each fan-out's last step). What each full pass finds is in the metrics:
  `xdsfleet_gc_collected_total{generation="2"}` large pass after pass is a leak.

Every pass is timed in the thread's CPU (`xdsfleet_gc_pause_seconds{generation}`; the largest
kept for the benchmarks): on a dedicated machine that is its wall time, and on a shared one the
wall time would count the moments the process was not scheduled as the collector's. It must
not run work of its own on a timer: passes run where CPython or `quiet` puts them.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

from xdsfleet.telemetry import metrics

GROWTH = 0.25
MIDDLE = 2  # generation 0 passes per generation 1 pass (CPython's: 10)
INTERVAL = 300.0
WARMUP = 300.0  # the clients of a fleet have reconnected to a replica well within it
# Never reached: generation 1 passes since the last full pass would have to exceed it.
NEVER = 1 << 30


class Collector:
    def __init__(
        self,
        *,
        growth: float = GROWTH,
        interval: float = INTERVAL,
        warmup: float = WARMUP,
        middle: int = MIDDLE,
    ) -> None:
        self.growth = growth
        self.middle = middle
        self.interval = interval
        self.warmup = warmup
        self.largest: dict[str, float] = {}  # generation -> its longest pass, seconds
        self.full_passes = 0
        self._baseline = 0  # allocated blocks after the last full pass
        self._last_full = 0.0  # time.monotonic() of the last full pass
        self._began = 0.0  # time.monotonic() at `start`
        self._started: float | None = None
        self._thresholds: tuple[int, int, int] | None = None

    async def run(self) -> None:
        """Take the collector over until cancelled; then give it back as it was."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            self.stop()

    def start(self) -> None:
        """Freeze what start-up built (it lives as long as the process), turn automatic
        full passes off and generation 1 passes shorter (`middle`). Frozen, not collected: a
        full pass here walked the whole fleet (0.5-1 s at E = 100,000) just as the clients
        reconnect, to find almost nothing (1,339 objects at E = 20,000: start-up makes little
        cyclic garbage); what it made is collected by the first full pass that comes due."""
        if self._thresholds is not None:
            return
        gc.callbacks.append(self._timed)
        self._thresholds = gc.get_threshold()
        young, _, _ = self._thresholds
        gc.freeze()
        self._baseline = sys.getallocatedblocks()
        self._last_full = self._began = time.monotonic()
        gc.set_threshold(young, self.middle, NEVER)

    def stop(self) -> None:
        """Automatic passes as they were; what is frozen stays frozen."""
        if self._thresholds is None:
            return
        gc.set_threshold(*self._thresholds)
        self._thresholds = None
        gc.callbacks.remove(self._timed)

    def quiet(self) -> None:
        """A moment when nothing waits for the loop: freeze what survived since the last one,
        or run the full pass when it is due. Nothing while the collector is not ours."""
        if self._thresholds is None:
            return
        heap, now = sys.getallocatedblocks(), time.monotonic()
        if now < self._began + self.warmup:
            self._baseline = max(self._baseline, heap)  # the clients are still arriving
        grown = heap > self._baseline * (1 + self.growth)
        if grown and now >= self._last_full + self.interval:
            self.full()
        else:
            gc.freeze()

    def full(self) -> None:
        """A pass over every object, frozen or not; then freeze the survivors."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._baseline = sys.getallocatedblocks()
        self._last_full = time.monotonic()
        self.full_passes += 1
        metrics.GC_FROZEN.set(gc.get_freeze_count())  # O(objects), as the pass itself

    def reset(self) -> None:
        """Forget the largest passes and the count of full ones (the benchmarks' windows)."""
        self.largest.clear()
        self.full_passes = 0

    def _timed(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
            return
        if self._started is None:
            return
        took = time.thread_time() - self._started
        self._started = None
        generation = str(info.get("generation", 2))
        metrics.GC_PAUSE.labels(generation).observe(took)
        metrics.GC_COLLECTED.labels(generation).inc(info.get("collected", 0))
        self.largest[generation] = max(self.largest.get(generation, 0.0), took)
