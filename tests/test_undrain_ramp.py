"""The undrain ramp agent: a member back from drain regains its share in steps, on a fake clock,
and the state ends as if the drain had never been seen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from states import AT_GATEWAY, EAST, WEST, fleet, policy, running
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.model.fleet import FleetState, MemberState, Ramp
from xdsfleet.model.policy import LoadBalancer, MemberPolicy, SlowStart
from xdsfleet.pipeline.ramps import Ramper
from xdsfleet.translate import translate


class FakeClock:
    """Time that passes only when the agent waits for it, all at once."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    async def wait(self, event: asyncio.Event, seconds: float | None) -> None:
        if not event.is_set():
            if seconds is None:
                await event.wait()
            else:
                self.time += seconds
        await asyncio.sleep(0)


def web(*, drain: bool, **balancer: Any) -> FleetState:
    """East and west each run one pod of `web`; a policy drains east or not."""
    spec: dict[str, Any] = {"members": (MemberPolicy("east", drain=drain),)}
    if balancer:
        spec["load_balancer"] = LoadBalancer(slow_start=SlowStart(**balancer))
    return fleet(
        running(EAST, "10.0.0.1"), running(WEST, "10.1.0.1"), policies=(policy("p", **spec),)
    )


class Published:
    """What the agent hands on, each with the fake time it was handed on at."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.states: list[tuple[float, FleetState]] = []

    def __call__(self, state: FleetState) -> None:
        self.states.append((self.clock.now(), state))

    @property
    def last(self) -> FleetState:
        return self.states[-1][1]

    def percents(self) -> list[tuple[float, tuple[int, ...]]]:
        """(time, each ramp's percentage) per state handed on."""
        return [(round(t, 6), tuple(r.percent for r in s.ramps)) for t, s in self.states]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def published(clock: FakeClock) -> Published:
    return Published(clock)


@pytest.fixture
async def running_agent(
    clock: FakeClock, published: Published
) -> AsyncIterator[tuple[Ramper, Published]]:
    """An agent running its steps, fed a state in which east is drained."""
    ramper = Ramper(published, current=web(drain=True, window_ms=30_000), clock=clock)
    task = asyncio.create_task(ramper.run(), name="undrain-ramper")
    try:
        yield ramper, published
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def ramped(published: Published) -> None:
    await eventually(lambda: len(published.states) > 1 and published.last.ramps == ())


async def test_an_undrained_member_ramps_up_over_the_slow_start_window_in_steps(
    running_agent: tuple[Ramper, Published],
) -> None:
    ramper, published = running_agent
    undrained = web(drain=False, window_ms=30_000)
    with capture_logs() as logs:
        ramper.update(undrained)
        await ramped(published)

    # Ten steps of 3 s: the first two both at the 10 % floor, so one push fewer.
    assert published.percents() == [
        (0, (10,)),
        *((t, (t * 10 // 3,)) for t in range(6, 30, 3)),
        (30, ()),
    ]
    assert published.states[0][1].ramps == (Ramp("ns", "web", 80, "east", 10),)
    assert published.last is undrained
    assert [e["event"] for e in logs] == ["undrain_ramp_started", "undrain_ramp_finished"]
    assert {"service": "ns/web:80", "member": "east", "window_seconds": 30}.items() <= (
        logs[0].items()
    )


async def test_the_ramp_follows_the_policy_aggression_and_minimum(
    running_agent: tuple[Ramper, Published],
) -> None:
    ramper, published = running_agent
    ramper.update(web(drain=False, window_ms=10_000, aggression=2.0, min_weight_percent=50))
    await ramped(published)

    # Steps of 2 s; sqrt(elapsed / window): slower at first than aggression 1 would be.
    assert published.percents() == [(0, (50,)), (4, (63,)), (6, (77,)), (8, (89,)), (10, ())]


async def test_without_slow_start_the_ramp_takes_the_default_window(
    running_agent: tuple[Ramper, Published],
) -> None:
    ramper, published = running_agent
    # The whole policy goes, drain and slow start with it.
    ramper.update(fleet(running(EAST, "10.0.0.1"), running(WEST, "10.1.0.1")))
    await ramped(published)

    assert published.states[-1][0] == 30


async def test_a_window_shorter_than_a_step_is_one_step(
    running_agent: tuple[Ramper, Published],
) -> None:
    ramper, published = running_agent
    ramper.update(web(drain=False, window_ms=1_500))
    await ramped(published)

    assert published.percents() == [(0, (10,)), (1.5, ())]


def test_draining_again_stops_the_ramp_at_once(clock: FakeClock, published: Published) -> None:
    drained = web(drain=True)
    ramper = Ramper(published, current=drained, clock=clock)
    ramper.update(web(drain=False))
    clock.time = 12
    ramper.step()
    assert published.last.ramps == (Ramp("ns", "web", 80, "east", 40),)

    ramper.update(drained)
    assert published.last is drained
    clock.time = 60
    ramper.step()
    assert published.last is drained


def test_a_member_that_starts_exporting_while_drained_still_ramps_back(
    clock: FakeClock, published: Published
) -> None:
    drains = web(drain=True).policies
    ramper = Ramper(
        published,
        current=fleet(MemberState(EAST), running(WEST, "10.1.0.1"), policies=drains),
        clock=clock,
    )
    ramper.update(web(drain=True))
    ramper.update(web(drain=False))

    assert published.last.ramps == (Ramp("ns", "web", 80, "east", 10),)


def test_changes_that_drain_nobody_pass_through_without_a_ramp(
    clock: FakeClock, published: Published
) -> None:
    ramper = Ramper(published, current=web(drain=False), clock=clock)
    grown = fleet(
        running(EAST, "10.0.0.1", "10.0.0.2"),
        running(WEST, "10.1.0.1"),
        policies=web(drain=False).policies,
    )
    ramper.update(grown)
    ramper.update(web(drain=False))
    assert [s.ramps for _, s in published.states] == [(), ()]
    assert published.states[0][1] is grown


def test_every_change_from_the_sources_is_handed_on_with_the_ramps_of_the_moment(
    clock: FakeClock, published: Published
) -> None:
    ramper = Ramper(published, current=web(drain=True), clock=clock)
    ramper.update(web(drain=False))
    clock.time = 7
    grown = fleet(
        running(EAST, "10.0.0.1", "10.0.0.2"),
        running(WEST, "10.1.0.1"),
        policies=web(drain=False).policies,
    )
    ramper.update(grown)

    assert published.last.members == grown.members
    assert published.last.ramps == (Ramp("ns", "web", 80, "east", 20),)


def test_a_replica_that_saw_the_drain_ends_serving_what_one_that_did_not_serves(
    clock: FakeClock, published: Published
) -> None:
    saw_it = Ramper(published, current=web(drain=True), clock=clock)
    saw_it.update(web(drain=False))
    late: list[FleetState] = []
    Ramper(late.append, current=web(drain=False), clock=clock).update(web(drain=False))

    clock.time = 30
    saw_it.step()
    assert published.last == late[-1]
    assert translate(published.last, AT_GATEWAY) == translate(late[-1], AT_GATEWAY)
