"""The benchmark's fleet, generated in code: M members x S services with E endpoints in total.

Members are spread over six localities (three regions of two zones), and so are the simulated
clients, so that a change is translated for the twelve profiles a real fleet would have (a
sidecar and a gateway per locality), each with its own priorities. Every member runs and exports
every service; endpoint `j` belongs to service `j % S` in member `(j // S) % M`, so each service
has E / S endpoints spread evenly over the members.

`Fleet` is mutable on purpose: the churn and convergence generators edit it endpoint by
endpoint, and `state()` hands out a new `FleetState` that shares every unchanged object with the
previous one, as the sources do. Translation then redoes only what an event really touches.

One endpoint is the *marker*: the first endpoint of the hot service (`svc-0000`) in the first
member. Its address encodes a step number (10.255.x.y), so a client that receives the hot
assignment can tell which change it carries without asking the server.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xdsfleet.model.attachment import MCS_GROUP
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
    RouteMatch,
    RouteRule,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate.names import cluster_name

FLEET_NAME = "bench"
NAMESPACE = "default"
PORT = 80
PORT_NAME = "http"
TARGET_PORT = 8080
GATEWAY = "bench"
GATEWAY_REF = f"{NAMESPACE}/{GATEWAY}"
GATEWAY_PORT = 8080
ROUTE_DOMAIN = "bench.example"

# Three regions of two zones: nearest-first priorities then differ between zones of a region,
# between regions, and between the sidecar and the gateway of one place only in the listeners.
LOCALITIES = (
    ("eu-west", "eu-west-1a"),
    ("eu-west", "eu-west-1b"),
    ("us-east", "us-east-1a"),
    ("us-east", "us-east-1b"),
    ("ap-south", "ap-south-1a"),
    ("ap-south", "ap-south-1b"),
)

HOT_SERVICE = 0
MARKER_PREFIX = "10.255."
# Generated addresses count up from 10.0.0.1 and must stay below the markers' 10.255.0.0/16.
MAX_ENDPOINTS = 255 * 65536 - 2


def service_name(index: int) -> str:
    return f"svc-{index:04d}"


HOT_CLUSTER = cluster_name(NAMESPACE, service_name(HOT_SERVICE), PORT)


def marker_address(step: int) -> str:
    """The marker endpoint's address at change `step`: never an address of another endpoint."""
    return f"{MARKER_PREFIX}{(step >> 8) & 255}.{step & 255}"


def marker_step(address: str) -> int | None:
    """The step a marker address encodes; None for any other address."""
    if not address.startswith(MARKER_PREFIX):
        return None
    high, low = address[len(MARKER_PREFIX) :].split(".")
    return int(high) << 8 | int(low)


def endpoint_address(index: int) -> str:
    value = index + 1  # 10.0.0.0 would be a network address
    return f"10.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def profiles() -> tuple[NodeProfile, ...]:
    """The twelve profiles of the simulated clients: a sidecar and a gateway per locality."""
    return tuple(
        NodeProfile(
            role=role, gateway=GATEWAY_REF if role is Role.GATEWAY else None, region=r, zone=z
        )
        for r, z in LOCALITIES
        for role in (Role.SIDECAR, Role.GATEWAY)
    )


@dataclass(frozen=True, slots=True)
class Shape:
    members: int
    services: int
    endpoints: int

    def __post_init__(self) -> None:
        if min(self.members, self.services) < 1 or not 1 <= self.endpoints <= MAX_ENDPOINTS:
            raise ValueError(f"not a fleet: {self}")

    def describe(self) -> str:
        return f"M={self.members:,} S={self.services:,} E={self.endpoints:,}"


# The largest fleet the targets speak of: 50 members, 1,000 services, 100,000 endpoints.
FULL_SCALE = Shape(members=50, services=1_000, endpoints=100_000)


