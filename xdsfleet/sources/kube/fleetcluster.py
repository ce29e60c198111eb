"""The fleet cluster, watched: Gateway API routes, TrafficPolicies, Ingresses, TLS Secrets
(of any namespace: Gateway certificates, which cert-manager writes) and member Secrets (and,
when the Fleet is a custom resource there, the Fleet itself), as one `FleetObjects` value.

Fleet-level objects are parsed by the same code as the files (`objects`), each keeping its last
good version when an update is refused; the refusals stay visible in the mirrors for status
write-back. Resource types the cluster lacks (no GRPCRoute CRD, say) simply hold nothing. While
the API server does not answer, the last known objects are kept and marked stale. Until every
resource has listed once there is nothing to serve; each one that keeps it so (403 from RBAC
above all) is named in a log.

It must not decide which members run or how objects combine with the Fleet file's: that is the
aggregator's (app layer). It runs on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from xdsfleet.documents.ingress import Ingress, parse_ingress
from xdsfleet.documents.manifests import FleetSpec
from xdsfleet.model.fleet import (
    Gateway,
    GRPCRoute,
    HTTPRoute,
    Namespace,
    ReferenceGrant,
    TLSSecret,
)
from xdsfleet.model.policy import TrafficPolicy
from xdsfleet.sources.kube import resources
from xdsfleet.sources.kube.client import Cluster
from xdsfleet.sources.kube.group import Watched, WatchGroup
from xdsfleet.sources.kube.mirror import Mirror
from xdsfleet.sources.kube.objects import parse_object
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.secrets import MEMBER_LABEL, MemberSecret, parse_secret
from xdsfleet.sources.kube.settings import KubeSettings

log = structlog.get_logger(__name__)

ORIGIN = "fleet cluster"


@dataclass(frozen=True, slots=True)
class FleetObjects:
    """What the fleet cluster holds, each kind sorted by (namespace, name)."""

    fleet: FleetSpec | None = None  # the Fleet resource, when the Fleet is one
    gateways: tuple[Gateway, ...] = ()
    http_routes: tuple[HTTPRoute, ...] = ()
    grpc_routes: tuple[GRPCRoute, ...] = ()
    policies: tuple[TrafficPolicy, ...] = ()
    ingresses: tuple[Ingress, ...] = ()
    reference_grants: tuple[ReferenceGrant, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    secrets: tuple[MemberSecret, ...] = ()  # sorted by name
    tls_secrets: tuple[TLSSecret, ...] = ()
    foreign_gateways: tuple[tuple[str, str], ...] = ()  # of another controller's class
    stale: bool = False


class FleetCluster:
    """Watches the fleet cluster. `objects` is the latest view; `on_change` is called with it
    after each batch of events that changes it; `synced` is set once every resource has been
    listed (failures do not count: a replica that never saw the fleet cluster has nothing to
    serve)."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        namespace: str,
        fleet_name: str | None,
        on_change: Callable[[FleetObjects], None],
        on_crash: Callable[[BaseException], None],
        settings: KubeSettings,
    ) -> None:
        self._fleet_name = fleet_name
        self._on_change = on_change
        self.objects = FleetObjects()
        self.synced = asyncio.Event()
        self._reported: dict[str, str] = {}  # resource -> the error last said to keep it unready
        watched = [
            Watched(kind, functools.partial(parse_object, kind, origin=ORIGIN))
            for kind in (
                resources.GATEWAYS,
                resources.HTTP_ROUTES,
                resources.GRPC_ROUTES,
                resources.TRAFFIC_POLICIES,
                resources.REFERENCE_GRANTS,
                resources.NAMESPACES,
                resources.TLS_SECRETS,
            )
        ]
        watched.append(Watched(resources.INGRESSES, parse_ingress))
        # Only labelled Secrets, only in the server's own namespace: all it may read.
        watched.append(Watched(resources.SECRETS, parse_secret, namespace, MEMBER_LABEL))
        if fleet_name is not None:
            parse = functools.partial(parse_object, resources.FLEETS, origin=ORIGIN)
            watched.append(Watched(resources.FLEETS, parse))
        self._group = WatchGroup(
            name="fleet",
            cluster=cluster,
            watched=watched,
            settings=settings,
            on_batch=self._update,
            on_crash=on_crash,
        )

    @property
    def cluster(self) -> Cluster:
        return self._group.cluster

    @property
    def failures(self) -> dict[str, str]:
        return self._group.failures

    def mirror(self, resource: ApiResource) -> Mirror[Any]:
        """The objects of one resource, with their generations and refusals (for status)."""
        return self._group.mirrors[resource]

    def start(self) -> None:
        self._group.start()
        log.info("fleet_cluster_watch_started", access=self.cluster.access.describe())

    async def stop(self) -> None:
        await self._group.stop()

    def _say_what_is_missing(self) -> None:
        """Before the first lists, name each resource that keeps the server unready: without
        it there is nothing to serve, and a Role that lacks it (403) will not grant it later."""
        failures = self._group.failures
        for plural, error in sorted(failures.items()):
            if self._reported.get(plural) == error:
                continue
            self._reported[plural] = error
            if "HTTP 403" in error:
                log.error(
                    "fleet_resource_forbidden",
                    resource=plural,
                    error=error,
                    hint="grant get, list and watch on it; the server is not ready until it lists",
                )
            else:
                log.warning("fleet_resource_unlisted", resource=plural, error=error)
        for plural in self._reported.keys() - failures.keys():
            del self._reported[plural]

    def _sorted(self, resource: ApiResource) -> tuple[Any, ...]:
        mirror = self._group.mirrors.get(resource)
        return () if mirror is None else mirror.in_order()

    def _foreign_gateways(self) -> tuple[tuple[str, str], ...]:
        """Gateways listed but left out, neither parsed nor refused: of another class."""
        mirror = self._group.mirrors.get(resources.GATEWAYS)
        if mirror is None:
            return ()
        return tuple(sorted(mirror.uids.keys() - mirror.objects.keys() - mirror.refused.keys()))

    def _update(self, _: set[ApiResource]) -> None:
        if not self._group.answered:
            return
        fleets = self._sorted(resources.FLEETS)
        objects = FleetObjects(
            fleet=next((f for f in fleets if f.name == self._fleet_name), None),
            gateways=self._sorted(resources.GATEWAYS),
            http_routes=self._sorted(resources.HTTP_ROUTES),
            grpc_routes=self._sorted(resources.GRPC_ROUTES),
            policies=self._sorted(resources.TRAFFIC_POLICIES),
            ingresses=self._sorted(resources.INGRESSES),
            reference_grants=self._sorted(resources.REFERENCE_GRANTS),
            namespaces=self._sorted(resources.NAMESPACES),
            secrets=self._sorted(resources.SECRETS),
            tls_secrets=self._sorted(resources.TLS_SECRETS),
            foreign_gateways=self._foreign_gateways(),
            stale=bool(self._group.failures),
        )
        if objects.stale != self.objects.stale:
            if objects.stale:
                log.warning("fleet_cluster_stale", errors=sorted(set(self.failures.values())))
            else:
                log.info("fleet_cluster_recovered")
        if self._group.listed:
            self.synced.set()
        else:
            self._say_what_is_missing()
        if objects != self.objects:
            self.objects = objects
            self._on_change(objects)
