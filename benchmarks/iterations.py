"""The event loop's iterations, and what each late timer waited for: the benchmarks' own look.

`xdsfleet_event_loop_lag_seconds` is wall time: how late the loop's timer ran. On a machine
shared with other work it also counts moments the server's loop thread was not running: waiting
for a core (the machine), or for the GIL held by another of the server's threads (gRPC's
poller). What the loop-lag target is about is how long the server's own code kept the loop from
its timers and sockets. Two figures say it, in the loop thread's CPU, which scheduling does not
inflate:

- each iteration's CPU: every callback that was ready, back to back, between two looks at the
  sockets. A timer waits at most the iteration it fell due in and the part of the next before
  it (asyncio runs what the last iteration made ready, then I/O callbacks, then due timers).
- per lag sample (`LoopLag`'s probe), an `Attribution` of its wait, from the moment the timer
  was *due* to the moment it ran: the loop thread's CPU in it ("own"); the time the thread was
  runnable but had no core ("queued": the kernel's run delay, /proc's schedstat); the rest, when
  it was neither running nor queued ("blocked": the GIL, or a select); the CPU the process's
  other threads took meanwhile; and the iterations the wait spanned, with their CPU.

How: `_run_once` of the loop and `select` of its selector are wrapped on the instance, and at the
start of every iteration and at every return from the select the clocks are read. A sample's
clocks at its due time are interpolated within the stretch between two such points it fell in:
linearly inside a run of callbacks (the thread computes throughout); inside a select, its CPU is
taken as spent before the due time (the work before the select) and its run delay after (a
thread woken at its timeout waits for a core then, as long as the stretch after the due time
allows). So "own" is exact but for the part of one
iteration the due time fell in; `Attribution.own_bounds` are the two ends of that uncertainty.

The reads cost ~5 µs per iteration (four clocks, twice; the CPU-only look before them cost
~1.5), 0.2 % of a core at the ~330 iterations a second of churn at 1,000 streams. For the
benchmarks only: the server never does this.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OVER = (0.02, 0.05)  # iterations longer than these are counted
OWN_OVER = (0.02, 0.05, 0.1)  # samples whose own CPU exceeds these are counted (as LoopLag.OVER)
KEEP_OVER = 0.05  # samples lagging more than this keep their attribution
KEEP = 5_000  # ... at most so many
# Points kept at most: two per iteration. A sample lets go of those before its due time, so
# this bounds only a loop whose lag is not sampled; a sample needs those since its due time.
POINTS = 1 << 13

# What starts at a point: an iteration (the work before its select, then the select), or the
# run of its callbacks once the select returned.
_ITERATION, _RUN = 0, 1


@dataclass(frozen=True, slots=True)
class Attribution:
    """One lag sample's wait, from its timer's due time to its callback; seconds."""

    at: float  # time.monotonic() when it ran
    lag: float  # wall time, due to run
    own: float  # the loop thread's CPU in it
    own_bounds: tuple[float, float]  # ... at least, at most (the interpolation's uncertainty)
    queued: float  # the loop thread runnable, without a core
    blocked: float  # neither running nor queued: the GIL, a select, a page fault
    others: float  # CPU of the process's other threads (gRPC's poller, ...)
    iterations: tuple[float, ...]  # the loop thread's CPU of each iteration it spanned, in it


@dataclass(frozen=True, slots=True)
class _Clocks:
    wall: float
    cpu: float  # the loop thread's
    process: float  # every thread's
    queued: float  # the loop thread's run delay


class _RunDelay:
    """The loop thread's time spent runnable but not running, from /proc/<pid>/task/<tid>/
    schedstat (second field, ns); read raw per point, parsed only when a sample asks."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(
                f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY
            )
        except OSError:  # a kernel without schedstats: nothing is queued, as far as we know
            self._fd = None

    def raw(self) -> bytes:
        return os.pread(self._fd, 64, 0) if self._fd is not None else b"0 0 0"

    @staticmethod
    def seconds(raw: bytes) -> float:
        return int(raw.split()[1]) / 1e9

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Iterations:
    def __init__(self) -> None:
        # (wall, kind, loop thread CPU, process CPU, raw schedstat), in time order.
        self._points: deque[tuple[float, int, float, float, bytes]] = deque(maxlen=POINTS)
        self._delay: _RunDelay | None = None
        self._started: float | None = None  # loop thread CPU at the current iteration's start
        self.reset()

    def reset(self) -> None:
        """Forget the iterations and samples so far (a benchmark's window starts)."""
        self.largest = 0.0  # thread CPU seconds of the longest iteration
        self.over = dict.fromkeys(OVER, 0)
        self.count = 0
        self.samples = 0  # lag samples attributed
        self.largest_own = 0.0  # the most own CPU in one sample's wait
        self.own_over = dict.fromkeys(OWN_OVER, 0)
        self.kept: list[Attribution] = []  # the samples lagging more than KEEP_OVER

    def install(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Time every iteration of `loop` from now on; returns the undo. Called in the loop's
        thread (its CPU clock and run delay are the calling thread's)."""
        # Another measure's look may be installed already (two servers on one loop): wrap it,
        # and give it back on undo.
        outer = vars(loop).get("_run_once")
        run_once: Callable[[], Any] = getattr(loop, "_run_once")  # noqa: B009
        selector = getattr(loop, "_selector")  # noqa: B009
        outer_select = vars(selector).get("select")
        select: Callable[[float | None], Any] = selector.select
        self._delay = delay = _RunDelay()
        points = self._points
        points.clear()
        self._started = None
        monotonic, thread_time, process_time, raw = (
            time.monotonic,
            time.thread_time,
            time.process_time,
            delay.raw,
        )

        def timed() -> None:
            cpu = thread_time()
            points.append((monotonic(), _ITERATION, cpu, process_time(), raw()))
            if self._started is not None:
                self._iteration(cpu - self._started)
            self._started = cpu
            run_once()

        def selecting(timeout: float | None = None) -> Any:
            events = select(timeout)
            points.append((monotonic(), _RUN, thread_time(), process_time(), raw()))
            return events

        setattr(loop, "_run_once", timed)  # noqa: B010
        setattr(selector, "select", selecting)  # noqa: B010

        def undo() -> None:
            for owner, mine, theirs, name in (
                (loop, timed, outer, "_run_once"),
                (selector, selecting, outer_select, "select"),
            ):
                if theirs is not None:
                    setattr(owner, name, theirs)
                elif vars(owner).get(name) is mine:
                    delattr(owner, name)
            delay.close()

        return undo

    def _iteration(self, took: float) -> None:
        self.count += 1
        self.largest = max(self.largest, took)
        for limit in OVER:
            if took > limit:
                self.over[limit] += 1

    def sample(self, due: float, ran: float) -> Attribution | None:
        """Attribute one lag sample (`LoopLag`'s probe: its timer was due at `due` and ran at
        `ran`, both loop.time(), i.e. time.monotonic()), in the loop's thread; None if its due
        time is older than the points kept."""
        if self._delay is None:
            return None
        now = _Clocks(
            time.monotonic(),
            time.thread_time(),
            time.process_time(),
            _RunDelay.seconds(self._delay.raw()),
        )
        found = self.attribute(due, ran, now)
        # The next sample is due after this one ran: the points before this one's due time,
        # but the last, are of no more use.
        points = self._points
        while len(points) > 1 and points[1][0] <= due:
            points.popleft()
        if found is None:
            return None
        self.samples += 1
        self.largest_own = max(self.largest_own, found.own)
        for limit in OWN_OVER:
            if found.own > limit:
                self.own_over[limit] += 1
        if found.lag > KEEP_OVER and len(self.kept) < KEEP:
            self.kept.append(found)
        return found

    def attribute(self, due: float, ran: float, now: _Clocks) -> Attribution | None:
        """The wait from `due` to `ran`, by the points kept and the clocks `now` (read at
        `ran`, give or take the microseconds between)."""
        points = self._points
        first = bisect.bisect_right(points, due, key=lambda p: p[0])
        if first == 0:
            return None
        before = points[first - 1]
        after = points[first] if first < len(points) else None
        at_due = _at(due, before, after, now)
        spanned = [p for p in itertools.islice(points, first, None) if p[1] == _ITERATION]
        edges = [at_due.cpu, *(p[2] for p in spanned), now.cpu]
        lag = max(0.0, ran - due)
        own = max(0.0, now.cpu - at_due.cpu)
        queued = max(0.0, now.queued - at_due.queued)
        return Attribution(
            at=ran,
            lag=lag,
            own=own,
            own_bounds=(
                now.cpu - (after[2] if after is not None else now.cpu),
                now.cpu - before[2],
            ),
            queued=queued,
            blocked=max(0.0, lag - own - queued),
            others=max(0.0, now.process - at_due.process - own),
            iterations=tuple(b - a for a, b in itertools.pairwise(edges)),
        )


def _at(
    due: float,
    before: tuple[float, int, float, float, bytes],
    after: tuple[float, int, float, float, bytes] | None,
    now: _Clocks,
) -> _Clocks:
    """The clocks at `due`, between the point `before` it and the next one (`now` if none)."""
    start = _Clocks(before[0], before[2], before[3], _RunDelay.seconds(before[4]))
    end = (
        _Clocks(after[0], after[2], after[3], _RunDelay.seconds(after[4]))
        if after is not None
        else now
    )
    span = end.wall - start.wall
    share = (due - start.wall) / span if span > 0 else 1.0
    process = start.process + share * (end.process - start.process)
    if before[1] == _ITERATION:
        # In the select's stretch: the CPU was the work before the select, the run delay the
        # wait for a core once woken (at the timeout, or earlier by a socket).
        return _Clocks(due, end.cpu, process, max(start.queued, end.queued - (end.wall - due)))
    return _Clocks(
        due,
        start.cpu + share * (end.cpu - start.cpu),
        process,
        start.queued + share * (end.queued - start.queued),
    )
