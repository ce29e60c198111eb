"""The publisher patches snapshots when only endpoints change and translates in full otherwise;
either way each profile's snapshot is the one a full rebuild gives: same names, same bytes, same
versions (so replicas that never took the incremental path agree)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.model.fleet import (
    BackendRef,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Gateway,
    GatewayListener,
    HTTPRoute,
    Member,
    MemberState,
    ParentRef,
    PathMatch,
    RouteMatch,
    RouteRule,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.model.policy import Pin, PolicySpec, PolicyTarget, TargetKind, TrafficPolicy
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.translate import translate
from xdsfleet.translate.changes import ServiceChanges, service_changes
from xdsfleet.translate.services import ServiceIndex, service_index, updated_index
from xdsfleet.translate.snapshot import Plan, plan

MEMBERS = (Member("east", "r1", "z1"), Member("north", "r1", "z2"), Member("west", "r2", "z3"))
SERVICES = ("api", "db", "web")
PROFILES = (
    NodeProfile(role=Role.SIDECAR, region="r1", zone="z1"),
    NodeProfile(role=Role.SIDECAR, region="r2", zone="z3"),
    NodeProfile(role=Role.GATEWAY, gateway="ns/edge", region="r1"),
    NodeProfile(role=Role.PROXYLESS, region="r2"),
)


def slice_of(member: int, service: str, last: int = 1) -> EndpointSlice:
    return EndpointSlice(
        "ns",
        f"{service}-1",
        service,
        (EndpointPort("http", 8080),),
        tuple(Endpoint((f"10.{member}.{i}.{last}",)) for i in range(2)),
    )


def member_state(position: int) -> MemberState:
    return MemberState(
        MEMBERS[position],
        services=tuple(Service("ns", s, (ServicePort("http", 80),)) for s in SERVICES),
        endpoint_slices=tuple(slice_of(position, s) for s in SERVICES),
    )


def route(path: str = "/") -> HTTPRoute:
    return HTTPRoute(
        "ns",
        "web",
        (ParentRef("ns", "edge", "a"),),
        (),
        (
            RouteRule((RouteMatch(PathMatch(value=path)),), (BackendRef("web", "ns", 80),)),
            RouteRule(
                (RouteMatch(PathMatch(value="/api")),), (BackendRef("api", "ns", 80),), name="pin"
            ),
        ),
    )


PIN = TrafficPolicy(
    "ns",
    "pin",
    (PolicyTarget(TargetKind.HTTP_ROUTE, "web", "pin"),),
    PolicySpec(pin=Pin(("west",))),
)
STATE = FleetState(
    "f",
    tuple(member_state(i) for i in range(len(MEMBERS))),
    gateways=(Gateway("ns", "edge", "xdsfleet", (GatewayListener("a", 80),)),),
    http_routes=(route(),),
    export_all=True,
    policies=(PIN,),
)


def with_member(state: FleetState, position: int, **changes: object) -> FleetState:
    members = list(state.members)
    members[position] = dataclasses.replace(members[position], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(state, members=tuple(members))


def new_endpoints(state: FleetState, position: int, service: str, last: int) -> FleetState:
    """`state` with one member's slice of `service` replaced; every other object shared."""
    slices = tuple(
        slice_of(position, service, last) if s.service_name == service else s
        for s in state.members[position].endpoint_slices
    )
    return with_member(state, position, endpoint_slices=slices)


def without_service(state: FleetState, position: int, service: str) -> FleetState:
    old = state.members[position]
    return with_member(
        state,
        position,
        services=tuple(s for s in old.services if s.name != service),
        endpoint_slices=tuple(s for s in old.endpoint_slices if s.service_name != service),
    )


def with_service(state: FleetState, position: int, service: str) -> FleetState:
    old = state.members[position]
    return with_member(
        state,
        position,
        services=(*old.services, Service("ns", service, (ServicePort("http", 80),))),
        endpoint_slices=(*old.endpoint_slices, slice_of(position, service)),
    )


