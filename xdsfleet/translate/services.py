"""Which service ports the fleet exports, and the endpoints each member contributes to them.

This is where Kubernetes semantics end: ServiceExport (or `exportAll`), EndpointSlice port
matching and endpoint conditions become plain `MemberPort` values that the Envoy builders key
their memos on. It builds no Envoy messages and knows nothing of node profiles.

Only TCP ports are served: every cluster is an HTTP or gRPC upstream, and no listener carries
UDP or SCTP to one (kube-dns's 53/UDP beside 53/TCP is left out, so one port number keys one
port). A dual-stack Service serves one family (the Fleet's `ipFamily` when it has it, else its first
`ipFamilies` entry) and counts its replicas by pod (`targetRef`), not by address.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from xdsfleet.model.fleet import (
    Endpoint,
    EndpointMode,
    EndpointSlice,
    FleetState,
    Member,
    MemberState,
    Node,
    Service,
    ServicePort,
)
from xdsfleet.translate import names
from xdsfleet.translate.memo import cached, memoised_by_identity, remember
from xdsfleet.translate.steps import Steps, finish

# appProtocol values that mean HTTP/2 without TLS towards the pods.
HTTP2_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "grpc", "h2c", "http2"})

# Slices of type FQDN name hosts, not addresses: an EDS endpoint cannot carry them. Without
# `ipFamilies` (a file), IPv4 is preferred.
_IP_ADDRESS_TYPES = ("IPv4", "IPv6")
# What an upstream cluster carries.
SERVED_PROTOCOL = "TCP"


class ServicePortKey(NamedTuple):
    """A multi-cluster service port: the same namespace, name and port number in every member."""

    namespace: str
    service: str
    port: int

    @property
    def cluster(self) -> str:
        return names.cluster_name(self.namespace, self.service, self.port)


# Backends and zones are named tuples, not dataclasses: a fleet of 100,000 endpoints has as
# many, and tuples of strings and numbers hash and compare in C (a member's contribution is
# hashed once, over all of them) and are not walked by the collector.


class Backend(NamedTuple):
    """One endpoint address of a service port; `draining` when it serves but is terminating."""

    address: str
    port: int
    draining: bool


class ZoneBackends(NamedTuple):
    zone: str
    backends: tuple[Backend, ...]  # sorted by (address, port)
    # Ready pods behind these backends: the backends themselves, or for nodePort members all
    # the member's ready pods (every node forwards to every pod).
    replicas: int = 0


@dataclass(frozen=True, slots=True)
class MemberPort:
    """What one member contributes to one service port: its place and its endpoints by zone."""

    member: Member
    http2: bool
    zones: tuple[ZoneBackends, ...]  # sorted by zone
    port_name: str = ""  # the Service port's name in this member
    # Computed once: these values key the assignment memos on every translation of every
    # profile, and a generated dataclass hash would walk all endpoints each time.
    _hash: int = field(init=False, repr=False, compare=False)
    # `endpoints`' serialized localities of this contribution, kept with it: every layout of
    # its port takes them (a member lost re-lays every port), and a memo lookup per member
    # per port was most of a layout. Derived from the fields above only, so shared safely.
    serialized: object = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        # The member by name: equal members have equal names, and hashing the whole Member
        # (a generated hash over all its fields) 50,000 times was a tenth of an index.
        object.__setattr__(
            self, "_hash", hash((self.member.name, self.http2, self.zones, self.port_name))
        )

    @property
    def replicas(self) -> int:
        return sum(zone.replicas for zone in self.zones)

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True, weakref_slot=True)
class ServicePortBackends:
    """A service port and each exporting member's contribution: all that its cluster and its
    assignments depend on."""

    key: ServicePortKey
    members: tuple[MemberPort, ...]  # in member order
    # The entry of the port this one replaced in an updated index (`updated_index`), while it
    # lives: a member lost derives this entry's layouts from that one's (`endpoints`) rather
    # than laying every locality out again. Not part of the value.
    replaced: weakref.ref[ServicePortBackends] | None = field(
        default=None, repr=False, compare=False
    )
    http2: bool = field(init=False, compare=False)
    # The port's name, from the first member that names it: policies select ports by name.
    port_name: str = field(init=False, compare=False)
    # Computed once, as in MemberPort: every profile looks its assignment up by this value.
    _hash: int = field(init=False, repr=False, compare=False)
    # `endpoints`' layouts of this port by placement, kept with it (as `MemberPort.serialized`):
    # they live as long as the entry, so the next entry of the port can be derived from them.
    layouts: dict[object, object] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "http2", any(m.http2 for m in self.members))
        object.__setattr__(
            self, "port_name", next((m.port_name for m in self.members if m.port_name), "")
        )
        object.__setattr__(self, "_hash", hash((self.key, self.members)))

    def __hash__(self) -> int:
        return self._hash


ServiceIndex = Mapping[ServicePortKey, ServicePortBackends]


@memoised_by_identity
def service_index(state: FleetState) -> ServiceIndex:
    """Every exported service port, sorted.

    A port of the multi-cluster service exists when any exporting member's Service has it.
    """
    return finish(indexing(state))


# Index entries made between two yields (a few microseconds each).
_ENTRIES_STEP = 256


def indexing(state: FleetState) -> Steps[ServiceIndex]:
    """`service_index`, a member per step and then a few hundred entries per step, unless the
    memo has it: a member whose own fields changed (a drain, a weight) makes the whole index
    again, 20-30 ms at E = 100,000, and a first one takes ~6 ms per member."""
    found = cached(service_index, state)
    if found is not None:
        return found
    gathered: dict[ServicePortKey, list[MemberPort]] = {}
    for member_state in state.members:
        for key, contribution in member_ports(member_state, state.export_all, state.ip_family):
            gathered.setdefault(key, []).append(contribution)
        yield
    index: dict[ServicePortKey, ServicePortBackends] = {}
    for done, key in enumerate(sorted(gathered), 1):
        index[key] = ServicePortBackends(key, tuple(gathered[key]))
        if done % _ENTRIES_STEP == 0:
            yield
    return remember(service_index, index, state)


@memoised_by_identity
def member_ports(
    member_state: MemberState, export_all: bool, ip_family: str | None
) -> tuple[tuple[ServicePortKey, MemberPort], ...]:
    """The service ports one member exports, each with that member's endpoints for it."""
    exported = set(member_state.exports)
    slices = _slices_by_service(member_state.endpoint_slices)
    contributions = []
    for service in member_state.services:
        if export_all or (service.namespace, service.name) in exported:
            contributions += _service_ports(member_state, service, slices, ip_family)
    return tuple(contributions)


