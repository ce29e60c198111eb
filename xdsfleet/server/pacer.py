"""Bound the streams' work per event-loop iteration, so that timers and sockets wait little.

Why: asyncio runs, in one iteration, every handle that became ready during the last one, and
then looks at its timers and sockets again. gRPC hands the loop a burst of completions in one
callback, so after a fan-out hundreds of readers (its ACKs) and writers (woken streams, writes
done) are ready at once and run back to back: 70-90 ms at E = 100,000 and 1,000 streams, while
a timer due meanwhile waits behind all of them (the ready queue is first in, first out). The
work is the same whatever we do; it can be spread over more iterations.

How: every reader step (a request read) and writer step (a writer woken) asks `full()` before
its work. The first step of a turn always runs, so a lone request is handled at once; a step
that finds the turn's `budget` spent, or steps already waiting, waits for a later turn
(`next_turn`), in order of arrival (first in, first out: a step deferred goes before any that
came after it). Each turn releases about as many waiting steps as the last turn ran in its
budget; one released finds the budget spent waits again, ahead of the others.

What a turn is, without hooking asyncio's private iteration (`_run_once`): a turn begins at the
first step that runs after the previous turn ended, and ends with a callback the turn's first
step scheduled with `call_soon`. A handle scheduled during an iteration runs in the next one
(asyncio runs exactly the handles that were ready when the iteration began), so the end comes
at the earliest in the next iteration, after every step of this one: a turn never ends inside
the iteration it began in, and its time counts all of that iteration's steps after its first.
It may also count the steps that come before the end in the next iteration (those made ready
earlier than it): they are then measured against a turn that began earlier, which can only
make them wait sooner, never let an iteration run longer. A released step is woken by the
end-of-turn callback, so it runs in the iteration after it, and the next end is scheduled
after the releases: it comes after the released steps, and the turn they run in is theirs.

Deferring costs a future and a task switch for the step deferred, nothing for one that runs
(`full()` is a few comparisons and a clock read). This must not wait on an idle loop, nor hold
anything for a step whose task was cancelled while it waited.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# Our work per turn. A timer due in a turn waits for the rest of it and the start of the next
# (steps made ready before it), so about twice this; plus what is not paced (gRPC's own
# callbacks, a write's completion, the collector).
BUDGET = 0.015
# What a step is assumed to cost before any turn measured one (a SotW EDS ACK or a writer's
# step at E = 100,000 and 1,000 streams is 30-200 us); only the first release uses it.
STEP = 0.0002


class Pacer:
    """One per event loop: the turn under way and the steps waiting for a later one."""

    def __init__(
        self, budget: float = BUDGET, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.budget = budget
        self._clock = clock
        self._began: float | None = None  # when this turn began; None: no turn (idle)
        self._ran = 0  # steps run this turn
        self._end: asyncio.Handle | None = None  # the turn's end, while a turn is under way
        self._step = STEP  # what a step cost, the loop's other work included, lately
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Released steps found over budget this turn: they go before `_waiting` next.
        self._again: list[asyncio.Future[None]] = []
        self._released = 0  # woken, not run yet
        self.deferred = 0  # steps that waited for a later turn, since the start

    def full(self) -> bool:
        """Whether a step must wait for a later turn (`next_turn`); if not, it runs now."""
        if self._waiting or self._released:
            return True  # others came first
        return not self._admit(self._clock())

    async def next_turn(self) -> None:
        """Wait until a later turn lets the step run (after `full()` said so)."""
        loop = asyncio.get_running_loop()
        again = False
        while True:
            waiter = loop.create_future()
            (self._again if again else self._waiting).append(waiter)
            self.deferred += 1
            try:
                await waiter
            finally:
                if waiter.cancelled():
                    # Its task was cancelled before its turn came: nothing of it stays.
                    self._discard(waiter)
                else:
                    self._released -= 1
            if self._admit(self._clock()):
                return
            again = True  # over budget: first in the next turn

    def _admit(self, now: float) -> bool:
        if self._began is None:
            # The first step since the loop was last quiet: a turn begins, and ends next time
            # round (the module docstring).
            self._began, self._ran = now, 0
            self._end = asyncio.get_running_loop().call_soon(self._end_turn)
        elif now - self._began > self.budget:
            return False
        self._ran += 1
        return True

    def _end_turn(self) -> None:
        now = self._clock()
        assert self._began is not None
        if self._ran:
            self._step = max(now - self._began, 1e-6) / self._ran
        if self._again:
            self._waiting.extendleft(reversed(self._again))
            self._again = []
        if not self._ran and not self._waiting and not self._released:
            self._began = self._end = None  # quiet: the next step begins a turn
            return
        # The next turn begins here, and ends where this callback comes next time round: once
        # it runs first in an iteration (nothing made ready before it), it stays first, and a
        # turn is an iteration. Scheduled before the releases, so that they run in that turn.
        self._began, self._ran = now, 0
        self._end = asyncio.get_running_loop().call_soon(self._end_turn)
        if self._released:
            # Those released last time run after this, in the turn just begun; releasing more
            # now would let these go before those of them that find the budget spent.
            return
        release = max(1, int(self.budget / self._step))
        while release and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._released += 1
                release -= 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        # Rare (a stream ends while it waits), so a walk of the queue is fine.
        for queue in (self._waiting, self._again):
            if waiter in queue:
                queue.remove(waiter)
                return
