"""Status write-back: the Lease that picks one writer, 409s retried, and what the conditions say."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kube_api import ApiEmulator
from kube_helpers import FAST, no_threads_left
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.cache import typeurls
from xdsfleet.documents.references import reference_problems
from xdsfleet.model.attachment import GATEWAY_GROUP, labels_of
from xdsfleet.model.fleet import (
    AllowedRoutes,
    BackendRef,
    FleetState,
    Gateway,
    GatewayListener,
    HTTPRoute,
    ParentRef,
    RouteGroupKind,
    RouteRule,
    SecretRef,
    TLSSecret,
)
from xdsfleet.pipeline.aggregate import Aggregator
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.server.ads import AdsService
from xdsfleet.sources.kube.client import Access, Cluster
from xdsfleet.sources.kube.fleetcluster import FleetCluster
from xdsfleet.sources.kube.lease import LeaseElector
from xdsfleet.sources.kube.resources import FLEETS, GATEWAYS, HTTP_ROUTES, LEASES, SECRETS
from xdsfleet.sources.kube.status import Written, write_status
from xdsfleet.status import conditions
from xdsfleet.status.conditions import (
    CONTROLLER,
    Held,
    Programmed,
    gateway_verdict,
    merged_status,
    our_parent,
    parent_refs,
    route_affects,
    route_verdict,
)
from xdsfleet.status.writer import StatusWriter
from xdsfleet.telemetry import metrics

__all__ = ["no_threads_left"]

ROUTE_OBJECT: dict[str, Any] = {
    "metadata": {"name": "shop", "namespace": "default"},
    "spec": {"parentRefs": [{"name": "gw"}], "rules": []},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api() -> Iterator[ApiEmulator]:
    with ApiEmulator() as emulator:
        yield emulator


@pytest.fixture
def cluster(api: ApiEmulator, tmp_path: Path) -> Iterator[Cluster]:
    found = Cluster(Access(kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig"))), FAST)
    yield found
    found.close()


def elector(cluster: Cluster, identity: str, clock: Clock) -> LeaseElector:
    return LeaseElector(
        cluster=cluster,
        name="xdsfleet-status",
        namespace="xdsfleet-system",
        identity=identity,
        duration_seconds=15,
        clock=clock,
    )


# --- The Lease -------------------------------------------------------------------------------


def test_one_replica_holds_the_lease_at_a_time(cluster: Cluster) -> None:
    clock = Clock()
    a, b = elector(cluster, "a", clock), elector(cluster, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 5
    assert a.try_acquire_or_renew()  # renewed
    clock.now += 14
    assert not b.try_acquire_or_renew()  # the record moved 14 s ago: still held


def test_a_lease_no_longer_renewed_passes_to_another_replica(
    api: ApiEmulator, cluster: Cluster
) -> None:
    clock = Clock()
    a, b = elector(cluster, "a", clock), elector(cluster, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now += 15.5  # b has seen the same record for longer than its duration
    with capture_logs() as logs:
        assert b.try_acquire_or_renew()
    assert any(e["event"] == "lease_acquired" for e in logs)
    lease = api.get(LEASES, "xdsfleet-status", "xdsfleet-system")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)
    assert not a.try_acquire_or_renew()  # a sees b's fresh record


def test_a_released_lease_is_taken_at_once(cluster: Cluster) -> None:
    clock = Clock()
    a, b = elector(cluster, "a", clock), elector(cluster, "b", clock)
    assert a.try_acquire_or_renew()
    a.release()
    assert b.try_acquire_or_renew()


def test_a_write_that_lost_the_race_for_the_lease_does_not_lead(
    api: ApiEmulator, cluster: Cluster
) -> None:
    clock = Clock()
    a = elector(cluster, "a", clock)
    assert a.try_acquire_or_renew()
    api.conflict_next_writes(1)  # someone wrote the Lease between a's read and a's write
    assert not a.try_acquire_or_renew()
    assert a.try_acquire_or_renew()


# --- Writing status --------------------------------------------------------------------------


def test_a_status_write_retries_on_conflict(api: ApiEmulator, cluster: Cluster) -> None:
    api.apply(HTTP_ROUTES, ROUTE_OBJECT)
    conflicts = metrics.STATUS_WRITES.labels("httproutes", "conflict")._value.get()
    api.conflict_next_writes(2)
    merge = lambda obj: {"parents": [{"controllerName": CONTROLLER}]}  # noqa: E731
    result = write_status(cluster, HTTP_ROUTES, namespace="default", name="shop", merge=merge)
    assert result is Written.WRITTEN
    assert metrics.STATUS_WRITES.labels("httproutes", "conflict")._value.get() == conflicts + 2
    route = api.get(HTTP_ROUTES, "shop")
    assert route is not None
    assert route["status"] == {"parents": [{"controllerName": CONTROLLER}]}
    assert route["spec"] == ROUTE_OBJECT["spec"]  # the status subresource touches status only


def test_nothing_is_written_when_the_status_would_not_change(
    api: ApiEmulator, cluster: Cluster
) -> None:
    api.apply(HTTP_ROUTES, ROUTE_OBJECT)
    result = write_status(
        cluster, HTTP_ROUTES, namespace="default", name="shop", merge=lambda obj: None
    )
    assert result is Written.UNCHANGED
    assert not [r for r in api.requests if r.method == "PUT"]


def test_a_status_write_gives_up_after_repeated_conflicts(
    api: ApiEmulator, cluster: Cluster
) -> None:
    api.apply(HTTP_ROUTES, ROUTE_OBJECT)
    api.conflict_next_writes(100)
    result = write_status(
        cluster, HTTP_ROUTES, namespace="default", name="shop", merge=lambda obj: {"parents": []}
    )
    assert result is Written.FAILED


def test_an_object_whose_status_cannot_be_merged_is_left_alone(
    api: ApiEmulator, cluster: Cluster
) -> None:
    api.apply(HTTP_ROUTES, {**ROUTE_OBJECT, "spec": {"parentRefs": "not a list"}})
    result = write_status(
        cluster,
        HTTP_ROUTES,
        namespace="default",
        name="shop",
        merge=lambda obj: {"parents": parent_refs(obj)},
    )
    assert result is Written.FAILED


def test_a_deleted_object_gets_no_status(cluster: Cluster) -> None:
    result = write_status(
        cluster, HTTP_ROUTES, namespace="default", name="gone", merge=lambda obj: {}
    )
    assert result is Written.GONE


# --- What the conditions say -----------------------------------------------------------------

ROUTE = HTTPRoute(
    "default",
    "shop",
    (ParentRef("default", "gw"), ParentRef("default", "other")),
    (),
    (RouteRule((), (BackendRef("shop", "default", 80),)),),
)
STATE = FleetState(
    "test", (), gateways=(Gateway("default", "gw", "xdsfleet", (GatewayListener("http", 80),)),)
)


def route_held(name: str, *, current: bool = True, refused: str | None = None) -> Held:
    return Held(typeurls.ROUTE, name, current, refused)


def test_programmed_counts_envoys_that_hold_refuse_or_lag_behind() -> None:
    affects = lambda type_url, name: name == "default/gw/http"  # noqa: E731
    streams = [
        [route_held("default/gw/http")],  # holds it
        [route_held("default/gw/http", refused="bad regex")],  # refused it
        [route_held("default/gw/http", current=False)],  # an older version: not counted yet
        [route_held("default/other/http")],  # not sent anything of it
        [route_held("default/gw/http", refused="second")],
    ]
    counted = Programmed.count(streams, affects)
    assert counted == Programmed(accepted=1, refused=2, first_refusal="bad regex")
    condition = counted.condition()
    assert (condition.status, condition.reason) == ("False", "Refused")
    assert condition.message == "1 Envoy hold it; 2 refused it: bad regex"
    assert Programmed(0, 0).condition().status == "Unknown"


def test_a_route_verdict_names_the_parent_and_the_backends_that_do_not_resolve() -> None:
    problems = {
        "spec.parentRefs[1]": "Gateway default/other does not exist",
        "spec.rules[0].backendRefs[0]": "Service default/shop is not exported by any member",
    }
    verdict = route_verdict(STATE, ROUTE, 3, problems, Programmed(1, 0))
    first, second = verdict.conditions
    assert [(c.type, c.status) for c in first] == [
        ("Accepted", "True"),
        ("ResolvedRefs", "False"),
        ("Programmed", "True"),
    ]
    assert (second[0].status, second[0].reason) == ("False", "NoMatchingParent")
    assert "not exported" in first[1].message


def test_supported_kinds_are_a_group_and_a_kind_as_attachment_reads_them() -> None:
    """A listener that allows `HTTPRoute` of another group supports no route kind of ours, and
    takes no HTTPRoute: status and attachment read `allowedRoutes.kinds` by one rule."""
    other = AllowedRoutes(kinds=(RouteGroupKind("example.com", "HTTPRoute"),))
    ours = AllowedRoutes(kinds=(RouteGroupKind(GATEWAY_GROUP, "GRPCRoute"),))
    listeners = (
        GatewayListener("other", 80, allowed_routes=other),
        GatewayListener("grpc", 81, allowed_routes=ours),
    )
    gateway = Gateway("default", "gw", "xdsfleet", listeners)
    route = HTTPRoute("default", "shop", (ParentRef("default", "gw"),), (), ())
    state = FleetState("test", (), gateways=(gateway,), http_routes=(route,))
    verdict = gateway_verdict(state, gateway, 1, [])
    found = {x.name: (x.supported_kinds, x.attached_routes) for x in verdict.listeners}
    assert found == {"other": ((), 0), "grpc": (("GRPCRoute",), 0)}


@pytest.mark.parametrize("exists", [True, False])
def test_a_certificate_of_another_namespace_without_a_grant_is_not_permitted(exists: bool) -> None:
    """Status and `validate` read a certificateRef by one rule: the grant first, whether or not
    the Secret exists (whether it does is not for a Gateway that was granted nothing to learn);
    a Secret of its own namespace that does not exist is an InvalidCertificateRef."""
    refs = (SecretRef("vault", "edge"), SecretRef("default", "gone"))
    listeners = (
        GatewayListener("far", 443, "HTTPS", certificate_refs=refs[:1]),
        GatewayListener("near", 8443, "HTTPS", certificate_refs=refs[1:]),
    )
    gateway = Gateway("default", "gw", "xdsfleet", listeners)
    secrets = (TLSSecret("vault", "edge", "", ""),) if exists else ()
    state = FleetState("test", (), gateways=(gateway,), secrets=secrets)
    verdict = gateway_verdict(state, gateway, 1, [])
    resolved = {
        x.name: next((c.reason, c.message) for c in x.conditions if c.type == "ResolvedRefs")
        for x in verdict.listeners
    }
    assert resolved == {
        "far": ("RefNotPermitted", "no ReferenceGrant lets it use Secret vault/edge"),
        "near": ("InvalidCertificateRef", "Secret default/gone does not exist"),
    }
    reported = {p.field: p.message for p in reference_problems(state, {})}
    assert reported == {
        "spec.listeners[0].tls.certificateRefs[0]": "no ReferenceGrant in namespace vault lets "
        "Gateways of default use Secret vault/edge (RefNotPermitted)",
        "spec.listeners[1].tls.certificateRefs[0]": "Secret default/gone does not exist (the "
        "listener is not served)",
    }


def test_a_status_pass_reads_the_gateways_once_for_every_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Namespace labels, Gateways by name and their ports are made once per pass (`Gateways`),
    not once per route; the verdicts are those made without it."""
    routes = [
        HTTPRoute("default", f"shop-{i}", ROUTE.parent_refs, (), ROUTE.rules) for i in range(3)
    ]
    state = FleetState("test", (), gateways=STATE.gateways, http_routes=tuple(routes))
    alone = [
        (
            route_verdict(state, r, 1, {}, Programmed(0, 0)),
            route_affects(state, r)(typeurls.ROUTE, "default/gw:80"),
        )
        for r in routes
    ]
    reads: list[object] = []
    counted = functools.partial(_counting, labels_of, reads)
    monkeypatch.setattr(conditions, "labels_of", counted)
    gateways = conditions.Gateways.of(state)
    shared = [
        (
            route_verdict(state, r, 1, {}, Programmed(0, 0), gateways),
            route_affects(state, r, gateways)(typeurls.ROUTE, "default/gw:80"),
        )
        for r in routes
    ]
    assert len(reads) == 1
    assert shared == alone
    assert all(affected for _, affected in shared)


