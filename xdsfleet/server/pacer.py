"""Bound the streams' work per event-loop turn, so that timers and sockets wait little.

Why: asyncio runs, in one iteration, every handle that became ready during the last one, and
then looks at its timers and sockets again. gRPC hands the loop a burst of completions in one
callback, so after a fan-out hundreds of readers (its ACKs) and writers (woken streams, writes
done) are ready at once and run back to back: 70-90 ms at E = 100,000 and 1,000 streams, while
a timer due meanwhile waits behind all of them (the ready queue is first in, first out). The
work is the same whatever we do; it can be spread over more iterations.

How: every reader step (a request read) and writer step (a writer woken, or going on after a
wait for the write budget or a write) asks `full()` before its work. The first step of a turn
always runs, so a lone request is read at once and every turn moves on (the answer it wakes
asks after the turn closed, and waits for the next: two iterations on a quiet loop); a step
that finds the turn's `budget` spent, or the turn closed (below), waits for a later turn
(`next_turn`).
Those waiting are released in order of arrival, at the beginning of each turn as many as the
last turn's cost per step says fit in it (that cost counts the loop's other work in the turn
too, so what is released and the rest fill the budget together). A released step that finds
the budget spent anyway (steps gRPC made ready before it took it) waits again, ahead of the
others; a step asking in a turn with budget left runs even if others wait (strict first in,
first out made almost every step of a fan-out wait once, and making a step asking before the
released ones wait for them made every step gRPC woke in a turn's head wait: 11,000 of 30,600
deferrals in 30 changes of steady convergence at 1,000 streams). Readers and writers wait in one
queue: putting readers (cheap ACKs) ahead made a member loss's fan-out take 2.3x the floor in
both runs (11.5 and 18.4 s, against 6.4 s in one queue), its writers waiting behind the ACKs.

The budget is of the loop thread's CPU (`thread_time`): a process the machine does not schedule
would otherwise defer its steps for nothing. It is read only when the wall clock says the turn
may be spent, then not again before the wall clock has moved by what it said was left, nor once
it said spent (`_Share`): `thread_time` is a system call (0.5 us idle, 4-60 us on average while
the machine is loaded), `perf_counter` is not (40 ns). On a loaded machine the wall clock runs
well ahead of the thread's CPU, and every step of a turn's second half read it: ~620-920 reads
per change of steady convergence at 1,000 streams, ~60 reading it so.

What a turn is, and why a timer waits for at most one. asyncio's iteration (`_run_once`, which the
pacer does not touch) runs, in this order: the handles made ready during the last iteration (its
head), the callbacks of the sockets found ready, and the timers found due when the iteration began.
A timer that falls due while an iteration runs is found at the beginning of the next and runs after
that one's head. So an iteration whose head is a turn's steps must be followed by one whose head is
light: then the timers due during the turn's steps run at the end of the light iteration, before the
next turn's steps. Hence a turn begins with a timer due at once (`_turn`, `call_at`), in the timers'
part of an iteration, and releases the steps that wait; they run in the next iteration's head,
followed by the turn's mark (`_close`, `call_soon`'d just after they were woken), which closes the
turn (a step asking from then on waits) and sets the next turn's timer. That timer is found due at
the beginning of the following iteration and runs at its end, with the timers that fell due during
the turn's steps (before it or after it: all of them were found due when that iteration began).
Turns and iterations then alternate: a heavy iteration (the released steps and those asking before
the mark, within the budget), and a light one whose head holds only what the heavy one made ready
(steps that now wait, and what the pacer does not see). A timer due during a turn's steps waits for
the rest of them and a light head; one due during a light iteration waits for its rest and the next
turn's steps: at most one turn either way, where running the released steps in every iteration's
head made it two back to back (40-70 ms at E = 100,000 and 1,000 streams). A turn begun by a step on
a quiet loop sets its mark and the next turn's timer at once (anew, if a fan-out had set it before):
it closes at the head of the next iteration and the next turn begins at that iteration's end. Steps
that gRPC makes ready run in whichever head they land in: in a light one they wait (a deferral each,
the price of the alternation: ~580 per change of steady convergence at 1,000 streams, against ~190
of all kinds before). Steps the loop would otherwise start in any iteration, a fan-out's streams,
are held by the pacer's `feed` instead (pipeline/fanout.py): each turn wakes as many as it has room
for behind those it released, so they run in its heavy iteration without waiting once more. And a
step its caller knows to be light (an ACK that changes no subscription, told once by its reader,
server/requests.py: SotW's from its bytes, Delta's from its fields; ~26 us whatever the fleet)
runs in a light iteration while that has spent less than `LIGHT` of the budget since the turn
closed: most of what gRPC makes ready
during a turn is such ACKs, and deferring each (~10 us, and a turn later) cost steady convergence at
1,000 streams 1.26-1.37x the floor against 1.25x with SotW's run (turns back to back: 1.11-1.12x,
same minutes). Delta ACKs were then 43-74 % of the deferrals (6,800-8,500 of 11,600-16,000 in 30
changes); with them light, ~200-380 a change, not ~390-530. A timer then waits for at most a turn
and that share more, and no heavy step runs in a light iteration (a member loss's join of 12-25 ms
would not be light).

Deferring costs a future and a task switch for the step deferred (7 us alone, about 20 us in
the server), nothing for one that runs (`full()` is a few comparisons and a clock read). A step
whose task is cancelled while it waits leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from xdsfleet.telemetry import metrics

# Our work per turn, of the loop thread's CPU. A timer waits for at most the rest of one turn
# and a light head (the module docstring), plus what is not paced (gRPC's own callbacks, a
# write's completion, the resumption of a step that then waits, the collector). Under churn at
# E = 100,000 and 1,000 streams: lag max 40-75 ms wall, 0-2 of ~950 samples over 50 ms, longest
# iteration 25-28 ms (once 85), where turns back to back (main, same minutes) gave 72-115 ms,
# 94-162 samples and 30-36 ms; steady convergence at 1,000 streams took ~10 % longer (the light
# heads' deferrals). Less waits less but costs more (a waiting step ~10-20 us; more, smaller
# iterations make gRPC's completions dearer): at 10 ms, with turns back to back, steady
# convergence at 1,000 streams took 10-15 % more CPU per change.
BUDGET = 0.020
# Light steps run in a light iteration while it has spent less than this share of the budget
# since the turn closed (a timer then waits for at most a turn and this much more).
LIGHT = 0.25
# What a step is assumed to cost before any turn measured one (a SotW EDS ACK or a writer's
# step at E = 100,000 and 1,000 streams is 30-200 us); only the first release uses it.
STEP = 0.0002


class _Share:
    """A share of the loop thread's CPU from a moment on (a turn's budget, a light iteration's
    part of it), found spent reading that CPU as little as can be (the module docstring). The
    thread cannot have run longer than the wall clock moved, so the CPU is read only once the
    wall clock says the share may be spent; if it is not, not again before the wall clock has
    moved by what is left of it; once it is, it stays so until `begin`. The same answers as
    reading the CPU at every look (`tests/test_pacer.py` holds it with hypothesis)."""

    __slots__ = ("_at", "_cpu_at", "_room", "_spent", "share")

    def __init__(self, share: float) -> None:
        self.share = share
        self._at = self._cpu_at = 0.0
        self._room = share  # the wall time from `_at` before which it cannot be spent
        self._spent = False

    def begin(self, now: float, cpu: float) -> None:
        self._at, self._cpu_at, self._room, self._spent = now, cpu, self.share, False

    def spent(self, now: float, cpu: Callable[[], float]) -> bool:
        if self._spent:
            return True
        if now - self._at <= self._room:
            return False
        used = cpu() - self._cpu_at
        if used > self.share:
            self._spent = True
            return True
        self._room = now - self._at + (self.share - used)
        return False


class Pacer:
    """One per event loop: the turn under way and the steps waiting for a later one."""

    def __init__(
        self,
        budget: float = BUDGET,
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self.budget = budget
        # The budget is of this thread's CPU: a process the machine does not schedule should
        # not defer its steps for that. Read only when `clock` (40 ns) says it may matter
        # (`_Share`): `thread_time` is a system call, several us on a loaded machine.
        self._clock = clock
        self._cpu = cpu
        self._began: float | None = None  # when this turn began; None: no turn (idle)
        self._began_cpu = 0.0
        self._turn_budget = _Share(budget)  # this turn's
        self._ran = 0  # steps run this turn
        # While a turn is under way: the callback that schedules the next one (`_mark`, until
        # it has run) and the next turn's beginning (`_next`, a timer).
        self._mark: asyncio.Handle | None = None
        self._next: asyncio.TimerHandle | None = None
        self._closed = False  # the turn admits no more steps (`_close` ran)...
        self._light = _Share(budget * LIGHT)  # ... but light ones, for this share since then
        self._step = STEP  # what a step cost, the loop's other work included, lately
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Released steps found over budget this turn: they go before `_waiting` next.
        self._again: list[asyncio.Future[None]] = []
        self.deferred = 0  # steps that waited for a later turn, since the start
        # Steps waiting elsewhere (the streams a fan-out has yet to wake), woken by each turn
        # as many as it has room for after those it released; says how many it woke.
        self.feed: Callable[[int], int] | None = None

    def wanted(self) -> None:
        """`feed` has steps to wake: a turn begins at the end of the next iteration, unless one
        is under way (its next turn feeds them); a step that begins a turn first sets it anew."""
        if self._began is None:
            self._turn_due()

    def full(self, light: bool = False) -> bool:
        """Whether a step must wait for a later turn (`next_turn`); if not, it runs now. A
        `light` step (a few tens of us, whatever the fleet) may run in a light iteration."""
        if light and self._closed and not self._light.spent(self._clock(), self._cpu):
            self._ran += 1
            return False
        return not self._admit()

    async def next_turn(self) -> None:
        """Wait until a later turn lets the step run (after `full()` said so)."""
        loop = asyncio.get_running_loop()
        again = False
        while True:
            waiter = loop.create_future()
            (self._again if again else self._waiting).append(waiter)
            self.deferred += 1
            metrics.PACER_DEFERRED.inc()
            try:
                await waiter
            finally:
                if waiter.cancelled():
                    # Its task was cancelled before its turn came: nothing of it stays.
                    self._discard(waiter)
            if self._admit():
                return
            again = True  # over budget: first in the next turn

    def _admit(self) -> bool:
        now = self._clock()
        if self._began is None:
            # The first step since the loop was last quiet: a turn begins. It closes at the
            # head of the next iteration, and the next turn begins at that iteration's end
            # (the module docstring).
            self._begin(now)
            self._mark = asyncio.get_running_loop().call_soon(self._close)
            if self._next is not None:
                # `wanted` set it, maybe an iteration ago: due at this iteration's end, it would
                # begin the next turn right behind this one's steps, ahead of its mark.
                self._next.cancel()
                self._next = None
            self._turn_due()
        elif self._closed or (
            self._ran  # the first step of a turn always runs: every turn moves on
            and self._turn_budget.spent(now, self._cpu)
        ):
            return False
        self._ran += 1
        return True

    def _begin(self, now: float) -> None:
        self._began, self._began_cpu, self._ran = now, self._cpu(), 0
        self._turn_budget.begin(now, self._began_cpu)

    def _turn_due(self) -> None:
        """The next turn begins with a timer due now: at the end of the next iteration."""
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.call_at(loop.time(), self._turn)

    def _turn(self) -> None:
        """A timer: the next turn begins, at the end of the iteration after the last one's
        steps ran (the module docstring)."""
        self._next = None
        self._closed = False
        if self._ran:
            # What a step costs, the loop's other work in the turn included, so that what is
            # released fills the turn's budget with the rest. Too few leave the budget to
            # steps asking then; too many wait again, first in the turn after.
            self._step = max(self._cpu() - self._began_cpu, 1e-6) / self._ran
        if self._again:
            self._waiting.extendleft(reversed(self._again))
            self._again = []
        self._begin(self._clock())
        room = max(1, int(self.budget / self._step))
        released = 0
        while released < room and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                released += 1
        try:
            # Then those the feed holds (streams to wake), behind the released: they run in
            # the same turn, without a deferral each.
            if released < room and self.feed is not None:
                released += self.feed(room - released)
        finally:
            # Even if a wake raised: a pacer left with a turn under way and neither a mark nor
            # a timer would keep every later step waiting.
            if released:
                # Scheduled after the released steps were woken: it runs behind them.
                self._mark = asyncio.get_running_loop().call_soon(self._close)
            else:
                # Nothing waits (released steps run in the next head, before any next turn):
                # the next step begins a turn, as one would begin now.
                self._began = None

    def _close(self) -> None:
        """Behind the turn's first steps, in the head of the iteration after it began: the
        turn admits no more, and the next begins with a timer due now, which runs at the end
        of the next iteration, after the timers that fell due meanwhile."""
        self._mark = None
        self._closed = True
        self._light.begin(self._clock(), self._cpu())
        self._turn_due()

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        # Rare (a stream ends while it waits), so a walk of the queue is fine.
        for queue in (self._waiting, self._again):
            if waiter in queue:
                queue.remove(waiter)
                return