@pytest.fixture
def full_translations(monkeypatch: pytest.MonkeyPatch) -> list[NodeProfile]:
    """The profiles the publisher translated in full, in order."""
    seen: list[NodeProfile] = []

    def counting(state: FleetState, profile: NodeProfile, index: ServiceIndex) -> Plan:
        seen.append(profile)
        return plan(state, profile, index)

    monkeypatch.setattr("xdsfleet.pipeline.publisher.plan", counting)
    return seen


def published(*states: FleetState) -> Publisher:
    publisher = Publisher(states[0])
    for profile in PROFILES:
        publisher.cache.watch(profile, lambda: None)
        publisher.cache.get(profile)
    for state in states[1:]:
        publisher.publish(state)
    return publisher


def assert_as_rebuilt(publisher: Publisher) -> None:
    for profile in PROFILES:
        served = publisher.cache.get(profile)
        rebuilt = build_snapshot(translate(publisher.state, profile), Encoder())
        assert wire_view(served) == wire_view(rebuilt)
        assert served.versions == rebuilt.versions
        assert served.eds_names == rebuilt.eds_names


def wire_view(snapshot: Snapshot) -> dict[str, list[tuple[str, str, bytes]]]:
    """Every resource in serving order, with its version and bytes."""
    return {
        type_url: [(n, e.version, e.body) for n, e in named.items()]
        for type_url, named in snapshot.resources.items()
    }


def test_an_endpoint_change_patches_every_profile_as_a_rebuild_would(
    full_translations: list[NodeProfile],
) -> None:
    publisher = published(STATE)
    gateway = PROFILES[2]
    before = publisher.cache.get(gateway)
    full_translations.clear()

    publisher.publish(new_endpoints(STATE, 2, "api", 7))

    assert full_translations == []
    assert_as_rebuilt(publisher)
    # The gateway routes to api pinned to west only: that assignment alone changed.
    after = publisher.cache.get(gateway)
    assert after.changes_since(ENDPOINT, before.versions[ENDPOINT]) == frozenset({"ns/api:80@west"})
    assert after.changes_since(CLUSTER, before.versions[CLUSTER]) == frozenset()


def test_successive_endpoint_changes_stay_as_rebuilt() -> None:
    states = [STATE]
    for last in range(2, 6):
        states.append(new_endpoints(states[-1], last % 3, SERVICES[last % 3], last))

    assert_as_rebuilt(published(*states))


def test_a_service_removed_from_one_member_only_is_patched(
    full_translations: list[NodeProfile],
) -> None:
    publisher = published(STATE)
    full_translations.clear()

    publisher.publish(without_service(STATE, 0, "db"))

    assert full_translations == []
    assert_as_rebuilt(publisher)


@pytest.mark.parametrize("position", [0, 1, 2])
def test_a_service_added_to_or_removed_from_the_fleet_is_translated_again(
    position: int, full_translations: list[NodeProfile]
) -> None:
    gone = published(STATE)
    for member in range(len(MEMBERS)):
        gone.publish(without_service(gone.state, member, "db"))
    assert_as_rebuilt(gone)

    gone.publish(with_service(gone.state, position, "db"))

    assert full_translations[-len(PROFILES) :] == list(PROFILES)
    assert_as_rebuilt(gone)


def test_a_member_marked_stale_changes_nothing() -> None:
    publisher = published(STATE)
    before = {p: publisher.cache.get(p) for p in PROFILES}

    publisher.publish(with_member(STATE, 1, stale=True))

    assert_as_rebuilt(publisher)
    assert all(publisher.cache.get(p) is before[p] for p in PROFILES)


def test_a_route_change_translates_in_full(full_translations: list[NodeProfile]) -> None:
    changed_route = dataclasses.replace(STATE, http_routes=(route("/v2"),))
    publisher = published(STATE, new_endpoints(STATE, 0, "web", 9))
    full_translations.clear()

    publisher.publish(changed_route)
    publisher.publish(new_endpoints(changed_route, 1, "web", 3))

    assert full_translations == list(PROFILES)  # the route change only
    assert_as_rebuilt(publisher)