def _slices_by_service(
    endpoint_slices: Iterable[EndpointSlice],
) -> dict[tuple[str, str], list[EndpointSlice]]:
    slices: dict[tuple[str, str], list[EndpointSlice]] = {}
    for endpoint_slice in endpoint_slices:
        slices.setdefault((endpoint_slice.namespace, endpoint_slice.service_name), []).append(
            endpoint_slice
        )
    return slices


def _service_ports(
    member_state: MemberState,
    service: Service,
    slices: Mapping[tuple[str, str], list[EndpointSlice]],
    ip_family: str | None,
) -> list[tuple[ServicePortKey, MemberPort]]:
    """What one member contributes to each port of one of its exported Services."""
    own_slices = slices.get((service.namespace, service.name), [])
    family = _family(service, own_slices, ip_family)
    served = [s for s in own_slices if s.address_type == family]
    contributions = []
    for service_port in service.ports:
        if service_port.protocol != SERVED_PROTOCOL:
            continue
        key = ServicePortKey(service.namespace, service.name, service_port.port)
        contribution = _member_port(member_state.member, service_port, served)
        if member_state.member.endpoint_mode is EndpointMode.NODE_PORT:
            contribution = _through_nodes(contribution, service_port, member_state.nodes)
        contributions.append((key, contribution))
    return contributions


class IndexUpdate(NamedTuple):
    entries: ServiceIndex  # the updated index
    ports: frozenset[ServicePortKey]  # the ports whose entry was rebuilt, added or removed


