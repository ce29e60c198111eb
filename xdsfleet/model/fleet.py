"""The fleet as the sources see it: members and what each one runs, plus the route documents.

Kubernetes names are kept (Service, EndpointSlice, ServiceExport, Gateway, HTTPRoute) so that a
reader can map each field back to the manifest it came from. Tuples, never lists: the model is
hashable and shared between generations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EndpointMode(StrEnum):
    """How a member's pods are reached from outside the member."""

    POD = "pod"
    NODE_PORT = "nodePort"


@dataclass(frozen=True, slots=True)
class Member:
    """One Kubernetes cluster of the fleet, with its place in the world."""

    name: str
    region: str
    zone: str
    weight: int = 1
    endpoint_mode: EndpointMode = EndpointMode.POD
    # Where its objects come from: a directory of manifests (resolved, absolute) for now.
    manifests: str | None = None


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None
    target_port: int | str | None = None
    # Set on NodePort and LoadBalancer Services: how members in nodePort mode are reached.
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One `endpoints[]` entry of an EndpointSlice (discovery.k8s.io/v1)."""

    addresses: tuple[str, ...]
    # Conditions as Kubernetes defines them: a missing `ready` means ready; a missing `serving`
    # means the same as `ready`; `terminating` defaults to False.
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str | None = None
    node_name: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str  # the `kubernetes.io/service-name` label
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[Endpoint, ...]
    address_type: str = "IPv4"


@dataclass(frozen=True, slots=True)
class Node:
    """A member's node, as far as NodePort endpoints need it."""

    name: str
    addresses: tuple[str, ...]  # InternalIP addresses, in the order Kubernetes lists them
    zone: str | None = None  # the `topology.kubernetes.io/zone` label
    ready: bool = True


@dataclass(frozen=True, slots=True)
class MemberState:
    """What one member currently runs. `stale` marks a member whose source stopped answering:
    its last known objects are kept and still served."""

    member: Member
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    # (namespace, name) of each ServiceExport.
    exports: tuple[tuple[str, str], ...] = ()
    # Only filled for members in nodePort mode.
    nodes: tuple[Node, ...] = ()
    stale: bool = False


@dataclass(frozen=True, slots=True)
class GatewayListener:
    name: str
    port: int
    protocol: str = "HTTP"
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Gateway:
    namespace: str
    name: str
    gateway_class: str
    listeners: tuple[GatewayListener, ...]


@dataclass(frozen=True, slots=True)
class ParentRef:
    namespace: str
    name: str
    section_name: str | None = None  # the Gateway listener name, when pinned to one
    port: int | None = None


class PathMatchType(StrEnum):
    EXACT = "Exact"
    PATH_PREFIX = "PathPrefix"


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathMatchType = PathMatchType.PATH_PREFIX
    value: str = "/"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path: PathMatch = field(default_factory=PathMatch)


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A weighted backend. `kind` is `ServiceImport` (the service across all exporting members)
    or `Service` (documented to mean the same)."""

    name: str
    namespace: str
    port: int
    weight: int = 1
    kind: str = "Service"


@dataclass(frozen=True, slots=True)
class RouteRule:
    matches: tuple[RouteMatch, ...]
    backend_refs: tuple[BackendRef, ...]


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    namespace: str
    name: str
    parent_refs: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]


@dataclass(frozen=True, slots=True)
class FleetState:
    """One generation of everything the sources know. Members are sorted by name, gateways and
    routes by (namespace, name), so equal inputs give equal states."""

    name: str
    members: tuple[MemberState, ...]
    gateways: tuple[Gateway, ...] = ()
    http_routes: tuple[HTTPRoute, ...] = ()
    export_all: bool = False