class Fleet:
    """The generated fleet, edited in place; `state()` is the FleetState of the moment."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.members = tuple(
            Member(name=f"m{m:02d}", region=r, zone=z)
            for m in range(shape.members)
            for r, z in (LOCALITIES[m % len(LOCALITIES)],)
        )
        names = [service_name(s) for s in range(shape.services)]
        port = ServicePort(PORT_NAME, PORT, target_port=TARGET_PORT)
        # Shared by every member: a service is the same object wherever it runs.
        self._services = tuple(Service(NAMESPACE, name, (port,)) for name in names)
        self._exports = tuple((NAMESPACE, name) for name in names)
        self._slice_ports = (EndpointPort(PORT_NAME, TARGET_PORT),)
        addresses: list[list[list[str]]] = [[[] for _ in names] for _ in self.members]
        for j in range(shape.endpoints):
            m, s = self.place_of(j)
            addresses[m][s].append(marker_address(0) if j == 0 else endpoint_address(j))
        self._slices = [
            [self._slice(m, s, self._endpoints(m, a)) for s, a in enumerate(per_service)]
            for m, per_service in enumerate(addresses)
        ]
        self._member_states: list[MemberState | None] = [None] * shape.members
        self._lost: dict[int, MemberState] = {}
        self._gateways = (
            Gateway(NAMESPACE, GATEWAY, "xdsfleet", (GatewayListener("http", GATEWAY_PORT),)),
        )
        self._routes = tuple(self._route(name) for name in names)
        self._state: FleetState | None = None

    # --- Reading ---

    def state(self) -> FleetState:
        if self._state is None:
            members = tuple(self._member_state(m) for m in range(self.shape.members))
            self._state = FleetState(
                name=FLEET_NAME,
                members=members,
                gateways=self._gateways,
                http_routes=self._routes,
            )
        return self._state

    def place_of(self, endpoint: int) -> tuple[int, int]:
        """The (member, service) that generated endpoint number `endpoint` belongs to."""
        services = self.shape.services
        return (endpoint // services) % self.shape.members, endpoint % services

    def endpoints(self, member: int, service: int) -> tuple[Endpoint, ...]:
        return self._slices[member][service].endpoints

    def services(self) -> tuple[Service, ...]:
        return self._services

    def lost(self, member: int) -> bool:
        return member in self._lost

    # --- Editing ---

    def set_endpoints(self, member: int, service: int, endpoints: tuple[Endpoint, ...]) -> None:
        if member in self._lost:
            raise ValueError(f"member {member} is lost: nothing of it changes until restored")
        self._slices[member][service] = replace(self._slices[member][service], endpoints=endpoints)
        self._member_states[member] = None
        self._state = None

    def new_endpoint(self, member: int, address: str, *, ready: bool = True) -> Endpoint:
        return Endpoint(
            addresses=(address,), ready=ready, serving=ready, zone=self.members[member].zone
        )

    def move_marker(self, step: int) -> None:
        """Give the marker endpoint the address of `step`: one endpoint replaced by another."""
        endpoints = self.endpoints(0, HOT_SERVICE)
        kept = tuple(e for e in endpoints if marker_step(e.addresses[0]) is None)
        self.set_endpoints(0, HOT_SERVICE, (self.new_endpoint(0, marker_address(step)), *kept))

    def lose(self, member: int) -> None:
        """The member's API stops answering and its endpoints are gone: it stays, empty and stale,
        as the aggregator presents a member it cannot reach."""
        if member in self._lost:
            return
        self._lost[member] = self._member_state(member)
        self._member_states[member] = MemberState(self.members[member], stale=True)
        self._state = None

    def restore(self, member: int) -> None:
        """The member answers again with what it had: the very objects it had before."""
        before = self._lost.pop(member, None)
        if before is not None:
            self._member_states[member] = before
            self._state = None

    # --- Building ---

    def _member_state(self, member: int) -> MemberState:
        built = self._member_states[member]
        if built is None:
            built = self._member_states[member] = MemberState(
                member=self.members[member],
                services=self._services,
                endpoint_slices=tuple(self._slices[member]),
                exports=self._exports,
            )
        return built

    def _endpoints(self, member: int, addresses: list[str]) -> tuple[Endpoint, ...]:
        return tuple(self.new_endpoint(member, a) for a in addresses)

    def _slice(self, member: int, service: int, endpoints: tuple[Endpoint, ...]) -> EndpointSlice:
        name = self._services[service].name
        return EndpointSlice(
            namespace=NAMESPACE,
            name=f"{name}-{self.members[member].name}",
            service_name=name,
            ports=self._slice_ports,
            endpoints=endpoints,
        )

    def _route(self, service: str) -> HTTPRoute:
        return HTTPRoute(
            namespace=NAMESPACE,
            name=service,
            parent_refs=(ParentRef(NAMESPACE, GATEWAY),),
            hostnames=(f"{service}.{ROUTE_DOMAIN}",),
            rules=(
                RouteRule(
                    matches=(RouteMatch(),),
                    backend_refs=(
                        BackendRef(service, NAMESPACE, PORT, kind="ServiceImport", group=MCS_GROUP),
                    ),
                ),
            ),
        )
