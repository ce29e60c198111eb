"""The debouncer: the current fleet state, with bursts of source events coalesced.

A state is published 100 ms after the last update and never more than 1 s after the first of a
burst (xds-protocol rule 24); an update that removes endpoints is published at once, because
removals are what a failover waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from xdsfleet.model.fleet import FleetState, MemberState

QUIET = 0.1
MAX_DELAY = 1.0


def _ready_addresses(member: MemberState) -> set[tuple[str, str, str]]:
    return {
        (s.namespace, s.service_name, address)
        for s in member.endpoint_slices
        for e in s.endpoints
        if e.ready
        for address in e.addresses
    }


def removes_endpoints(old: FleetState, new: FleetState) -> bool:
    """True if some ready endpoint of `old` is gone or no longer ready in `new`."""
    before = {m.member.name: m for m in old.members}
    for member in new.members:
        previous = before.pop(member.member.name, None)
        if previous is None or previous is member:
            continue
        if _ready_addresses(previous) - _ready_addresses(member):
            return True
    return any(_ready_addresses(m) for m in before.values())


class Debouncer:
    def __init__(
        self,
        publish: Callable[[FleetState], None],
        *,
        quiet: float = QUIET,
        max_delay: float = MAX_DELAY,
        current: FleetState | None = None,
    ) -> None:
        self._publish = publish
        self._quiet = quiet
        self._max_delay = max_delay
        self.current = current
        self._pending: FleetState | None = None
        self._first_at = 0.0
        self._timer: asyncio.Handle | None = None

    def update(self, state: FleetState) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._pending is None:
            self._first_at = now
        self._pending = state
        if self._timer is not None:
            self._timer.cancel()
        if self.current is None or removes_endpoints(self.current, state):
            self._timer = loop.call_soon(self.flush)
        else:
            deadline = min(now + self._quiet, self._first_at + self._max_delay)
            self._timer = loop.call_at(deadline, self.flush)

    @property
    def pending(self) -> bool:
        """True while an update waits to be published."""
        return self._timer is not None

    def flush(self) -> None:
        self._timer = None
        state, self._pending = self._pending, None
        if state is None or state == self.current:
            return
        self.current = state
        self._publish(state)
