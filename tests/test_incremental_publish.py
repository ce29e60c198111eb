"""The publisher patches snapshots when only endpoints change and translates in full otherwise;
either way each profile's snapshot is the one a full rebuild gives: same names, same bytes, same
versions (so replicas that never took the incremental path agree)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from xdsfleet.model.policy import (
    Failover,
    Pin,
    PolicySpec,
    PolicyTarget,
    TargetKind,
    TrafficPolicy,
)
from xdsfleet.pipeline.fanout import FanOut
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.translate import translate
from xdsfleet.translate.changes import ServiceChanges, service_changes
from xdsfleet.translate.services import service_index, updated_index
from xdsfleet.translate.snapshot import DestinationTable, Plan
from xdsfleet.translate.steps import Steps

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

    planning = DestinationTable.plan

    def counting(table: DestinationTable, profile: NodeProfile) -> Steps[Plan]:
        seen.append(profile)
        return (yield from planning(table, profile))

    monkeypatch.setattr(DestinationTable, "plan", counting)
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


async def test_a_member_lost_is_indexed_in_slices_and_a_first_snapshot_meanwhile_catches_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member lost changes every service it runs, and the publish updates the service index a
    few services at a time: a stream's first snapshot built in between is of the previous
    state (the publish has not taken the new one yet), and the publish then patches it too."""
    monkeypatch.setattr("xdsfleet.pipeline.publisher._SERVICES_STEP", 1)
    monkeypatch.setattr("xdsfleet.pipeline.publisher.SLICE_SECONDS", 0.0)  # yield at every step
    publisher = published(STATE)
    newcomer = NodeProfile(role=Role.SIDECAR, region="r2", zone="z9")
    publisher.cache.watch(newcomer, lambda: None)
    publishing = asyncio.create_task(publisher.publish_in_slices(lost(STATE, 2)))
    await asyncio.sleep(0)  # one service of three re-indexed

    assert publisher.state is STATE
    first = publisher.cache.get(newcomer)
    assert wire_view(first) == wire_view(build_snapshot(translate(STATE, newcomer), Encoder()))
    await publishing

    served = publisher.cache.get(newcomer)
    rebuilt = build_snapshot(translate(lost(STATE, 2), newcomer), Encoder())
    assert wire_view(served) == wire_view(rebuilt)
    assert_as_rebuilt(publisher)
    publisher.publish(STATE)
    assert_as_rebuilt(publisher)