def updated_index(
    index: ServiceIndex,
    state: FleetState,
    changed: Mapping[int, Collection[tuple[str, str]]],
) -> IndexUpdate:
    """`service_index(state)`, from the index of a previous state that differs from `state`
    only in the given services (namespace, name) of the members at the given positions: the
    work is proportional to those services, not to the fleet."""
    updated = dict(index)
    rebuilt: set[ServicePortKey] = set()
    contributions = _contributions(state, changed)
    # The index is sorted: each changed service's previous ports are found by bisection.
    keys = list(index)
    for name, ports in contributions.items():
        start = bisect.bisect_left(keys, name)
        end = bisect.bisect_left(keys, (*name, _AFTER_EVERY_PORT), start)
        keys_of = {*keys[start:end], *ports.keys()}
        rebuilt |= keys_of
        for key in keys_of:
            entry = _updated_entry(index.get(key), key, state, changed, ports.get(key, {}))
            if entry is None:
                updated.pop(key, None)
            else:
                updated[key] = entry
    if updated.keys() != index.keys():
        updated = dict(sorted(updated.items()))
    return IndexUpdate(updated, frozenset(rebuilt))


# Greater than any port number: (namespace, service, this) sorts after all of the service's keys.
_AFTER_EVERY_PORT = 1 << 32


def _contributions(
    state: FleetState, changed: Mapping[int, Collection[tuple[str, str]]]
) -> dict[tuple[str, str], dict[ServicePortKey, dict[int, MemberPort]]]:
    """(namespace, service) -> port -> member position -> that member's contribution now,
    for the changed services of the changed members (absent: it contributes nothing)."""
    found: dict[tuple[str, str], dict[ServicePortKey, dict[int, MemberPort]]] = {}
    for position, services in changed.items():
        member_state = state.members[position]
        exported = _exported(member_state.exports)
        by_name = _by_name(member_state.services)
        names = {name for _, name in services}
        slices = _slices_by_service(
            s
            for s in member_state.endpoint_slices
            if s.service_name in names and (s.namespace, s.service_name) in services
        )
        for name in services:
            ports = found.setdefault(name, {})
            service = by_name.get(name)
            if service is not None and (state.export_all or name in exported):
                for key, contribution in _service_ports(
                    member_state, service, slices, state.ip_family
                ):
                    ports.setdefault(key, {})[position] = contribution
    return found


@memoised_by_identity
def _exported(exports: tuple[tuple[str, str], ...]) -> frozenset[tuple[str, str]]:
    """A member's exports as a set; kept while the member shares the same tuple."""
    return frozenset(exports)


@memoised_by_identity
def _by_name(services: tuple[Service, ...]) -> dict[tuple[str, str], Service]:
    """A member's Services by (namespace, name); kept while the member shares the same tuple."""
    return {(s.namespace, s.name): s for s in services}


def _updated_entry(
    entry: ServicePortBackends | None,
    key: ServicePortKey,
    state: FleetState,
    changed: Mapping[int, Collection[tuple[str, str]]],
    fresh: Mapping[int, MemberPort],
) -> ServicePortBackends | None:
    """One service port's entry with the changed members' contributions swapped in."""
    name = (key.namespace, key.service)
    swapped = {
        state.members[position].member.name: fresh.get(position)
        for position, services in changed.items()
        if name in services
    }
    members = list(entry.members) if entry is not None else []
    # The common case, members that contributed before and still do (an endpoint changed):
    # replaced in place, without a walk of the fleet's members.
    places = {m.member.name: i for i, m in enumerate(members) if m.member.name in swapped}
    present = {member: c for member, c in swapped.items() if c is not None}
    if len(places) == len(present) == len(swapped):
        for member, i in places.items():
            members[i] = present[member]
        return _new_entry(entry, key, tuple(members))
    # Members came or went: in the fleet's member order.
    kept: dict[str, MemberPort | None] = {m.member.name: m for m in members}
    kept.update(swapped)
    ordered = (kept.get(m.member.name) for m in state.members)
    found = tuple(c for c in ordered if c is not None)
    return _new_entry(entry, key, found) if found else None


def _new_entry(
    entry: ServicePortBackends | None, key: ServicePortKey, members: tuple[MemberPort, ...]
) -> ServicePortBackends:
    """The port's entry with `members`, replacing `entry`: that entry itself, or the one it
    replaced, when equal (a member restored gets back the very entry of before its loss, with
    the layouts kept with it: a later loss is derived from them, `endpoints`)."""
    found = ServicePortBackends(key, members, weakref.ref(entry) if entry is not None else None)
    earlier = entry.replaced() if entry is not None and entry.replaced is not None else None
    for candidate in (entry, earlier):
        if candidate is not None and hash(candidate) == hash(found) and candidate == found:
            return candidate
    return found


