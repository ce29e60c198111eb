"""One member cluster watched through the real client: its state, and how its failures are
kept from making things worse (docs/architecture.md, decision 5)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kube_api import MEMBER_RESOURCES, ApiEmulator
from kube_helpers import (
    FAST,
    MEMBER,
    endpoint_slice,
    no_threads_left,
    ready_addresses,
    service,
    service_export,
)
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.model.fleet import (
    Endpoint,
    EndpointMode,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Member,
    MemberState,
    Service,
    ServicePort,
)
from xdsfleet.sources.kube.client import Access, Cluster
from xdsfleet.sources.kube.members import MemberWatcher, keep_held, mass_removals
from xdsfleet.sources.kube.resources import ENDPOINT_SLICES, NODES, SERVICE_EXPORTS, SERVICES
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.telemetry import metrics
from xdsfleet.translate.services import service_index

__all__ = ["no_threads_left"]

PODS = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4")


@dataclasses.dataclass
class Watched:
    watcher: MemberWatcher
    states: list[MemberState]
    # How many lists of EndpointSlices the API had served when each state was published.
    slice_lists: list[int]
    crashes: list[BaseException]

    def addresses(self, state: MemberState | None = None) -> set[str]:
        found = ready_addresses(state or self.watcher.state)
        return found.get(("default", "shop"), set())


Watch = Callable[..., Watched]


@pytest.fixture
def api() -> Iterator[ApiEmulator]:
    with ApiEmulator() as emulator:
        emulator.apply(SERVICES, service("shop"))
        emulator.apply(SERVICE_EXPORTS, service_export("shop"))
        emulator.apply(ENDPOINT_SLICES, endpoint_slice("shop", *PODS))
        yield emulator


@pytest.fixture
async def watch(api: ApiEmulator, tmp_path: Path) -> AsyncIterator[Watch]:
    started: list[MemberWatcher] = []

    def watcher(
        *,
        member: Member = MEMBER,
        settings: KubeSettings = FAST,
        emulator: ApiEmulator = api,
    ) -> Watched:
        kubeconfig = emulator.kubeconfig(tmp_path / f"{member.name}.kubeconfig")
        cluster = Cluster(Access(kubeconfig=str(kubeconfig)), settings)
        watched = Watched(None, [], [], [])  # type: ignore[arg-type]

        def on_state(state: MemberState) -> None:
            watched.states.append(state)
            watched.slice_lists.append(emulator.lists(ENDPOINT_SLICES))

        watched.watcher = MemberWatcher(
            member=member,
            cluster=cluster,
            on_state=on_state,
            on_crash=watched.crashes.append,
            settings=settings,
        )
        watched.watcher.start()
        started.append(watched.watcher)
        return watched

    yield watcher
    for member_watcher in started:
        await member_watcher.stop()


async def test_the_member_state_holds_what_the_api_shows(api: ApiEmulator, watch: Watch) -> None:
    # Objects the model has no use for are left out rather than rejected.
    api.apply(
        SERVICES,
        {
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"},
        },
    )
    api.apply(
        SERVICES,
        {
            "metadata": {"name": "alias", "namespace": "default"},
            "spec": {
                "type": "ExternalName",
                "externalName": "shop.example.com",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        },
    )
    orphan = endpoint_slice("shop", "10.9.9.9", name="by-hand")
    del orphan["metadata"]["labels"]["kubernetes.io/service-name"]
    api.apply(ENDPOINT_SLICES, orphan)
    # Endpoints of another cluster, imported by an MCS controller: not this member's.
    imported = endpoint_slice("shop", "10.8.8.8", name="imported")
    imported["metadata"]["labels"] |= {
        "multicluster.kubernetes.io/source-cluster": "west",
        "endpointslice.kubernetes.io/managed-by": "lighthouse-agent.submariner.io",
    }
    api.apply(ENDPOINT_SLICES, imported)
    # Endpoints another controller manages for a Service without a selector: this member's.
    external = endpoint_slice("shop", "10.7.7.7", name="external")
    external["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = "operator.example"
    api.apply(ENDPOINT_SLICES, external)
    watched = watch()
    await asyncio.wait_for(watched.watcher.settled.wait(), 5)
    state = watched.watcher.state
    assert [s.name for s in state.services] == ["shop"]
    assert state.exports == (("default", "shop"),)
    assert watched.addresses() == {*PODS, "10.7.7.7"}
    assert not state.stale
    assert state.nodes == ()  # pod mode: no Node watch
    assert len(watched.states) == 1  # not one per resource


async def test_an_object_the_parser_refuses_keeps_its_last_good_version(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    bad = endpoint_slice("shop", "10.1.0.1", "not-an-address")
    with capture_logs() as logs:
        api.apply(ENDPOINT_SLICES, bad)
        await eventually(lambda: any(e["event"] == "object_rejected" for e in logs))
    [rejected] = [e for e in logs if e["event"] == "object_rejected"]
    assert (
        "member east: EndpointSlice default/shop-abcde: endpoints[1].addresses[0]"
        in (rejected["problems"][0])
    )
    api.apply(ENDPOINT_SLICES, endpoint_slice("shop", "10.1.0.1"))
    await eventually(lambda: watched.addresses() == {"10.1.0.1"})


async def test_an_unreachable_member_keeps_its_endpoints_and_is_marked_stale(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    with capture_logs() as logs:
        api.go_down()
        await eventually(lambda: watched.watcher.state.stale)
    assert watched.addresses() == set(PODS)
    assert all(watched.addresses(s) == set(PODS) for s in watched.states)
    assert any(e["event"] == "member_stale" for e in logs)
    assert metrics.MEMBER_STALE.labels("east")._value.get() == 1
    api.come_back()
    await eventually(lambda: not watched.watcher.state.stale)
    assert metrics.MEMBER_STALE.labels("east")._value.get() == 0


async def test_a_member_that_comes_back_resyncs_in_one_state(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    api.go_down()
    await eventually(lambda: len(watched.watcher.failures) == 3)  # every watch noticed
    before = len(watched.states)
    # While it was away, a pod moved.
    api.apply(ENDPOINT_SLICES, endpoint_slice("shop", *PODS[1:], "10.1.0.5"))
    api.come_back()
    await eventually(lambda: not watched.watcher.state.stale)
    [back] = watched.states[before:]
    assert watched.addresses(back) == {*PODS[1:], "10.1.0.5"}


async def test_a_mass_removal_is_held_until_a_fresh_list_confirms_it(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    assert api.lists(ENDPOINT_SLICES) == 1
    with capture_logs() as logs:
        api.apply(ENDPOINT_SLICES, endpoint_slice("shop", PODS[0]))
        await eventually(lambda: watched.addresses() == {PODS[0]})
    events = [e["event"] for e in logs if e["event"].startswith("mass_removal")]
    assert events == ["mass_removal_held", "mass_removal_confirmed"]
    [emptied] = [i for i, s in enumerate(watched.states) if watched.addresses(s) == {PODS[0]}]
    # Published only once a list started after the removal had been served.
    assert watched.slice_lists[emptied] >= 2


async def test_a_small_removal_is_not_held(api: ApiEmulator, watch: Watch) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    with capture_logs() as logs:
        api.apply(ENDPOINT_SLICES, endpoint_slice("shop", *PODS[:2]))  # half: not more
        await eventually(lambda: watched.addresses() == set(PODS[:2]))
    assert not [e for e in logs if e["event"].startswith("mass_removal")]
    assert api.lists(ENDPOINT_SLICES) == 1


async def test_a_removal_that_the_fresh_list_contradicts_is_never_served(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    with capture_logs() as logs:
        api.glitch_delete(ENDPOINT_SLICES, "shop-abcde")
        await eventually(lambda: any(e["event"] == "mass_removal_confirmed" for e in logs))
    [confirmed] = [e for e in logs if e["event"] == "mass_removal_confirmed"]
    assert confirmed["removed"] == []
    assert all(watched.addresses(s) == set(PODS) for s in watched.states)


async def test_an_unconfirmed_hold_ends_after_the_hold_time(api: ApiEmulator, watch: Watch) -> None:
    watched = watch(settings=dataclasses.replace(FAST, hold_seconds=0.5))
    await eventually(lambda: watched.addresses() == set(PODS))
    api.fail_lists(1000)  # the confirming list never succeeds
    with capture_logs() as logs:
        api.delete(ENDPOINT_SLICES, "shop-abcde")
        await eventually(lambda: watched.addresses() == set())
    assert [e["event"] for e in logs if e["event"].startswith("mass_removal")] == [
        "mass_removal_held",
        "mass_removal_expired",
    ]
    api.fail_lists(0)


async def test_without_the_serviceexport_crd_the_member_exports_nothing_itself(
    watch: Watch,
) -> None:
    without_exports = tuple(r for r in MEMBER_RESOURCES if r is not SERVICE_EXPORTS)
    with ApiEmulator(kinds=without_exports) as bare:
        bare.apply(SERVICES, service("shop"))
        with capture_logs() as logs:
            watched = watch(emulator=bare)
            await asyncio.wait_for(watched.watcher.settled.wait(), 5)
        assert watched.watcher.state.exports == ()
        assert [s.name for s in watched.watcher.state.services] == ["shop"]
        assert any(e["event"] == "serviceexport_crd_absent" for e in logs)
        assert not watched.watcher.state.stale


async def test_nodes_are_watched_in_node_port_mode(api: ApiEmulator, watch: Watch) -> None:
    api.apply(
        NODES,
        {
            "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "192.168.0.10"},
                    {"type": "Hostname", "address": "node-1"},
                ],
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-01-01T00:00Z"},
                ],
            },
        },
    )
    member = dataclasses.replace(MEMBER, endpoint_mode=EndpointMode.NODE_PORT)
    watched = watch(member=member)
    await asyncio.wait_for(watched.watcher.settled.wait(), 5)
    [node] = watched.watcher.state.nodes
    assert (node.name, node.addresses, node.zone, node.ready) == (
        "node-1",
        ("192.168.0.10",),
        "z1",
        True,
    )


async def test_an_unreachable_member_settles_stale_and_empty(tmp_path: Path, watch: Watch) -> None:
    with ApiEmulator() as gone:
        gone.go_down()
        watched = watch(emulator=gone)
        await asyncio.wait_for(watched.watcher.settled.wait(), 5)
        assert watched.watcher.state.stale
        assert watched.watcher.state.services == ()
        gone.come_back()


async def test_a_dual_stack_service_counts_its_pods_once_and_dns_its_tcp_port_once(
    api: ApiEmulator, watch: Watch
) -> None:
    shop = service("shop")
    shop["spec"]["ipFamilies"] = ["IPv4", "IPv6"]
    shop["spec"]["ipFamilyPolicy"] = "PreferDualStack"
    api.apply(SERVICES, shop)
    pods = ("a", "b", "c", "d")
    v6 = ("fd00::1", "fd00::2", "fd00::3", "fd00::4")
    api.apply(ENDPOINT_SLICES, endpoint_slice("shop", *PODS, pods=pods))
    api.apply(
        ENDPOINT_SLICES,
        endpoint_slice("shop", *v6, name="shop-v6", address_type="IPv6", pods=pods),
    )
    dns = service("dns", port=53, target=53)
    dns["spec"]["ports"] = [
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
    ]
    api.apply(SERVICES, dns)
    api.apply(SERVICE_EXPORTS, service_export("dns"))
    dns_slice = endpoint_slice("dns", "10.1.0.53", port=53)
    dns_slice["ports"] = [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
    ]
    api.apply(ENDPOINT_SLICES, dns_slice)
    watched = watch()
    await eventually(lambda: len(watched.watcher.state.endpoint_slices) == 3)
    index = service_index(FleetState("f", (watched.watcher.state,)))
    assert sorted((k.service, k.port) for k in index) == [("dns", 53), ("shop", 80)]
    shop_port = next(e for k, e in index.items() if k.service == "shop")
    assert shop_port.members[0].replicas == len(pods)
    assert {b.address for z in shop_port.members[0].zones for b in z.backends} == set(PODS)
    dns_port = next(e for k, e in index.items() if k.service == "dns")
    assert (dns_port.port_name, dns_port.members[0].replicas) == ("dns-tcp", 1)


async def test_a_slice_without_endpoints_comes_as_null_and_empties_the_service(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    api.apply(ENDPOINT_SLICES, endpoint_slice("shop"))
    assert api.get(ENDPOINT_SLICES, "shop-abcde")["endpoints"] is None  # type: ignore[index]
    # A mass removal: held until a list confirms it, then served.
    await eventually(lambda: watched.addresses() == set())
    assert not watched.crashes


def terminating(obj: dict[str, object], *addresses: str) -> dict[str, object]:
    """`obj` (a slice) with the endpoints at `addresses` terminating, still serving."""
    for endpoint in obj["endpoints"]:  # type: ignore[attr-defined]
        if endpoint["addresses"][0] in addresses:
            endpoint["conditions"] = {"ready": False, "serving": True, "terminating": True}
    return obj


async def test_pods_that_begin_terminating_are_news_not_a_mass_removal(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    with capture_logs() as logs:
        api.apply(ENDPOINT_SLICES, terminating(endpoint_slice("shop", *PODS), *PODS[1:]))
        await eventually(lambda: watched.addresses() == {PODS[0]})
    assert not [e for e in logs if e["event"].startswith("mass_removal")]
    assert api.lists(ENDPOINT_SLICES) == 1


async def test_a_hold_serves_the_pods_still_listed_with_their_latest_conditions(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch(settings=dataclasses.replace(FAST, hold_seconds=30))
    await eventually(lambda: watched.addresses() == set(PODS))
    api.fail_lists(1000)  # the confirming list never comes: the hold lasts
    with capture_logs() as logs:
        api.apply(ENDPOINT_SLICES, endpoint_slice("shop", PODS[0]))
        await eventually(lambda: any(e["event"] == "mass_removal_held" for e in logs))
    assert watched.addresses() == set(PODS)
    # The pod still listed begins terminating: served as such, the others still held.
    api.apply(ENDPOINT_SLICES, terminating(endpoint_slice("shop", PODS[0]), PODS[0]))
    await eventually(lambda: watched.addresses() == set(PODS[1:]))
    api.fail_lists(0)


async def test_a_hold_waits_for_a_confirming_list_slower_than_the_hold(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch(settings=dataclasses.replace(FAST, hold_seconds=0.6))
    await eventually(lambda: watched.addresses() == set(PODS))
    api.list_delay = 1.5  # a big member: its list takes longer than the hold (not the client)
    with capture_logs() as logs:
        api.glitch_delete(ENDPOINT_SLICES, "shop-abcde")
        await eventually(lambda: any(e["event"] == "mass_removal_confirmed" for e in logs))
    assert [e["event"] for e in logs if e["event"].startswith("mass_removal")] == [
        "mass_removal_held",
        "mass_removal_extended",
        "mass_removal_confirmed",
    ]
    assert all(watched.addresses(s) == set(PODS) for s in watched.states)


async def test_lists_asked_for_come_no_more_often_than_the_relist_interval(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch(settings=dataclasses.replace(FAST, relist_interval_seconds=1.0))
    await eventually(lambda: watched.addresses() == set(PODS))
    asked = metrics.KUBE_LISTS.labels(ENDPOINT_SLICES.plural, "requested")
    before = asked._value.get()
    started = time.monotonic()
    for _ in range(3):  # three glitches in a row, each held and confirmed by a list
        with capture_logs() as logs:
            api.glitch_delete(ENDPOINT_SLICES, "shop-abcde")
            await eventually(lambda: any(e["event"] == "mass_removal_confirmed" for e in logs))
    assert asked._value.get() == before + 3
    # The first may start at once; the next two each wait out the interval after the last.
    assert time.monotonic() - started >= 2.0


def _held(logs: list[MutableMapping[str, Any]], count: int) -> bool:
    return [e["event"] for e in logs].count("mass_removal_held") == count


async def test_a_burst_of_removals_is_confirmed_by_one_list(api: ApiEmulator, watch: Watch) -> None:
    """A member's slices deleted one by one (what losing a member through its API server looks
    like: one watch event each) are all confirmed by one list, asked for once they pause, not
    one asked for at the first and another that waits out the relist interval."""
    others = [f"10.2.0.{n}" for n in range(1, 11)]
    for n, address in enumerate(others):
        api.apply(SERVICES, service(f"s{n}"))
        api.apply(SERVICE_EXPORTS, service_export(f"s{n}"))
        api.apply(ENDPOINT_SLICES, endpoint_slice(f"s{n}", address, name=f"s{n}-a"))
    slow = dataclasses.replace(FAST, relist_interval_seconds=60.0, hold_seconds=60.0)
    watched = watch(settings=slow)
    await eventually(
        lambda: set(others) <= set().union(*ready_addresses(watched.watcher.state).values())
    )
    lists = api.lists(ENDPOINT_SLICES)
    with capture_logs() as logs:
        for n in range(len(others)):
            api.delete(ENDPOINT_SLICES, f"s{n}-a")
            # Seen before the next one goes: each delete is its own watch event, and hold.
            await eventually(functools.partial(_held, logs, n + 1))
        await eventually(
            lambda: not set(others) & set().union(*ready_addresses(watched.watcher.state).values())
        )
    assert api.lists(ENDPOINT_SLICES) == lists + 1
    assert [e["event"] for e in logs if e["event"] == "mass_removal_confirmed"] == [
        "mass_removal_confirmed"
    ]


async def test_a_service_deleted_gracefully_serves_until_it_is_gone(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    # A finalizer holds it a moment: first deletionTimestamp (an update), then the deletion.
    api.delete(SERVICES, "shop", grace_seconds=1.0)
    marked = api.get(SERVICES, "shop")
    assert marked is not None
    assert "deletionTimestamp" in marked["metadata"]
    await eventually(lambda: api.get(SERVICES, "shop") is None)
    await eventually(lambda: watched.watcher.state.services == ())
    # Every state before the deletion itself still served it.
    assert all(watched.addresses(s) == set(PODS) for s in watched.states[:-1])


async def test_an_export_deleted_on_the_watch_is_held_like_its_endpoints(
    api: ApiEmulator, watch: Watch
) -> None:
    watched = watch()
    await eventually(lambda: watched.addresses() == set(PODS))
    with capture_logs() as logs:
        api.glitch_delete(SERVICE_EXPORTS, "shop")  # a list says it is still there
        await eventually(lambda: any(e["event"] == "mass_removal_confirmed" for e in logs))
    assert all(s.exports == (("default", "shop"),) for s in watched.states)
    # Really deleted: held, then confirmed by a list, then unexported.
    api.delete(SERVICE_EXPORTS, "shop")
    await eventually(lambda: watched.watcher.state.exports == ())
    assert api.lists(SERVICE_EXPORTS) >= 3


# --- The hold's rules, over every combination of endpoint conditions -------------------------

CONDITIONS = {
    "ready": Endpoint(("",), ready=True, serving=True, terminating=False),
    "terminating": Endpoint(("",), ready=False, serving=True, terminating=True),
    "unready": Endpoint(("",), ready=False, serving=False, terminating=False),
}
THREE = ("10.2.0.1", "10.2.0.2", "10.2.0.3")


def shop_state(conditions: tuple[str, ...]) -> MemberState:
    """One member with the shop Service and one slice; `absent` endpoints are not listed."""
    endpoints = tuple(
        dataclasses.replace(CONDITIONS[c], addresses=(a,))
        for a, c in zip(THREE, conditions, strict=True)
        if c != "absent"
    )
    return MemberState(
        MEMBER,
        services=(Service("default", "shop", (ServicePort("http", 80),)),),
        endpoint_slices=(
            EndpointSlice("default", "shop-1", "shop", (EndpointPort("http", 8080),), endpoints),
        ),
        exports=(("default", "shop"),),
    )


ALL = list(itertools.product([*CONDITIONS, "absent"], repeat=len(THREE)))


@pytest.mark.parametrize("before", ALL, ids="-".join)
def test_only_endpoints_gone_from_the_slices_count_as_removed_and_a_hold_keeps_them_current(
    before: tuple[str, ...],
) -> None:
    previous = shop_state(before)
    ready_before = {a for a, c in zip(THREE, before, strict=True) if c == "ready"}
    for after in ALL:
        candidate = shop_state(after)
        gone = {a for a, c in zip(THREE, after, strict=True) if c == "absent"} & ready_before
        held = mass_removals(previous, candidate) == {("default", "shop")}
        assert held == (2 * len(gone) > len(ready_before)), (before, after)
        if not held:
            continue
        [kept] = keep_held(candidate, previous, {("default", "shop")}).endpoint_slices
        served = {e.addresses[0]: e for e in kept.endpoints}
        # What was known stays, as the API server describes it now where it still lists it.
        assert served.keys() == {a for a, c in zip(THREE, before, strict=True) if c != "absent"}
        for address, condition in zip(THREE, after, strict=True):
            if address in served and condition != "absent":
                assert served[address] == dataclasses.replace(
                    CONDITIONS[condition], addresses=(address,)
                )


# --- Mass removals looked for only where something changed ------------------------------------


def _every_service_looked_at(before: MemberState, after: MemberState) -> set[tuple[str, str]]:
    """`mass_removals` as decision 5 states it, over every service of the member."""
    ready = ready_addresses(before)
    listed: dict[tuple[str, str], set[str]] = {}
    for s in after.endpoint_slices:
        listed.setdefault((s.namespace, s.service_name), set()).update(
            e.addresses[0] for e in s.endpoints if e.addresses
        )
    offered = {(s.namespace, s.name) for s in after.services} - (
        set(before.exports) - set(after.exports)
    )
    return {
        key
        for key, addresses in ready.items()
        if addresses
        and 2 * len(addresses - (listed.get(key, set()) if key in offered else set()))
        > len(addresses)
    }


_SERVICE_NAMES = ("a", "b", "c")
_ENDPOINTS = st.builds(
    Endpoint,
    st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]), max_size=2).map(
        tuple
    ),
    ready=st.booleans(),
)
_SLICES = st.builds(
    EndpointSlice,
    st.just("default"),
    st.sampled_from(["s1", "s2", "s3", "s4"]),
    st.sampled_from(_SERVICE_NAMES),
    st.just((EndpointPort("http", 8080),)),
    st.lists(_ENDPOINTS, max_size=4).map(tuple),
)
_KEYS = st.sets(st.sampled_from([("default", n) for n in _SERVICE_NAMES]))


@st.composite
def _batch(draw: st.DrawFn) -> tuple[MemberState, MemberState]:
    """A state, and the next: some of its slices kept (the same objects), some replaced, some
    removed, some added; Services and exports changed or not."""
    before_slices = draw(st.lists(_SLICES, max_size=6))
    after_slices = [s for s in before_slices if draw(st.booleans())]
    after_slices += draw(st.lists(_SLICES, max_size=3))
    before_services, after_services = draw(_KEYS), draw(_KEYS)
    before_exports, after_exports = draw(_KEYS), draw(_KEYS)

    def state(slices: list[EndpointSlice], services: Any, exports: Any) -> MemberState:
        return MemberState(
            MEMBER,
            services=tuple(
                Service(ns, n, (ServicePort("http", 80),)) for ns, n in sorted(services)
            ),
            endpoint_slices=tuple(slices),
            exports=tuple(sorted(exports)),
        )

    return (
        state(before_slices, before_services, before_exports),
        state(after_slices, after_services, after_exports),
    )


@settings(max_examples=400, deadline=None)
@given(_batch())
def test_mass_removals_looked_for_where_something_changed_are_those_of_every_service(
    batch: tuple[MemberState, MemberState],
) -> None:
    before, after = batch
    assert mass_removals(before, after) == _every_service_looked_at(before, after)
