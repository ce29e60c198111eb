"""A bound on the response bytes being written at once, across every stream.

A new stream's first responses can be megabytes (a SotW EDS response of a 100,000-endpoint fleet
is 4.5 MB), and a response exists twice while it is written: the bytes the writer joined and
gRPC's own copy. Five hundred streams connecting at once held ~1.8 GiB of them, well above the
steady state. So a writer takes a share of this budget before it joins a response and gives it
back once gRPC has taken the write; past the budget, writers wait their turn, first come first
served. Peak memory is then the steady state plus the budget.

It never deadlocks: a writer holds one share at a time and gives it back whatever happens; a
response larger than the whole budget goes alone rather than never; and a write still under way
after `patience` seconds (a client that stopped reading; the watchdog cuts it later) stops
counting, so that a few stalled clients cannot stop everyone else. Nor can many: a writer that
has waited `patience` goes whatever the budget says (rule 23), or clients that never read,
opening streams faster than their writes are written off, would queue up ahead of every reading
client one `patience` each (the watchdog, not this budget, bounds what stalled writes hold).

It only counts: it must not look at what is written, nor at who writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(eq=False, slots=True)
class Share:
    """Bytes taken from the budget by one write."""

    size: int
    since: float
    counted: bool = True


class WriteBudget:
    def __init__(self, limit: int = 64 * MIB, *, patience: float = 2.0) -> None:
        self.limit = limit
        self.patience = patience
        self.in_flight = 0  # bytes of the shares counted now
        self._counted: set[Share] = set()
        # Writers waiting, first come first: size, since when, and their turn.
        self._waiting: deque[tuple[int, float, asyncio.Future[Share]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def try_take(self, size: int, now: float) -> Share | None:
        """A share of `size` bytes now (`now`: the loop's time) if it fits and no writer waits
        before it, as most writes do; None: `take` it. A coroutine per write cost every
        stream of a fan-out for nothing."""
        if not self._waiting and self._fits(size):
            return self._grant(size, now)
        return None

    async def take(self, size: int) -> Share:
        """A share of `size` bytes, once it fits (or nothing else is under way)."""
        loop = asyncio.get_running_loop()
        share = self.try_take(size, loop.time())
        if share is not None:
            return share
        future: asyncio.Future[Share] = loop.create_future()
        entry = (size, loop.time(), future)
        self._waiting.append(entry)
        self._watch(loop)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(future.result())  # granted as it was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(entry)
                self._grant_waiting(loop)  # the head of the queue may have been this one
            raise

    def give(self, share: Share) -> None:
        """The write is over (or failed): its bytes no longer count."""
        self._uncount(share)
        if self._waiting:
            self._grant_waiting(asyncio.get_running_loop())

    def _fits(self, size: int) -> bool:
        return self.in_flight == 0 or self.in_flight + size <= self.limit

    def _grant(self, size: int, now: float) -> Share:
        share = Share(size, now)
        self.in_flight += size
        self._counted.add(share)
        return share

    def _uncount(self, share: Share) -> None:
        if share.counted:
            share.counted = False
            self.in_flight -= share.size
            self._counted.discard(share)

    def _grant_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            self._grant_next(loop)

    def _grant_next(self, loop: asyncio.AbstractEventLoop) -> None:
        size, _, future = self._waiting.popleft()
        if not future.done():  # a cancelled writer leaves its entry to its own handler
            future.set_result(self._grant(size, loop.time()))

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """While writers wait, look now and then for writes that stopped moving."""
        if self._timer is None:
            self._timer = loop.call_later(self.patience / 2, self._write_off, loop)

    def _write_off(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        stuck = loop.time() - self.patience
        for share in [s for s in self._counted if s.since <= stuck]:
            self._uncount(share)
        self._grant_waiting(loop)
        self._let_go(loop, stuck)
        if self._waiting:
            self._watch(loop)

    def _let_go(self, loop: asyncio.AbstractEventLoop, stuck: float) -> None:
        """Let the writers that waited since `stuck` go (stalled writes ahead must not hold
        them), a quarter of the budget's bytes per loop iteration: each joins its response as
        it resumes, and the hundreds of a member loss's fan-out (4.5 MB each, ~3 ms to join)
        let go at once held the loop 0.6-0.8 s."""
        size = 0
        while self._waiting and self._waiting[0][1] <= stuck:
            if size and size + self._waiting[0][0] > self.limit // 4:
                loop.call_soon(self._let_go, loop, stuck)
                return
            size += self._waiting[0][0]
            self._grant_next(loop)
