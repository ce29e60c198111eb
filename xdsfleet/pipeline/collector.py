"""The garbage collector, run on our terms: its passes never hold the event loop for long.

CPython's automatic collector runs a full (generation 2) pass over every tracked object not
frozen whenever the survivors since the last one reach a quarter of the long-lived objects. At
E = 100,000 and 1,000 streams that is a million objects, 100-500 ms each, landing inside a
publish slice or a stream's step (BENCHMARKS.md, issue 10): the loop is held, and grpc.aio
moves no byte meanwhile. So, while `run` runs:

- Generation 0 passes stay automatic: each walks only the objects made since the last one
  (700), and they collect the short-lived cycles (exceptions and their tracebacks, finished
  tasks' frames) that are nearly all the cyclic garbage there is.
- Generation 1 passes are off while quiet moments keep coming: what survives a generation 0
  pass waits in generation 1, walked by no pass, until the next quiet moment freezes it. A
  generation 1 pass walks what the generation 0 passes since the last one left, and while
  1,000 streams are served that is their operations under way (coroutines, futures and gRPC's
  batch tags alive across an await) and the responses waiting for the write budget, all alive:
  7-25 ms each inside a fan-out's iteration, to collect nothing (not one object in any
  generation 1 pass of a 30 s churn window at 1,000 streams, BENCHMARKS.md). So each object is
  walked once, young. A cycle that outlives a generation 0 pass and dies before the next quiet
  moment is then frozen with it: what the full pass below is for. When no quiet moment has come
  for `idle` seconds (a server with nothing to publish, whose streams still come and go),
  generation 1 passes come back, every `middle` generation 0 passes, until the next one.
- While a publish's fan-out runs (`busy`), generation 0 passes wait until `busy_young`
  objects made since the last pass are alive at once. At CPython's 700, what they walked was
  the fan-out's operations under way and the streams' new state (a write or a read of each of
  1,000 streams: their futures, coroutines, gRPC's batch tags, what each stream keeps of the
  version it was sent), some 20 passes a change at 1,000 streams that collected nothing:
  ~10 ms of the loop thread's CPU a change, a tenth of it, spent while the streams wait. The
  fan-out's quiet moment comes while the threshold is still raised, so what it left young is
  frozen, never walked, as the survivors of a generation 0 pass were before; a cycle that died
  young during the fan-out is frozen with them, for the full pass below (in a steady state
  generation 0 passes had found 0.2 objects a change to collect). A fan-out that keeps more
  than `busy_young` objects alive gets passes as before (each ~10 ms); one that ends without
  its quiet moment (cancelled: a member loss does not wait) gives CPython's threshold back,
  and its next pass walks what the fan-out left.
- Automatic full passes are off (the third threshold is never reached).
- At quiet moments (`quiet`: the fan-out calls it once the streams have taken a publish),
  what survived since the last quiet moment is frozen (`gc.freeze`, O(1)): moved out of every
  later pass. A frozen object is still freed when its last reference goes; only a reference
  cycle that dies after it was frozen (or was garbage in generation 1 or 2 when frozen) is
  not collected there.
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
import contextlib
import gc
import sys
import time
from collections.abc import Iterator
from typing import Any

from xdsfleet.telemetry import metrics

GROWTH = 0.25
MIDDLE = 2  # generation 0 passes per generation 1 pass, when they run (CPython's: 10)
IDLE = 60.0  # seconds without a quiet moment after which generation 1 passes come back
INTERVAL = 300.0
WARMUP = 300.0  # the clients of a fleet have reconnected to a replica well within it
BUSY_YOUNG = 20_000  # young objects alive before a pass, during a fan-out (~10 ms a pass)
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
        idle: float = IDLE,
        busy_young: int = BUSY_YOUNG,
    ) -> None:
        self.growth = growth
        self.busy_young = busy_young
        self.middle = middle
        self.idle = idle
        self.interval = interval
        self.warmup = warmup
        self.largest: dict[str, float] = {}  # generation -> its longest pass, seconds
        self.full_passes = 0
        self._baseline = 0  # allocated blocks after the last full pass
        self._last_full = 0.0  # time.monotonic() of the last full pass
        self._began = 0.0  # time.monotonic() at `start`
        self._last_quiet = 0.0  # time.monotonic() of the last quiet moment (or `start`)
        self._middle = False  # whether generation 1 passes run (no quiet moment for `idle`)
        self._busy = False  # a fan-out runs (`busy`): its end is the quiet moment to come
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
        """Freeze what start-up built (it lives as long as the process) and turn automatic
        full and generation 1 passes off. Frozen, not collected: a full pass here walked the
        whole fleet (0.5-1 s at E = 100,000) just as the clients reconnect, to find almost
        nothing (1,339 objects at E = 20,000: start-up makes little cyclic garbage); what it
        made is collected by the first full pass that comes due."""
        if self._thresholds is not None:
            return
        gc.callbacks.append(self._timed)
        self._thresholds = gc.get_threshold()
        gc.freeze()
        self._baseline = sys.getallocatedblocks()
        self._last_full = self._began = self._last_quiet = time.monotonic()
        self._young_only()

    def stop(self) -> None:
        """Automatic passes as they were; what is frozen stays frozen."""
        if self._thresholds is None:
            return
        gc.set_threshold(*self._thresholds)
        self._thresholds = None
        gc.callbacks.remove(self._timed)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """While a publish's fan-out runs, generation 0 passes wait for `busy_young` young
        objects; call `quiet` inside, once the publish is out. Nothing while the collector is
        not ours."""
        if self._thresholds is None:
            yield
            return
        gc.set_threshold(self.busy_young, NEVER, NEVER)
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            if self._thresholds is not None:  # not stopped meanwhile
                self._young_only()

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
        self._last_quiet = now
        if self._middle:
            self._young_only()

    def _young_only(self) -> None:
        assert self._thresholds is not None
        gc.set_threshold(self._thresholds[0], NEVER, NEVER)
        self._middle = False

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
        if generation == "0" and not self._middle and not self._busy:
            self._middle_if_idle()

    def _middle_if_idle(self) -> None:
        """No quiet moment for a while (nothing to publish): cycles die in generation 1 again,
        as nothing freezes them for the full pass."""
        if self._thresholds is not None and time.monotonic() > self._last_quiet + self.idle:
            gc.set_threshold(self._thresholds[0], self.middle, NEVER)
            self._middle = True