def _counting(real: Callable[..., Any], calls: list[object], *args: Any) -> Any:
    calls.append(args)
    return real(*args)


def test_merging_keeps_other_controllers_and_transition_times_and_skips_no_change() -> None:
    other = {"parentRef": {"name": "gw"}, "controllerName": "example.com/other", "conditions": []}
    obj = {**ROUTE_OBJECT, "status": {"parents": [other]}}
    verdict = route_verdict(STATE, ROUTE, 1, {}, Programmed(1, 0))
    earlier = datetime(2025, 1, 1, tzinfo=UTC)
    refs = parent_refs(obj)
    status = merged_status(
        obj, field="parents", refs=refs, ref_key="parentRef", verdict=verdict, now=earlier
    )
    assert status is not None
    assert status["parents"][0] == other
    ours = status["parents"][1]
    assert ours["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": "default",
        "name": "gw",
    }
    obj["status"] = status
    later = datetime(2025, 1, 2, tzinfo=UTC)
    again = merged_status(
        obj, field="parents", refs=refs, ref_key="parentRef", verdict=verdict, now=later
    )
    assert again is None  # nothing changed: nothing to write
    lagging = route_verdict(STATE, ROUTE, 1, {}, Programmed(0, 0))
    changed = merged_status(
        obj, field="parents", refs=refs, ref_key="parentRef", verdict=lagging, now=later
    )
    assert changed is not None
    times = {c["type"]: c["lastTransitionTime"] for c in changed["parents"][1]["conditions"]}
    assert times == {
        "Accepted": "2025-01-01T00:00:00Z",
        "ResolvedRefs": "2025-01-01T00:00:00Z",
        "Programmed": "2025-01-02T00:00:00Z",
    }


