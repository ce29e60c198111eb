"""Status write-back to the fleet cluster, by one replica at a time.

Every `interval` seconds, the replica holding the status Lease works out the status of each
Gateway (per listener), HTTPRoute, GRPCRoute and TrafficPolicy of the fleet cluster
(`conditions`), and of the Fleet
resource when the Fleet is one (its members, stale or not, and why), and writes what changed
since it last wrote (`sources.kube.status`: the status subresource, 409s retried). A
replica that gains the Lease writes everything once; one that loses it stops writing. The
Lease is renewed on its own schedule (`lease_retry_seconds`), whatever `interval` is and however
long writes take; each write starts only while the renew deadline holds. What was written is
remembered per object uid: an object deleted and created again gets its status again.

It must not block the loop: every API call runs in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import structlog

from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.documents.reading import JsonObject, object_label
from xdsfleet.documents.references import reference_problems
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.server.ads import AdsService
from xdsfleet.sources.kube import resources
from xdsfleet.sources.kube.client import Cluster
from xdsfleet.sources.kube.fleetcluster import FleetCluster
from xdsfleet.sources.kube.lease import LeaseElector
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.status import Written, write_status
from xdsfleet.status.conditions import (
    Gateways,
    Held,
    Programmed,
    Verdict,
    fleet_members_status,
    gateway_status,
    gateway_verdict,
    holdings,
    merged_status,
    our_parent,
    parent_refs,
    policy_affects,
    policy_verdict,
    route_affects,
    route_verdict,
    target_refs,
)
from xdsfleet.status.reports import MemberReport
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

LEASE_NAME = "xdsfleet-status"
_KINDS = (resources.HTTP_ROUTES, resources.GRPC_ROUTES, resources.TRAFFIC_POLICIES)


# One status to write: resource, namespace, name, what it says (compared with what was written
# last), and how to merge it into the object.
_Status = tuple[ApiResource, str, str, object, Callable[[JsonObject], JsonObject | None]]


def identity() -> str:
    """This replica, as a Lease holder: the pod name (the hostname), made unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Reporting(Protocol):
    """What the writer reads of the sources' aggregator (the pipeline owns it)."""

    fleet_cluster: FleetCluster | None
    fleet_resource: str | None

    def reports(self) -> Sequence[MemberReport]: ...


