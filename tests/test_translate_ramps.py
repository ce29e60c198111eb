"""A member ramping back from drain gets a percentage of its share, through locality weights."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from states import AT_GATEWAY, EAST, NS, WEST, fleet, policy, route, serving, to
from test_translate_placement import localities, three_members

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import Ramp, RouteRule, Service, ServicePort
from xdsfleet.model.policy import MemberPolicy
from xdsfleet.translate import translate
from xdsfleet.translate.memo import Memo


def ramping(state: Any, percent: int, member: str = "east", service: str = "web") -> Any:
    return replace(state, ramps=(Ramp(NS, service, 80, member, percent),))


def test_weights_by_endpoints_are_scaled_so_that_a_ramping_member_can_get_a_tenth() -> None:
    # One endpoint weighs 1: a tenth of it is only expressible once every weight is scaled.
    assert localities(ramping(three_members(), 10)) == [
        ("east", "z-east", 0, 10),
        ("west", "z-west", 0, 300),
        ("far", "z-far", 1, 100),
    ]


def test_a_ramping_member_gets_its_percentage_of_its_policy_share() -> None:
    shares = policy("p", members=(MemberPolicy("east", weight=80), MemberPolicy("west", weight=20)))
    assert localities(ramping(three_members(shares), 25))[:2] == [
        ("east", "z-east", 0, 2000),
        ("west", "z-west", 0, 2000),
    ]


def test_a_locality_never_weighs_less_than_one() -> None:
    shares = policy("p", members=(MemberPolicy("east", weight=1),))
    assert localities(ramping(three_members(shares), 1))[0] == ("east", "z-east", 0, 1)


def test_a_finished_ramp_serves_what_a_state_that_never_saw_the_drain_serves() -> None:
    never_drained = translate(three_members(), AT_GATEWAY)[typeurls.ENDPOINT]["ns/web:80"]
    translate(ramping(three_members(), 50), AT_GATEWAY)

    done = translate(replace(three_members(), ramps=()), AT_GATEWAY)[typeurls.ENDPOINT]
    assert done["ns/web:80"] == never_drained


def test_a_ramp_leaves_other_services_the_very_same_assignments() -> None:
    web, api = (Service(NS, name, (ServicePort("http", 80),)) for name in ("web", "api"))
    routes = (route(RouteRule((), (to(),))), route(RouteRule((), (to("api"),)), name="api"))
    state = fleet(serving(EAST, web, api), serving(WEST, web, api), http_routes=routes)
    with Memo().active():  # one translator, as a publisher is
        before = translate(state, AT_GATEWAY)[typeurls.ENDPOINT]
        during = translate(ramping(state, 10), AT_GATEWAY)[typeurls.ENDPOINT]

    assert during["ns/api:80"] is before["ns/api:80"]
    assert during["ns/web:80"] != before["ns/web:80"]


def test_a_ramp_of_a_member_that_does_not_export_the_port_changes_no_weight() -> None:
    assert localities(ramping(three_members(), 10, member="idc")) == localities(three_members())