def test_a_parent_of_another_controllers_class_gets_no_status_from_us() -> None:
    # gw is ours; other is Istio's (listed, not served): its entry is Istio's to write.
    obj = {**ROUTE_OBJECT, "spec": {"parentRefs": [{"name": "gw"}, {"name": "other"}]}}
    verdict = route_verdict(STATE, ROUTE, 1, {}, Programmed(1, 0))
    mine = our_parent({("default", "other")})
    status = merged_status(
        obj, field="parents", refs=parent_refs(obj), ref_key="parentRef", verdict=verdict, mine=mine
    )
    assert status is not None
    assert [p["parentRef"]["name"] for p in status["parents"]] == ["gw"]
    # A route attached only to another controller's Gateway: nothing to write at all.
    only_foreign = {**ROUTE_OBJECT, "spec": {"parentRefs": [{"name": "other"}]}}
    merge = functools.partial(
        merged_status,
        field="parents",
        refs=parent_refs(only_foreign),
        ref_key="parentRef",
        verdict=verdict,
    )
    assert merge(only_foreign, mine=mine) is None
    # ... and what we once wrote there (before its class changed) is taken back.
    ours_before = merge(only_foreign)
    assert ours_before is not None
    taken_back = merge({**only_foreign, "status": ours_before}, mine=mine)
    assert taken_back == {"parents": []}