class StatusWriter:
    def __init__(
        self,
        *,
        aggregator: Reporting,
        ads: AdsService,
        snapshot_of: Callable[[NodeProfile], Snapshot],
        served: Callable[[], FleetState | None],
        namespace: str,
        interval: float = 5.0,
        lease_seconds: int = 15,
        lease_retry_seconds: float = 2.0,
        renew_deadline_seconds: float = 10.0,
    ) -> None:
        self._aggregator = aggregator
        self._ads = ads
        self._snapshot_of = snapshot_of
        self._served = served
        self._namespace = namespace
        self._interval = interval
        self._lease_seconds = lease_seconds
        self._lease_retry = lease_retry_seconds
        self._renew_deadline = renew_deadline_seconds
        self._identity = identity()
        self._elector: LeaseElector | None = None
        self._cluster: Cluster | None = None
        # (resource, namespace, name, uid) -> what was last written (a verdict; a Fleet's members)
        self._written: dict[tuple[ApiResource, str, str, str], object] = {}

    async def run(self) -> None:
        await self.renew()
        keeper = asyncio.create_task(self._keep_lease(), name="status-lease")
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self._interval)
        finally:
            keeper.cancel()

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self._lease_retry)
            await self.renew()

    async def renew(self) -> None:
        """One attempt to take or keep the Lease."""
        fleet = self._aggregator.fleet_cluster
        if fleet is None or not fleet.synced.is_set():
            return
        elector = self._elector_for(fleet.cluster)
        leading = await asyncio.to_thread(elector.try_acquire_or_renew)
        metrics.STATUS_LEADER.set(1 if leading else 0)

    def _holding(self, fleet: FleetCluster) -> bool:
        return (
            self._elector is not None and self._cluster is fleet.cluster and self._elector.holding()
        )

    async def tick(self) -> None:
        fleet = self._aggregator.fleet_cluster
        state = self._served()
        if fleet is None or state is None or not fleet.synced.is_set():
            return
        if not self._holding(fleet):
            self._written.clear()  # whoever leads next time writes everything once
            return
        for resource, namespace, name, what, merge in self._statuses(fleet, state):
            if not await self._write(fleet, resource, namespace, name, what, merge):
                return  # the renew deadline passed while writing: another replica may lead

    def _statuses(self, fleet: FleetCluster, state: FleetState) -> Iterator[_Status]:
        """Every status to write, in order: the Fleet resource's, each served Gateway's, then
        each route's and TrafficPolicy's."""
        name = self._aggregator.fleet_resource
        if name is not None:
            # Which members are stale, and why.
            reports = self._aggregator.reports()
            members = tuple((r.name, r.source, r.stale, r.message) for r in reports)
            merge = functools.partial(fleet_members_status, members=members)
            yield resources.FLEETS, "", name, members, merge
        streams = holdings(
            ((i.profile, i.machine.status()) for i in self._ads.streams.values()),
            self._snapshot_of,
        )
        yield from self._gateways(fleet, state, streams)
        mine = our_parent(frozenset(state.foreign_gateways))
        for resource, namespace, name, verdict, field in self._verdicts(fleet, state, streams):
            # A Gateway changing class changes which parents are ours, maybe not the verdict.
            what = (verdict, state.foreign_gateways)
            merge = functools.partial(self._merge, field=field, verdict=verdict, mine=mine)
            yield resource, namespace, name, what, merge

    async def _write(
        self,
        fleet: FleetCluster,
        resource: ApiResource,
        namespace: str,
        name: str,
        what: object,
        merge: Callable[[JsonObject], JsonObject | None],
    ) -> bool:
        """Write one object's status unless `what` it says was written already; False when
        this replica may no longer write (the renew deadline passed)."""
        key = self._key(fleet, resource, namespace, name)
        if self._written.get(key) == what:
            return True
        if not self._holding(fleet):
            return False
        result = await asyncio.to_thread(
            write_status, fleet.cluster, resource, namespace=namespace, name=name, merge=merge
        )
        if result in (Written.WRITTEN, Written.UNCHANGED):
            self._written[key] = what
        if result is Written.WRITTEN:
            log.info("status_written", object=object_label(resource.kind, namespace, name))
        return True

    @staticmethod
    def _key(
        fleet: FleetCluster, resource: ApiResource, namespace: str, name: str
    ) -> tuple[ApiResource, str, str, str]:
        """What a write is remembered by: the object's uid too, since a name may be reused."""
        return resource, namespace, name, fleet.mirror(resource).uids.get((namespace, name), "")

    @staticmethod
    def _gateways(
        fleet: FleetCluster, state: FleetState, streams: list[list[Held]]
    ) -> Iterator[_Status]:
        """Each served Gateway of the fleet cluster: its listeners' conditions."""
        mirror = fleet.mirror(resources.GATEWAYS)
        served = {(g.namespace, g.name): g for g in state.gateways}
        for key in sorted(mirror.objects):
            gateway = served.get(key)
            if gateway is None:
                continue  # not served yet (the store coalesces): next time
            verdict = gateway_verdict(state, gateway, mirror.generations.get(key) or 0, streams)
            yield (
                resources.GATEWAYS,
                *key,
                verdict,
                functools.partial(gateway_status, verdict=verdict),
            )

    async def stop(self) -> None:
        if self._elector is not None:
            await asyncio.to_thread(self._elector.release)
        metrics.STATUS_LEADER.set(0)

    def _elector_for(self, cluster: Cluster) -> LeaseElector:
        if self._elector is None or self._cluster is not cluster:
            self._cluster = cluster
            self._written.clear()
            self._elector = LeaseElector(
                cluster=cluster,
                name=LEASE_NAME,
                namespace=self._namespace,
                identity=self._identity,
                duration_seconds=self._lease_seconds,
                renew_deadline_seconds=self._renew_deadline,
            )
        return self._elector

    @staticmethod
    def _merge(
        obj: JsonObject, field: str, verdict: Verdict, mine: Callable[[JsonObject], bool]
    ) -> JsonObject | None:
        if field == "parents":
            refs = parent_refs(obj)
            return merged_status(
                obj, field=field, refs=refs, ref_key="parentRef", verdict=verdict, mine=mine
            )
        return merged_status(
            obj, field=field, refs=target_refs(obj), ref_key="ancestorRef", verdict=verdict
        )

    def _verdicts(
        self, fleet: FleetCluster, state: FleetState, streams: list[list[Held]]
    ) -> list[tuple[ApiResource, str, str, Verdict, str]]:
        """(resource, namespace, name, verdict, status field) for each route and policy of the
        fleet cluster."""
        problems: dict[str, dict[str, str]] = {}
        for problem in reference_problems(state, {}):
            problems.setdefault(problem.obj, {})[problem.field] = problem.message
        served: dict[ApiResource, dict[tuple[str, str], Any]] = {
            resources.HTTP_ROUTES: {(r.namespace, r.name): r for r in state.http_routes},
            resources.GRPC_ROUTES: {(r.namespace, r.name): r for r in state.grpc_routes},
            resources.TRAFFIC_POLICIES: {(p.namespace, p.name): p for p in state.policies},
        }
        gateways = Gateways.of(state)
        found = []
        for resource in _KINDS:
            mirror = fleet.mirror(resource)
            field = "ancestors" if resource is resources.TRAFFIC_POLICIES else "parents"
            for key in sorted(mirror.objects.keys() | mirror.refused.keys()):
                serving = mirror.generations.get(key)
                if (refusal := mirror.refused.get(key)) is not None:
                    text = "; ".join(str(p) for p in refusal.problems)
                    verdict = Verdict.refused(refusal.generation, text, serving)
                elif (obj := served[resource].get(key)) is not None:
                    label = object_label(resource.kind, *key)
                    mine = problems.get(label, {})
                    if resource is resources.TRAFFIC_POLICIES:
                        affects = policy_affects(state, obj, gateways)
                        programmed = Programmed.count(streams, affects)
                        verdict = policy_verdict(obj, serving or 0, mine, programmed)
                    else:
                        affects = route_affects(state, obj, gateways)
                        programmed = Programmed.count(streams, affects)
                        verdict = route_verdict(
                            state, obj, serving or 0, mine, programmed, gateways
                        )
                else:
                    continue  # not served yet (the store coalesces): next time
                found.append((resource, *key, verdict, field))
        return found