async def test_no_stream_is_woken_while_a_publish_runs_and_each_once_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream woken while a publish runs in slices would take a snapshot the publish is about
    to replace: the fan-out holds its wakes, those of the fan-out under way included, until
    the publish ends, then wakes each stream once."""
    monkeypatch.setattr("xdsfleet.pipeline.publisher.SLICE_SECONDS", 0.0)  # yield at every step
    publisher = published(STATE)
    FanOut(publisher.cache, list)
    streams = [profile for profile in PROFILES for _ in range(3)]
    seen: list[tuple[int, Mapping[str, str]]] = []  # (stream, the versions it would take)
    for stream, profile in enumerate(streams):

        def wake(stream: int = stream, profile: NodeProfile = profile) -> None:
            seen.append((stream, publisher.cache.get(profile).versions))

        publisher.cache.watch(profile, wake)
    # Its fan-out begins: the streams are queued for the pacer's turns, none woken yet.
    publisher.publish(new_endpoints(STATE, 2, "api", 7))
    before = {p: publisher.cache.get(p).versions for p in PROFILES}
    assert seen == []

    publishing = asyncio.create_task(publisher.publish_in_slices(lost(STATE, 2)))
    await asyncio.sleep(0)  # the publish's first slice: it holds the fan-out from now on
    assert not publishing.done()
    seen.clear()
    while not publishing.done():
        assert not seen
        await asyncio.sleep(0)
    for _ in range(2 * (len(streams) + len(PROFILES))):  # a batch of at least one a turn
        await asyncio.sleep(0)

    latest = {p: publisher.cache.get(p).versions for p in PROFILES}
    assert all(latest[p] != before[p] for p in PROFILES)  # a loss changes them all
    assert sorted(stream for stream, _ in seen) == list(range(len(streams)))
    assert all(versions == latest[streams[stream]] for stream, versions in seen)


# --- Sharing between profiles, whatever the interleaving of changes ---

# Two profiles per place where they can share assignments (a sidecar and a gateway), places
# that differ only in their zone, one without locality, and a pinned route (PIN): what
# profiles may share, and what they must not.
SHARING = (
    NodeProfile(role=Role.SIDECAR, region="r1", zone="z1"),
    NodeProfile(role=Role.GATEWAY, gateway="ns/edge", region="r1", zone="z1"),
    NodeProfile(role=Role.SIDECAR, region="r1", zone="z2"),
    NodeProfile(role=Role.GATEWAY, gateway="ns/edge", region="r2", zone="z3"),
    NodeProfile(role=Role.PROXYLESS, region="r2", zone="z3"),
    NodeProfile(role=Role.SIDECAR),
)
# db fails over by explicit tiers: its tiers do not follow the views.
TIERED = TrafficPolicy(
    "ns",
    "tiers",
    (PolicyTarget(TargetKind.SERVICE, "db"),),
    PolicySpec(failover=Failover(tiers=(("west",), ("north",)))),
)
SHARED_STATE = dataclasses.replace(STATE, policies=(PIN, TIERED))


def _endpoints(
    position: int, service: str, last: int, zone: str | None
) -> Callable[[FleetState], FleetState]:
    def change(state: FleetState) -> FleetState:
        if state.members[position].stale:
            return state  # a lost member changes nothing until restored
        slices = tuple(
            dataclasses.replace(
                s, endpoints=tuple(dataclasses.replace(e, zone=zone) for e in s.endpoints)
            )
            if s.service_name == service
            else s
            for s in new_endpoints(state, position, service, last).members[position].endpoint_slices
        )
        return with_member(state, position, endpoint_slices=slices)

    return change


def _lose(position: int) -> Callable[[FleetState], FleetState]:
    return lambda state: lost(state, position)


def _restore(position: int) -> Callable[[FleetState], FleetState]:
    def change(state: FleetState) -> FleetState:
        members = list(state.members)
        members[position] = SHARED_STATE.members[position]
        return dataclasses.replace(state, members=tuple(members))

    return change


def _http2(position: int, service: str) -> Callable[[FleetState], FleetState]:
    """The member's Service port turns h2c: its cluster changes with its endpoints."""

    def change(state: FleetState) -> FleetState:
        old = state.members[position]
        if old.stale:
            return state
        services = tuple(
            dataclasses.replace(s, ports=(ServicePort("http", 80, app_protocol="h2c"),))
            if s.name == service
            else s
            for s in old.services
        )
        return with_member(state, position, services=services)

    return change


def _without(position: int, service: str) -> Callable[[FleetState], FleetState]:
    def change(state: FleetState) -> FleetState:
        old = state.members[position]
        if old.stale or all(s.name != service for s in old.services):
            return state
        return without_service(state, position, service)

    return change


_positions = st.integers(0, len(MEMBERS) - 1)
_services = st.sampled_from(SERVICES)
_changes = st.one_of(
    st.builds(
        _endpoints,
        _positions,
        _services,
        st.integers(2, 9),
        st.sampled_from((None, "z1", "z2", "z3", "z9")),
    ),
    st.builds(_lose, _positions),
    st.builds(_restore, _positions),
    st.builds(_http2, _positions, _services),
    st.builds(_without, _positions, _services),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_changes, min_size=1, max_size=3), min_size=1, max_size=6))