# --- The writer, in process ------------------------------------------------------------------


def apply_fleet_of_one_member(api: ApiEmulator, member: ApiEmulator) -> None:
    """The Fleet `prod` with one member, east, reached through a labelled member Secret."""
    secret = {
        "metadata": {
            "name": "east",
            "namespace": "xdsfleet-system",
            "labels": {"xdsfleet.io/member": "true"},
        },
        "data": {"kubeconfig": base64.b64encode(member.kubeconfig_text().encode()).decode()},
    }
    api.apply(SECRETS, secret)
    spec = {
        "members": [{"name": "east", "region": "eu", "zone": "a", "source": {"secret": "east"}}]
    }
    api.apply(FLEETS, {"metadata": {"name": "prod"}, "spec": spec})


@contextlib.asynccontextmanager
async def status_writer(
    api: ApiEmulator, member: ApiEmulator
) -> AsyncIterator[tuple[Aggregator, StatusWriter]]:
    """Serve the fleet `api` holds (`member` its one member, east), with a status writer that
    holds the lease and has written once; stopped at the end, asserting nothing crashed."""
    apply_fleet_of_one_member(api, member)
    crashes: list[BaseException] = []
    aggregator = Aggregator(
        on_state=lambda _: None,
        on_crash=crashes.append,
        settings=FAST,
        namespace="xdsfleet-system",
    )
    aggregator.use_fleet_resource("prod", Access(kubeconfig_text=api.kubeconfig_text()))
    try:
        await asyncio.wait_for(aggregator.wait_ready(member_seconds=5), 10)
        publisher = Publisher(aggregator.state)  # type: ignore[arg-type]
        writer = StatusWriter(
            aggregator=aggregator,
            ads=AdsService(publisher.cache),
            snapshot_of=publisher.cache.get,
            served=lambda: aggregator.state,
            namespace="xdsfleet-system",
        )
        await writer.renew()
        await writer.tick()
        yield aggregator, writer
        await writer.stop()
    finally:
        await aggregator.stop()
    assert not crashes