@pytest.mark.parametrize(
    "after",
    [
        new_endpoints(STATE, 1, "db", 5),
        without_service(STATE, 0, "web"),
        without_service(without_service(without_service(STATE, 0, "db"), 1, "db"), 2, "db"),
        with_service(STATE, 2, "cache"),
    ],
)
def test_the_updated_index_is_the_derived_one(after: FleetState) -> None:
    changes = service_changes(STATE, after)
    assert changes is not None

    entries, ports = updated_index(service_index(STATE), after, changes)

    derived = service_index(after)
    assert list(entries.items()) == list(derived.items())
    assert ports == {
        k
        for k in service_index(STATE).keys() | derived.keys()
        if k.service in changed_names(changes)
    }


def changed_names(changes: ServiceChanges) -> set[str]:
    return {name for names in changes.values() for _, name in names}


def test_patches_give_way_to_a_full_translation_once_they_add_up(
    full_translations: list[NodeProfile],
) -> None:
    publisher = published(STATE)
    served = sum(len(n) for p in PROFILES for n in publisher.cache.get(p).resources.values())
    full_translations.clear()

    # Each change patches a cluster and an assignment or two per profile.
    for last in range(2, 2 + served):
        publisher.publish(new_endpoints(publisher.state, last % 3, "web", last))

    assert 0 < len(full_translations) < served
    assert len(full_translations) % len(PROFILES) == 0
    assert_as_rebuilt(publisher)


def lost(state: FleetState, position: int) -> FleetState:
    """The member as the aggregator shows one it cannot reach: empty and stale."""
    return with_member(state, position, services=(), endpoint_slices=(), exports=(), stale=True)


EXPORTING = dataclasses.replace(
    STATE,
    export_all=False,
    members=tuple(
        dataclasses.replace(m, exports=tuple(("ns", s) for s in SERVICES)) for m in STATE.members
    ),
)


@pytest.mark.parametrize("base", [STATE, EXPORTING], ids=["export-all", "exports"])
def test_a_member_lost_and_restored_is_patched_as_a_rebuild_would(
    base: FleetState, full_translations: list[NodeProfile]
) -> None:
    publisher = published(base)
    full_translations.clear()

    publisher.publish(lost(base, 2))
    assert_as_rebuilt(publisher)
    publisher.publish(base)
    assert_as_rebuilt(publisher)

    # Every other member still has every service: only assignments and clusters changed.
    assert full_translations == []


def test_a_service_no_longer_exported_by_one_member_is_patched(
    full_translations: list[NodeProfile],
) -> None:
    publisher = published(EXPORTING)
    full_translations.clear()

    publisher.publish(with_member(EXPORTING, 1, exports=(("ns", "api"), ("ns", "web"))))

    assert full_translations == []
    assert_as_rebuilt(publisher)


@pytest.mark.parametrize(
    "after",
    [lost(EXPORTING, 0), with_member(EXPORTING, 2, exports=(("ns", "db"),))],
)
def test_the_updated_index_follows_exports(after: FleetState) -> None:
    changes = service_changes(EXPORTING, after)
    assert changes is not None

    entries, _ = updated_index(service_index(EXPORTING), after, changes)

    assert list(entries.items()) == list(service_index(after).items())


async def test_a_first_snapshot_prepared_in_slices_is_of_the_latest_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publisher = published(STATE)
    newcomer = NodeProfile(role=Role.SIDECAR, region="r2", zone="z9")
    publisher.cache.watch(newcomer, lambda: None)
    monkeypatch.setattr("xdsfleet.pipeline.publisher.SLICE_SECONDS", 0.0)  # yield at every step
    preparing = asyncio.create_task(publisher.prepare(newcomer))
    await asyncio.sleep(0)  # under way, and suspended

    await publisher.publish_in_slices(new_endpoints(STATE, 2, "api", 7))
    await preparing

    served = publisher.cache.get(newcomer)
    rebuilt = build_snapshot(translate(publisher.state, newcomer), Encoder())
    assert wire_view(served) == wire_view(rebuilt)
    assert_as_rebuilt(publisher)