def test_profiles_that_share_stay_as_rebuilt_whatever_the_changes(
    batches: list[list[Callable[[FleetState], FleetState]]],
) -> None:
    # Profiles share assignments by view and mappings by content, and patch them once for all
    # (translate.snapshot.DestinationTable, cache.snapshot.Siblings): an interleaving of
    # endpoint changes, zone moves, losses, restores and cluster changes must never leave one
    # profile with another's resources, nor with a stale one.
    publisher = Publisher(SHARED_STATE)
    for profile in SHARING:
        publisher.cache.watch(profile, lambda: None)
        publisher.cache.get(profile)
    state = SHARED_STATE
    for batch in batches:
        for change in batch:
            state = change(state)
        publisher.publish(state)
        for profile in SHARING:
            served = publisher.cache.get(profile)
            rebuilt = build_snapshot(translate(state, profile), Encoder())
            assert wire_view(served) == wire_view(rebuilt), profile.describe()
            assert served.versions == rebuilt.versions
            assert served.eds_names == rebuilt.eds_names
            assert served.uses == rebuilt.uses


def test_profiles_in_one_place_share_their_assignments_and_patch_them_once() -> None:
    sidecar, gateway = SHARING[0], SHARING[1]
    proxyless = NodeProfile(role=Role.PROXYLESS, region="r1", zone="z1")
    publisher = Publisher(SHARED_STATE)
    for profile in (sidecar, gateway, proxyless):
        publisher.cache.watch(profile, lambda: None)
        publisher.cache.get(profile)
    publisher.publish(new_endpoints(SHARED_STATE, 1, "web", 5))

    served = {p: publisher.cache.get(p) for p in (sidecar, gateway, proxyless)}
    # The gateway routes to fewer services (and one pinned): its mapping is its own, but the
    # assignment of a service both use is one object, encoded once.
    assert served[sidecar].of(ENDPOINT)["ns/web:80"] is served[gateway].of(ENDPOINT)["ns/web:80"]
    # A sidecar and a proxyless client of one place use the same assignments: one mapping,
    # patched once for both; their clusters differ by role.
    assert served[sidecar].of(ENDPOINT) is served[proxyless].of(ENDPOINT)
    assert served[sidecar].of(CLUSTER) != served[proxyless].of(CLUSTER)
    assert served[sidecar].changed[ENDPOINT] == {"ns/web:80"}


def test_a_member_restored_gets_back_the_very_entries_of_before_its_loss() -> None:
    # Their layouts and assignments live with them: a later loss is cut out of those.
    before = service_index(EXPORTING)
    gone = lost(EXPORTING, 0)
    changes = service_changes(EXPORTING, gone)
    assert changes is not None
    during, _ = updated_index(before, gone, changes)
    back = service_changes(gone, EXPORTING)
    assert back is not None

    after, _ = updated_index(during, EXPORTING, back)

    assert all(after[key] is before[key] for key in before)
    assert all(during[key] is not before[key] for key in before)


async def test_first_snapshots_asked_for_at_once_are_built_one_at_a_time_and_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The streams of a fleet's clients connecting at once (a replica's start) each ask for
    their profile's first snapshot: built side by side, the builds' slices all landed in the
    same loop iterations, and each stream of a profile built it again."""
    publisher = published(STATE)
    newcomers = [NodeProfile(role=Role.SIDECAR, region="r2", zone=z) for z in ("z7", "z8", "z9")]
    builds: list[tuple[str, NodeProfile]] = []
    building = Publisher._build

    def recorded(self: Publisher, profile: NodeProfile) -> Steps[Snapshot | None]:
        builds.append(("start", profile))
        built = yield from building(self, profile)
        builds.append(("end", profile))
        return built

    monkeypatch.setattr(Publisher, "_build", recorded)
    monkeypatch.setattr("xdsfleet.pipeline.publisher.SLICE_SECONDS", 0.0)  # yield at every step
    for profile in newcomers:
        publisher.cache.watch(profile, lambda: None)
    await asyncio.gather(*(publisher.prepare(p) for p in newcomers for _ in range(4)))

    assert builds == [(moment, p) for p in newcomers for moment in ("start", "end")]
    for profile in newcomers:
        rebuilt = build_snapshot(translate(publisher.state, profile), Encoder())
        assert wire_view(publisher.cache.get(profile)) == wire_view(rebuilt)