async def test_the_lease_holder_writes_the_fleet_and_route_status_and_only_changes(
    api: ApiEmulator, tmp_path: Path
) -> None:
    with ApiEmulator() as member:
        member.go_down()
        api.apply(HTTP_ROUTES, ROUTE_OBJECT)
        async with status_writer(api, member) as (aggregator, writer):
            fleet = api.get(FLEETS, "prod", namespace=None)
            assert fleet is not None
            [east] = fleet["status"]["members"]
            assert (east["name"], east["stale"]) == ("east", True)
            assert "Connection refused" in east["message"]
            route = api.get(HTTP_ROUTES, "shop")
            assert route is not None
            [parent] = route["status"]["parents"]
            conditions = {c["type"]: c for c in parent["conditions"]}
            # No such Gateway; no Envoy holds anything of it.
            assert (conditions["Accepted"]["status"], conditions["Accepted"]["reason"]) == (
                "False",
                "NoMatchingParent",
            )
            assert conditions["Programmed"]["status"] == "Unknown"
            puts = sum(r.method == "PUT" for r in api.requests)
            await writer.tick()  # nothing changed: nothing is written
            assert sum(r.method == "PUT" for r in api.requests) == puts
            # Deleted and created again as it was (kubectl replace --force): a new object,
            # without status, that gets it again.
            mirror = aggregator.fleet_cluster.mirror(HTTP_ROUTES)  # type: ignore[union-attr]
            first = mirror.uids[("default", "shop")]
            api.delete(HTTP_ROUTES, "shop")
            api.apply(HTTP_ROUTES, ROUTE_OBJECT)
            await eventually(lambda: mirror.uids.get(("default", "shop"), first) != first)
            await writer.tick()
            route = api.get(HTTP_ROUTES, "shop")
            assert route is not None
            assert route["status"]["parents"][0]["controllerName"] == CONTROLLER
            member.come_back()
            await eventually(lambda: not aggregator.reports()[0].stale)
            await writer.tick()
            fleet = api.get(FLEETS, "prod", namespace=None)
            assert fleet is not None
            assert fleet["status"]["members"][0]["stale"] is False


def test_a_holder_that_cannot_renew_stops_holding_at_the_renew_deadline(
    api: ApiEmulator, cluster: Cluster
) -> None:
    clock = Clock()
    a = elector(cluster, "a", clock)
    assert a.try_acquire_or_renew()
    api.go_down()
    clock.now += 5
    assert a.try_acquire_or_renew()  # one failed renewal: still within the deadline
    assert a.holding()
    clock.now += 5.5  # 10.5 s since the last renewal: past the deadline, before the lease ends
    assert not a.try_acquire_or_renew()
    assert not a.holding()
    api.come_back()


async def test_the_lease_is_renewed_on_its_own_schedule_whatever_the_status_interval(
    api: ApiEmulator, cluster: Cluster
) -> None:
    crashes: list[BaseException] = []
    fleet = FleetCluster(
        cluster=Cluster(Access(kubeconfig_text=api.kubeconfig_text()), FAST),
        namespace="xdsfleet-system",
        fleet_name=None,
        on_change=lambda _: None,
        on_crash=crashes.append,
        settings=FAST,
    )
    fleet.start()
    aggregator = SimpleNamespace(fleet_cluster=fleet, fleet_resource=None, reports=lambda: ())
    # Status every 30 s, a 2 s Lease (the default is 15 s with 5 s ticks: the same mismatch).
    writer = StatusWriter(
        aggregator=aggregator,
        ads=AdsService(Publisher(FleetState("f", ())).cache),
        snapshot_of=lambda _: None,  # type: ignore[arg-type,return-value]
        served=lambda: FleetState("f", ()),
        namespace="xdsfleet-system",
        interval=30,
        lease_seconds=2,
        lease_retry_seconds=0.25,
        renew_deadline_seconds=1.5,
    )
    running = asyncio.create_task(writer.run())
    try:
        await eventually(lambda: metrics.STATUS_LEADER._value.get() == 1)
        other = LeaseElector(
            cluster=cluster, name="xdsfleet-status", namespace="xdsfleet-system", identity="b"
        )
        # Over two lease durations of another replica trying: the holder keeps renewing.
        for _ in range(20):
            assert not await asyncio.to_thread(other.try_acquire_or_renew)
            await asyncio.sleep(0.25)  # the other replica's retry period, not a synchronisation
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await writer.stop()
        await fleet.stop()
    assert not crashes


