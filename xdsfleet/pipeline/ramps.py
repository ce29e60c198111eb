"""The undrain ramp: a member that a policy or the Fleet stops draining gets its share of each
service port back over the slow-start window, in steps, instead of in one push.

Envoy's slow start ramps endpoints against one another inside their locality; a member's share
is its locality weight, which only the control plane can raise over time. Translation stays
pure: the ramp is one of its inputs (`FleetState.ramps`, a percentage per service port and
member), which this agent sets from its clock and hands on through the store like any other
state. A finished ramp is removed, so the state is then the very one a replica that never saw
the drain holds, and both serve the same versions. Draining stays one push: a member drained
again stops ramping at once.

It builds no resources (translation does, from the state it hands on), and keeps no state from
the sources but the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from xdsfleet.model.fleet import FleetState, Member, Ramp
from xdsfleet.model.policy import SlowStart
from xdsfleet.telemetry import metrics
from xdsfleet.translate.drains import drained, slow_start
from xdsfleet.translate.services import ServicePortKey

log = structlog.get_logger(__name__)

# Without a `loadBalancer.slowStart` in the port's policy (docs/policy.md).
DEFAULT_SLOW_START = SlowStart(window_ms=30_000)
# About ten steps per window, each at least 2 s after the last (each is a push to every client
# of the service) and at most 5 s (a long window still moves visibly); a window shorter than a
# step is one step.
STEPS = 10
MIN_STEP_SECONDS = 2.0
MAX_STEP_SECONDS = 5.0
# asyncio may fire a timer up to its clock resolution early: a step due within this is reached.
_EARLY = 0.01


class Clock(Protocol):
    """Time as the agent sees it: a fake one in tests."""

    def now(self) -> float: ...

    async def wait(self, event: asyncio.Event, seconds: float | None) -> None:
        """Return once `event` is set or `seconds` (None: no limit) have passed."""


class LoopClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One member's way back on one service port: Envoy's slow-start curve, `min_percent` at
    first, then (elapsed / window) ^ (1 / aggression) of the share, taken at each step."""

    started: float
    slow_start: SlowStart

    @property
    def window(self) -> float:
        return self.slow_start.window_ms / 1000

    @property
    def step(self) -> float:
        return min(self.window, max(MIN_STEP_SECONDS, min(MAX_STEP_SECONDS, self.window / STEPS)))

    def _steps_reached(self, now: float) -> int:
        return math.floor((now - self.started + _EARLY) / self.step)

    def percent(self, now: float) -> int | None:
        """The percentage of its share the member gets at `now`; None once the ramp is over."""
        if now - self.started + _EARLY >= self.window:
            return None
        reached = self._steps_reached(now) * self.step
        curve = (reached / self.window) ** (1 / self.slow_start.aggression)
        percent = max(1, self.slow_start.min_weight_percent, round(100 * curve))
        return percent if percent < 100 else None

    def next_step(self, now: float) -> float:
        """When the percentage changes next (or the ramp ends)."""
        following = self.started + (self._steps_reached(now) + 1) * self.step
        return min(following, self.started + self.window)


class Ramper:
    """Between the sources and the store: `update` takes each state from the sources and hands it
    on with the ramps of the moment; `run` steps the ramps until they are done."""

    def __init__(
        self,
        publish: Callable[[FleetState], None],
        *,
        current: FleetState,
        clock: Clock | None = None,
    ) -> None:
        self._publish = publish
        self._clock = clock or LoopClock()
        self._input = current
        self._drained = drained(current)
        self._schedules: dict[tuple[ServicePortKey, str], Schedule] = {}
        self._ramps: tuple[Ramp, ...] = ()
        self._woken = asyncio.Event()

    def update(self, state: FleetState) -> None:
        """A new state from the sources: start a ramp for each member no longer drained, stop
        it for each member drained again, and hand the state on."""
        # Only a policy or the Fleet's members drain a member or bring it back: skip the walk
        # over every service port for the endpoint changes that make up most updates.
        if state.policies != self._input.policies or _members(state) != _members(self._input):
            now_drained = drained(state)
            now = self._clock.now()
            for key, member in sorted(self._drained - now_drained):
                schedule = Schedule(now, slow_start(state, key) or DEFAULT_SLOW_START)
                self._schedules[key, member] = schedule
                log.info(
                    "undrain_ramp_started",
                    service=key.cluster,
                    member=member,
                    window_seconds=schedule.window,
                )
            for pair in self._schedules.keys() & now_drained:
                del self._schedules[pair]
            self._drained = now_drained
            self._woken.set()
        self._input = state
        self._emit(always=True)

    def step(self) -> None:
        """Hand on the current state again if a ramp moved on since the last."""
        self._emit(always=False)

    async def run(self) -> None:
        """Step the ramps as they become due, until cancelled."""
        while True:
            self._woken.clear()
            await self._clock.wait(self._woken, self._until_next_step())
            self.step()

    def _until_next_step(self) -> float | None:
        if not self._schedules:
            return None  # until `update` starts a ramp
        now = self._clock.now()
        return max(0.0, min(s.next_step(now) for s in self._schedules.values()) - now)

    def _emit(self, *, always: bool) -> None:
        now = self._clock.now()
        ramps = []
        for (key, member), schedule in sorted(self._schedules.items()):
            percent = schedule.percent(now)
            if percent is None:
                del self._schedules[key, member]
                log.info("undrain_ramp_finished", service=key.cluster, member=member)
            else:
                ramps.append(Ramp(key.namespace, key.service, key.port, member, percent))
        metrics.UNDRAIN_RAMPS.set(len(self._schedules))
        changed = tuple(ramps) != self._ramps
        if changed:
            self._ramps = tuple(ramps)
        if changed or always:
            ramped = dataclasses.replace(self._input, ramps=self._ramps)
            self._publish(ramped if self._ramps else self._input)


def _members(state: FleetState) -> tuple[Member, ...]:
    return tuple(m.member for m in state.members)
