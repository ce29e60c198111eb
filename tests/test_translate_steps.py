"""Translation in steps: planning a large profile yields between routes and services, so the
publisher can hand the event loop back; what it plans is what planning in one go gives; and
profiles of one role share one plan per state."""

from __future__ import annotations

from typing import TypeVar

import pytest

from benchmarks.fleet import Fleet, Shape, profiles
from xdsfleet.cache import typeurls
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate
from xdsfleet.translate.memo import Memo
from xdsfleet.translate.routes import ROUTES_STEP, route_configuration, route_configuration_steps
from xdsfleet.translate.rules import Planner
from xdsfleet.translate.services import indexing, service_index
from xdsfleet.translate.sidecar import SERVICES_STEP, plan_outbound
from xdsfleet.translate.snapshot import DestinationTable, planning, policy_index
from xdsfleet.translate.steps import Steps, finish

T = TypeVar("T")
SERVICES = 300
STATE = Fleet(Shape(members=3, services=SERVICES, endpoints=2 * SERVICES)).state()
SIDECAR, GATEWAY = profiles()[:2]
PROXYLESS = NodeProfile(role=Role.PROXYLESS, region=SIDECAR.region, zone=SIDECAR.zone)


@pytest.mark.parametrize(
    ("profile", "step"),
    [(SIDECAR, SERVICES_STEP), (GATEWAY, ROUTES_STEP), (PROXYLESS, SERVICES_STEP)],
)
def test_planning_yields_every_few_services_or_routes_and_plans_what_translate_does(
    profile: NodeProfile, step: int
) -> None:
    with Memo().active():
        steps = planning(STATE, profile, service_index(STATE))
        yields = 0
        while True:
            try:
                next(steps)
            except StopIteration as done:
                planned = done.value
                break
            yields += 1
        whole = translate(STATE, profile)

    assert yields >= SERVICES // step
    for type_url in (typeurls.LISTENER, typeurls.ROUTE):
        assert planned.planned[type_url] == whole[type_url]
    assert {d.cluster for d in planned.used} == set(whole[typeurls.CLUSTER])


def test_profiles_of_one_role_share_a_plan_and_each_gets_its_own_resources() -> None:
    east, west = [p for p in profiles() if p.role is Role.SIDECAR and p.zone.endswith("-1a")][:2]
    with Memo().active():
        table = DestinationTable(STATE, service_index(STATE))
        plans = [finish(table.plan(p)) for p in (east, west, GATEWAY)]

    assert plans[0] is plans[1]
    assert plans[2] is not plans[0]
    mine = plans[0].resources()
    mine[typeurls.LISTENER].clear()
    assert plans[1].resources()[typeurls.LISTENER]


def run(steps: Steps[T]) -> tuple[int, T]:
    """How many times `steps` yielded, and its result."""
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return yields, done.value
        yields += 1


def test_a_route_table_not_in_the_memo_is_built_a_few_virtual_hosts_per_step() -> None:
    index = service_index(STATE)
    members = frozenset(m.member.name for m in STATE.members)
    with Memo().active():
        planner = Planner(index, policy_index(STATE.policies), members, STATE.permits)
        [hosts] = finish(plan_outbound(list(index), planner)).values()
        yields, built = run(route_configuration_steps("routes", hosts))
        again, found = run(route_configuration_steps("routes", hosts))

    assert yields >= len(hosts) // ROUTES_STEP
    assert (again, found) == (0, built)  # from the memo, in one step
    assert found is built
    assert built == route_configuration("routes", hosts)  # as built in one go, without memo


def test_the_service_index_is_derived_a_member_per_step_and_kept_in_the_memo() -> None:
    with Memo().active():
        yields, index = run(indexing(STATE))
        again, found = run(indexing(STATE))

        assert service_index(STATE) is index
    assert yields >= len(STATE.members)
    assert (again, found) == (0, index)
    assert list(index.items()) == list(service_index(STATE).items())  # a fresh derivation