# Gateway API's bounds on HTTPRoute status (gateway.networking.k8s.io/v1), as its CRD states
# them: what a real API server answers 422 to.
_CONDITION = {
    "type": "object",
    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
    "properties": {
        "type": {"type": "string", "maxLength": 316},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "observedGeneration": {"type": "integer", "minimum": 0},
        "lastTransitionTime": {"type": "string"},
        "reason": {
            "type": "string",
            "maxLength": 1024,
            "minLength": 1,
            "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        },
        "message": {"type": "string", "maxLength": 32768},
    },
}
ROUTE_STATUS = {
    "type": "object",
    "required": ["parents"],
    "properties": {
        "parents": {
            "type": "array",
            "maxItems": 32,
            "items": {
                "type": "object",
                "required": ["parentRef", "controllerName"],
                "properties": {
                    "parentRef": {"type": "object"},
                    "controllerName": {"type": "string", "maxLength": 253},
                    "conditions": {"type": "array", "maxItems": 8, "items": _CONDITION},
                },
            },
        }
    },
}


def test_a_status_the_crd_refuses_is_reported_and_ours_is_within_bounds(
    api: ApiEmulator, cluster: Cluster
) -> None:
    api.apply(HTTP_ROUTES, ROUTE_OBJECT)
    api.status_schema(HTTP_ROUTES, ROUTE_STATUS)
    bad = {"parents": [{"parentRef": {"name": "gw"}, "controllerName": CONTROLLER}] * 33}
    with capture_logs() as logs:
        result = write_status(
            cluster, HTTP_ROUTES, namespace="default", name="shop", merge=lambda obj: bad
        )
    assert result is Written.FAILED
    [failed] = [e for e in logs if e["event"] == "status_write_failed"]
    assert "HTTP 422" in failed["error"]
    # What the writer writes: a refusal whose message is longer than the CRD allows.
    refused = route_verdict(STATE, ROUTE, 1, {}, Programmed(0, 1, "x" * 40000))
    ours = merged_status(
        api.get(HTTP_ROUTES, "shop") or {},
        field="parents",
        refs=parent_refs(ROUTE_OBJECT),
        ref_key="parentRef",
        verdict=refused,
    )
    result = write_status(
        cluster, HTTP_ROUTES, namespace="default", name="shop", merge=lambda obj: ours
    )
    assert result is Written.WRITTEN


async def write_status_once(
    api: ApiEmulator, then: Callable[[], None] | None = None
) -> FleetState | None:
    """Serve the fleet `api` holds (one member, east) and write its status once, as the lease
    holder; with `then`, make that change and write again once it is served. What was served."""
    with ApiEmulator() as member:
        async with status_writer(api, member) as (aggregator, writer):
            if then is not None:
                before = aggregator.state
                then()
                await eventually(lambda: aggregator.state != before)
                await writer.tick()
        return aggregator.state


async def test_each_gateway_listener_gets_its_conditions_and_attached_routes(
    api: ApiEmulator,
) -> None:
    https = {
        "name": "https",
        "port": 443,
        "protocol": "HTTPS",
        "hostname": "a.example.com",
        "tls": {"certificateRefs": [{"name": "missing"}]},
    }
    listeners = [
        {"name": "http", "port": 80, "protocol": "HTTP"},
        https,
        # HTTPS on the HTTP port: a protocol conflict.
        {**https, "name": "clash", "port": 80},
    ]
    gateway = {
        "metadata": {"name": "gw", "namespace": "default", "generation": 3},
        "spec": {"gatewayClassName": "xdsfleet", "listeners": listeners},
    }
    api.apply(GATEWAYS, gateway)
    api.apply(HTTP_ROUTES, ROUTE_OBJECT)
    with capture_logs() as logs:
        await write_status_once(api)
    # Every object written is logged, whatever its kind.
    logged = {e["object"] for e in logs if e["event"] == "status_written"}
    assert logged == {"Fleet prod", "Gateway default/gw", "HTTPRoute default/shop"}
    written = api.get(GATEWAYS, "gw")
    assert written is not None
    found = {
        entry["name"]: (
            entry["attachedRoutes"],
            {c["type"]: (c["status"], c["reason"]) for c in entry["conditions"]},
        )
        for entry in written["status"]["listeners"]
    }
    assert found == {
        "http": (
            1,
            {
                "Accepted": ("True", "Accepted"),
                "Conflicted": ("False", "NoConflicts"),
                "ResolvedRefs": ("True", "ResolvedRefs"),
                "Programmed": ("Unknown", "Pending"),  # no Envoy connected
            },
        ),
        "https": (
            1,
            {
                "Accepted": ("True", "Accepted"),
                "Conflicted": ("False", "NoConflicts"),
                "ResolvedRefs": ("False", "InvalidCertificateRef"),
                "Programmed": ("False", "Invalid"),
            },
        ),
        "clash": (
            1,
            {
                "Accepted": ("True", "Accepted"),
                "Conflicted": ("True", "ProtocolConflict"),
                "ResolvedRefs": ("False", "InvalidCertificateRef"),
                "Programmed": ("False", "Invalid"),
            },
        ),
    }
    kinds = [k["kind"] for k in written["status"]["listeners"][0]["supportedKinds"]]
    assert kinds == ["HTTPRoute", "GRPCRoute"]


async def test_another_controllers_gateway_and_its_routes_are_left_alone(api: ApiEmulator) -> None:
    ours = {"name": "http", "port": 80, "protocol": "HTTP"}
    api.apply(
        GATEWAYS,
        {"metadata": {"name": "gw"}, "spec": {"gatewayClassName": "xdsfleet", "listeners": [ours]}},
    )
    # Istio's, with what xdsfleet would refuse on its own: a TCP listener, an unknown field.
    tcp = {"name": "db", "port": 5432, "protocol": "TCP"}
    foreign = {"gatewayClassName": "istio", "listeners": [tcp], "infrastructure": {}}
    api.apply(GATEWAYS, {"metadata": {"name": "mesh"}, "spec": foreign})
    both = {"parentRefs": [{"name": "gw"}, {"name": "mesh"}], "rules": []}
    api.apply(HTTP_ROUTES, {"metadata": {"name": "shop"}, "spec": both})
    only_foreign = {"parentRefs": [{"name": "mesh"}], "rules": []}
    api.apply(HTTP_ROUTES, {"metadata": {"name": "mesh-only"}, "spec": only_foreign})
    state = await write_status_once(api)
    assert state is not None
    assert [g.name for g in state.gateways] == ["gw"]
    assert state.foreign_gateways == (("default", "mesh"),)
    gw, mesh = api.get(GATEWAYS, "gw"), api.get(GATEWAYS, "mesh")
    assert gw is not None
    assert mesh is not None
    assert [x["name"] for x in gw["status"]["listeners"]] == ["http"]
    assert "status" not in mesh
    shop, mesh_only = api.get(HTTP_ROUTES, "shop"), api.get(HTTP_ROUTES, "mesh-only")
    assert shop is not None
    assert mesh_only is not None
    [parent] = shop["status"]["parents"]
    assert parent["parentRef"]["name"] == "gw"
    assert "status" not in mesh_only


async def test_a_gateway_that_changes_class_loses_our_route_status(api: ApiEmulator) -> None:
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    gateway: dict[str, Any] = {
        "metadata": {"name": "gw"},
        "spec": {"gatewayClassName": "xdsfleet", "listeners": listeners},
    }
    api.apply(GATEWAYS, gateway)
    api.apply(HTTP_ROUTES, ROUTE_OBJECT)
    first: list[Any] = []

    def to_istio() -> None:
        route = api.get(HTTP_ROUTES, "shop")
        assert route is not None
        first.extend(route["status"]["parents"])
        api.apply(GATEWAYS, {**gateway, "spec": {**gateway["spec"], "gatewayClassName": "istio"}})

    state = await write_status_once(api, then=to_istio)
    assert state is not None
    assert state.foreign_gateways == (("default", "gw"),)
    assert [p["parentRef"]["name"] for p in first] == ["gw"]  # ours, before
    route = api.get(HTTP_ROUTES, "shop")
    assert route is not None
    assert route["status"]["parents"] == []  # taken back: Istio's to write now
