"""A member drained as a whole: `drain: true` on the Fleet's member, or a policy that targets the
Fleet. It leaves every service in one push, as a service policy's drain does, and comes back on
the same undrain ramp."""

from __future__ import annotations

from dataclasses import replace

from states import EAST, NS, WEST, fleet, policy, route, serving, to
from test_translate_placement import localities, three_members
from test_undrain_ramp import FakeClock, Published

from xdsfleet.model.fleet import FleetState, Ramp, RouteRule, Service, ServicePort
from xdsfleet.model.policy import MemberPolicy, PolicyTarget, TargetKind
from xdsfleet.pipeline.ramps import Ramper
from xdsfleet.translate.drains import drained
from xdsfleet.translate.services import ServicePortKey

EVERYWHERE = PolicyTarget(TargetKind.FLEET, "f")


def with_drained(state: FleetState, member: str, drain: bool = True) -> FleetState:
    return replace(
        state,
        members=tuple(
            replace(m, member=replace(m.member, drain=drain)) if m.member.name == member else m
            for m in state.members
        ),
    )


def two_services() -> FleetState:
    web, api = (Service(NS, name, (ServicePort("http", 80),)) for name in ("web", "api"))
    routes = (route(RouteRule((), (to(),))), route(RouteRule((), (to("api"),)), name="api"))
    return fleet(serving(EAST, web, api), serving(WEST, web, api), http_routes=routes)


def test_a_fleet_member_drained_leaves_every_service() -> None:
    state = with_drained(two_services(), "east")

    for cluster in ("ns/web:80", "ns/api:80"):
        assert [m for m, *_ in localities(state, cluster)] == ["west"]
    assert drained(state) == {
        (ServicePortKey(NS, "web", 80), "east"),
        (ServicePortKey(NS, "api", 80), "east"),
    }


def test_a_fleet_policy_drains_the_same_way() -> None:
    drain = policy("upgrade", EVERYWHERE, members=(MemberPolicy("east", drain=True),))
    state = replace(two_services(), policies=(drain,))

    assert drained(state) == drained(with_drained(two_services(), "east"))
    assert [m for m, *_ in localities(state, "ns/api:80")] == ["west"]


def test_the_next_tier_takes_over_when_the_first_is_drained() -> None:
    state = with_drained(three_members(), "east")
    state = with_drained(state, "west")
    assert localities(state) == [("far", "z-far", 0, 1)]


def test_undraining_a_fleet_member_ramps_it_back_in_every_service() -> None:
    clock = FakeClock()
    published = Published(clock)
    ramper = Ramper(published, current=with_drained(two_services(), "east"), clock=clock)

    ramper.update(two_services())

    assert published.last.ramps == (
        Ramp(NS, "api", 80, "east", 10),
        Ramp(NS, "web", 80, "east", 10),
    )