def _family(service: Service, slices: list[EndpointSlice], preferred: str | None) -> str:
    """The address family served: the Fleet's when the Service has it, else the Service's
    first; without `ipFamilies` (a file), what its slices carry, IPv4 first."""
    families = service.ip_families
    if not families:
        carried = {s.address_type for s in slices}
        families = tuple(f for f in _IP_ADDRESS_TYPES if f in carried)
    if preferred in families:
        return preferred
    return families[0] if families else _IP_ADDRESS_TYPES[0]


def _member_port(
    member: Member, service_port: ServicePort, slices: list[EndpointSlice]
) -> MemberPort:
    """`slices` are those of one address family."""
    http2 = service_port.app_protocol in HTTP2_APP_PROTOCOLS
    # (address, port) -> where and what. During slice rollovers Kubernetes may list one
    # endpoint in two slices; keep it once, preferring the ready copy.
    found: dict[tuple[str, int], tuple[str, bool, str]] = {}  # -> (zone, draining, pod)
    for endpoint_slice in slices:
        # Slice ports carry the target port under the Service port's name.
        for slice_port in endpoint_slice.ports:
            if (
                slice_port.name == service_port.name
                and slice_port.protocol == service_port.protocol
            ):
                break
        else:
            continue
        http2 = http2 or slice_port.app_protocol in HTTP2_APP_PROTOCOLS
        port = slice_port.port
        for endpoint in endpoint_slice.endpoints:
            draining = _draining(endpoint)
            if draining is None or not endpoint.addresses:
                continue
            # Kubernetes: the addresses are fungible and consumers may use only the first.
            address = endpoint.addresses[0]
            key = (address, port)
            kept = found.get(key)
            if kept is None or kept[1]:
                found[key] = (endpoint.zone or member.zone, draining, endpoint.target or address)
    if found and all(draining for _, draining, _ in found.values()):
        # KEP-1669: when every endpoint is terminating, those still serving take the traffic
        # (as kube-proxy does) rather than none at all.
        found = {key: (zone, False, pod) for key, (zone, _, pod) in found.items()}
    by_zone: dict[str, list[Backend]] = {}
    pods: dict[str, set[str]] = {}
    # Sorted by (address, port) once, before the backends are made: each zone's then are.
    for (address, port), (zone, draining, pod) in sorted(found.items()):
        by_zone.setdefault(zone, []).append(Backend(address, port, draining))
        if not draining:
            pods.setdefault(zone, set()).add(pod)
    zones = tuple(
        ZoneBackends(zone, tuple(by_zone[zone]), replicas=len(pods.get(zone, ())))
        for zone in sorted(by_zone)
    )
    return MemberPort(member=member, http2=http2, zones=zones, port_name=service_port.name)


def _through_nodes(
    pods: MemberPort, service_port: ServicePort, nodes: tuple[Node, ...]
) -> MemberPort:
    """A nodePort member's contribution: its ready nodes at the port's nodePort, as one
    locality in the member's zone (kube-proxy spreads each node's traffic over every pod), and
    only while some pod is ready."""
    replicas = pods.replicas
    if replicas == 0 or service_port.node_port is None:
        return MemberPort(pods.member, pods.http2, (), pods.port_name)
    backends = tuple(
        sorted(
            {
                Backend(n.addresses[0], service_port.node_port, False)
                for n in nodes
                if n.ready and n.addresses
            },
            key=lambda b: (b.address, b.port),
        )
    )
    zones = (ZoneBackends(pods.member.zone, backends, replicas),) if backends else ()
    return MemberPort(pods.member, pods.http2, zones, pods.port_name)


def _draining(endpoint: Endpoint) -> bool | None:
    """False to serve the endpoint, True to keep it only for requests under way, None to skip.
    A terminating endpoint never serves new requests, even `ready` (which a Service with
    `publishNotReadyAddresses` forces to true): `serving` says whether it still answers."""
    if endpoint.terminating:
        return True if endpoint.serving else None
    if endpoint.ready:
        return False
    return None
