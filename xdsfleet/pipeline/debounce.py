"""The debouncer: the current fleet state, with bursts of source events coalesced.

A state is published 100 ms after the last update and never more than 1 s after the first of a
burst (xds-protocol rule 24); an update that removes endpoints is published at once, because
removals are what a failover waits for. Both still wait for the publish under way and its
settling (the streams taking and ACKing it while that keeps moving, at most 10 s:
pipeline/fanout.py; `Debouncer`): a second publish started over the first would only make
every stream skip one, so when a fan-out takes longer than the second, the updates meanwhile
go out as one publish when it ends. Except when a member is lost (all its EndpointSlices gone,
or the member itself): that is the failover this project exists for, so it does not wait for
the last publish to settle (only for the publish itself to end); streams still taking the last
one take the loss instead, which supersedes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog

from xdsfleet.model.fleet import EndpointSlice, FleetState, MemberState

log = structlog.get_logger(__name__)

QUIET = 0.1
MAX_DELAY = 1.0


def _ready_addresses(slices: Iterable[EndpointSlice]) -> set[tuple[str, str, str]]:
    return {
        (s.namespace, s.service_name, address)
        for s in slices
        for e in s.endpoints
        if e.ready
        for address in e.addresses
    }


def _member_removes(previous: MemberState, member: MemberState) -> bool:
    """Whether a ready address of `previous` is gone or not ready in `member`. Only the slices
    that are not the very same objects are looked at (the sources share unchanged ones): an
    event costs its slice, not the member's thousands."""
    if previous.endpoint_slices is member.endpoint_slices:
        return False
    kept = {id(s) for s in member.endpoint_slices}
    replaced = [s for s in previous.endpoint_slices if id(s) not in kept]
    before = _ready_addresses(replaced)
    if not before:
        return False
    services = {(namespace, service) for namespace, service, _ in before}
    after = _ready_addresses(
        s for s in member.endpoint_slices if (s.namespace, s.service_name) in services
    )
    return bool(before - after)


def removes_endpoints(old: FleetState, new: FleetState) -> bool:
    """True if some ready endpoint of `old` is gone or no longer ready in `new`."""
    before = {m.member.name: m for m in old.members}
    for member in new.members:
        previous = before.pop(member.member.name, None)
        if previous is None or previous is member:
            continue
        if _member_removes(previous, member):
            return True
    return any(_ready_addresses(m.endpoint_slices) for m in before.values())


def loses_member(old: FleetState, new: FleetState) -> bool:
    """True if a member of `old` with ready endpoints has no EndpointSlice left in `new`, or is
    gone: a member lost, not one endpoint. O(members)."""
    after = {m.member.name: m for m in new.members}
    for previous in old.members:
        member = after.get(previous.member.name)
        if member is previous or (member is not None and member.endpoint_slices):
            continue
        if any(e.ready for s in previous.endpoint_slices for e in s.endpoints):
            return True
    return False


class Debouncer:
    """Hands states to an asynchronous `publish`, one publish at a time.

    Publishes are paced: after each, `settle(event_at)` is awaited before the next may start
    (`serve` passes `FanOut.settle`, which waits until the streams have taken what was
    published; `event_at` is the loop time of the first event of the state published). While a
    publish and its settling run, states keep arriving and only the latest waits; so no
    generation is skipped because the next was published over it before the streams got to it,
    and a burst costs one publish per fan-out, not one per event.
    """

    def __init__(
        self,
        publish: Callable[[FleetState], Awaitable[None]],
        *,
        quiet: float = QUIET,
        max_delay: float = MAX_DELAY,
        current: FleetState | None = None,
        settle: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._publish = publish
        self._quiet = quiet
        self._max_delay = max_delay
        self._settle = settle
        self.current = current
        self._pending: FleetState | None = None
        self._first_at = 0.0
        self._timer: asyncio.Handle | None = None
        self._running: asyncio.Task[None] | None = None
        self._settling: asyncio.Future[None] | None = None
        self._due = False  # a flush came while a publish ran: publish again when it ends

    def update(self, state: FleetState) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._pending is None:
            self._first_at = now
        self._pending = state
        if self._settling is not None and self._loss_waits():
            # The failover goes first (see the module's docstring), even when a flush already
            # waits for this settling to end.
            self._settling.cancel()
        if self._due:
            return  # the state goes out as soon as the running publish and its pace allow
        if self._timer is not None:
            self._timer.cancel()
        if self.current is None or removes_endpoints(self.current, state):
            self._timer = loop.call_soon(self.flush)
        else:
            deadline = min(now + self._quiet, self._first_at + self._max_delay)
            self._timer = loop.call_at(deadline, self.flush)

    @property
    def has_next(self) -> bool:
        """True when a state newer than the one being published waits."""
        return self._pending is not None

    @property
    def pending(self) -> bool:
        """True while an update waits to be published or a publish runs."""
        return self._timer is not None or self._running is not None or self._due

    def flush(self) -> None:
        self._timer = None
        if self._running is not None:
            self._due = True
            return
        self._due = False
        state, self._pending = self._pending, None
        if state is None or state == self.current:
            return
        self.current = state
        self._running = asyncio.create_task(self._run(state, self._first_at), name="publish")

    async def stop(self) -> None:
        """Cancel what waits and the publish under way."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = False
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)

    def _loss_waits(self) -> bool:
        """Whether the state waiting loses a member of the one published last."""
        pending, current = self._pending, self.current
        return pending is not None and current is not None and loses_member(current, pending)

    async def _run(self, state: FleetState, event_at: float) -> None:
        try:
            await self._publish(state)
            # A member lost while this publish ran goes next without its settling.
            if self._settle is not None and not self._loss_waits():
                self._settling = asyncio.ensure_future(self._settle(event_at))
                try:
                    await self._settling
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # `stop`: this task itself is cancelled
                finally:
                    self._settling = None
        except Exception as err:
            # A bug: the streams keep what they were last sent, and the next state is tried.
            log.error("publish_failed", error=repr(err))
        finally:
            self._running = None
            if self._due:
                self.flush()
