"""ClusterLoadAssignments: a service port's endpoints by locality, prioritised for one node.

Assignments are the hot path: they change with every endpoint event and are sent to every
client. Each is built once per (endpoints, priorities) and handed out as the same object, which
callers must never mutate; the cache then skips re-encoding it. Nodes in different places get
different priorities for the same localities, so each member's localities are serialized once
(by hand, byte for byte as protobuf would: building 100,000 endpoint messages only to serialize
them was most of a first publish), laid out once per service port (`_Layout`: weighted and
sorted), and a view only looks up the tier of each locality and joins bytes (protobuf's
repeated fields concatenate on the wire): a member lost lays each port out again once and joins
one assignment per view, never building a message.
"""

from __future__ import annotations

import functools
from operator import add

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from xdsfleet.cache import wire
from xdsfleet.model.fleet import Member
from xdsfleet.translate.localities import LocalityView, Place, compact
from xdsfleet.translate.memo import memoised, memoised_by_identity
from xdsfleet.translate.names import pinned_cluster_name
from xdsfleet.translate.placement import (
    DEFAULT_PLACEMENT,
    Placement,
    locality_weights,
    member_tier,
)
from xdsfleet.translate.proto import Message, Serialized
from xdsfleet.translate.services import Backend, MemberPort, ServicePortBackends


def assignment_name(port: ServicePortBackends, placement: Placement) -> str:
    """The cluster (and assignment) name: pinned placements have their own."""
    cluster = port.key.cluster
    return pinned_cluster_name(cluster, placement.pinned) if placement.pinned else cluster


@memoised
def assignment(
    port: ServicePortBackends, view: LocalityView, placement: Placement = DEFAULT_PLACEMENT
) -> Message:
    """The assignment of the service port's cluster as a node at `view` sees it."""
    layout = _layout(port, placement)
    table = _tier_table(view, placement.tiers, placement.pinned)
    # Many views give the same tiers (every node in a far region, say): they share one object.
    return _joined(layout, tuple(map(table.__getitem__, layout.places)))


class _Layout:
    """A service port's localities under one placement, in every view's order but the tiers:
    serialized once, sorted by (region, zone, member), without the weight-0 ones (Envoy wants
    locality weights of at least 1: a drained member, a member weighted 0 and a locality with
    only draining endpoints are left out). Each view then only looks up the tier of each place
    and joins bytes: a port's change costs one layout and a join per view, not a build per view.
    Compared by identity (`_joined` is memoised on it)."""

    __slots__ = ("blocks", "heads", "name", "places", "policy", "sizes", "weights")

    def __init__(self, port: ServicePortBackends, placement: Placement) -> None:
        weights = locality_weights(port, placement)
        check = placement.health_check_port
        found: list[tuple[Place, bytes, bytes]] = []
        for member_port, member_weights in zip(port.members, weights, strict=True):
            places, blocks = _member_localities(member_port, check)
            for place, data, weight in zip(places, blocks, member_weights, strict=True):
                if weight:
                    found.append((place, data, _weight(weight)))
        found.sort()  # by place (region, zone, member): unique, so the bytes are never compared
        self.places: tuple[Place, ...] = tuple(f[0] for f in found)
        self.blocks: tuple[bytes, ...] = tuple(f[1] for f in found)
        self.weights: tuple[bytes, ...] = tuple(f[2] for f in found)
        self.sizes = tuple(map(add, map(len, self.blocks), map(len, self.weights)))
        self.heads = tuple(map(_head, self.sizes))  # framing without a priority
        self.name = wire.text(_CLUSTER_NAME, assignment_name(port, placement))
        self.policy = b""
        if placement.overprovisioning_factor is not None:
            policy = endpoint_pb2.ClusterLoadAssignment.Policy()
            policy.overprovisioning_factor.value = placement.overprovisioning_factor
            self.policy = wire.length_delimited(
                _POLICY, policy.SerializeToString(deterministic=True)
            )


@memoised
def _layout(port: ServicePortBackends, placement: Placement) -> _Layout:
    return _Layout(port, placement)


class _TierTable(dict[Place, int]):
    """Place -> tier for one view and one placement's tiers and pins, filled as places are
    looked up: the same few places recur in every service port."""

    def __init__(
        self, view: LocalityView, tiers: tuple[tuple[str, ...], ...], pinned: tuple[str, ...]
    ) -> None:
        super().__init__()
        self._rule = (view, tiers, pinned)

    def __missing__(self, place: Place) -> int:
        found = self[place] = member_tier(*self._rule, place)
        return found


@memoised
def _tier_table(
    view: LocalityView, tiers: tuple[tuple[str, ...], ...], pinned: tuple[str, ...]
) -> _TierTable:
    return _TierTable(view, tiers, pinned)


@memoised_by_identity
def _joined(layout: _Layout, tiers: tuple[int, ...]) -> Message:
    """The assignment of `layout` with each locality at its tier: serialized as deterministic
    serialization lays the message out: fields in number order, the repeated `endpoints` one
    framed block after another, and each block's `priority` (field 5) after its locality,
    endpoints and weight (fields 1-3). Proto3 leaves a 0 priority out."""
    # Compact only the tiers still in use, or a dropped locality would leave a gap.
    priority = compact(tiers)
    parts = [layout.name]
    blocks, weights, heads, sizes = layout.blocks, layout.weights, layout.heads, layout.sizes
    # Stable: within a tier, the layout's (region, zone, member) order.
    for index in sorted(range(len(tiers)), key=tiers.__getitem__):
        tier = priority[tiers[index]]
        if tier:
            suffix = _priority(tier)
            parts += (_head(sizes[index] + len(suffix)), blocks[index], weights[index], suffix)
        else:
            parts += (heads[index], blocks[index], weights[index])
    parts.append(layout.policy)
    return Serialized(endpoint_pb2.ClusterLoadAssignment, b"".join(parts))


# Field numbers of envoy.config.endpoint.v3 (checked against the descriptors in the tests).
_CLUSTER_NAME = 1  # ClusterLoadAssignment.cluster_name
_ENDPOINTS = 2  # ClusterLoadAssignment.endpoints
_POLICY = 4  # ClusterLoadAssignment.policy
_LOCALITY = 1  # LocalityLbEndpoints.locality
_LB_ENDPOINTS = 2  # LocalityLbEndpoints.lb_endpoints
_WEIGHT = 3  # LocalityLbEndpoints.load_balancing_weight
_PRIORITY = 5  # LocalityLbEndpoints.priority
_VALUE = 1  # google.protobuf.UInt32Value.value
_REGION, _ZONE, _SUB_ZONE = 1, 2, 3  # Locality
_ENDPOINT = 1  # LbEndpoint.endpoint
_HEALTH_STATUS = 2  # LbEndpoint.health_status
_ENDPOINT_ADDRESS = 1  # Endpoint.address
_HEALTH_CHECK_CONFIG = 2  # Endpoint.health_check_config
_PORT_VALUE = 1  # Endpoint.HealthCheckConfig.port_value
_SOCKET_ADDRESS = 1  # Address.socket_address
_ADDRESS, _SOCKET_PORT = 2, 3  # SocketAddress.address, .port_value


@functools.cache
def _priority(tier: int) -> bytes:
    return wire.varint(_PRIORITY << 3) + wire.varint(tier)


@functools.lru_cache(maxsize=4096)
def _head(size: int) -> bytes:
    """The tag and length of an `endpoints` block of `size` bytes."""
    return wire.header(_ENDPOINTS, size)


def _member_localities(
    member_port: MemberPort, health_check_port: int | None
) -> tuple[tuple[Place, ...], tuple[bytes, ...]]:
    """The member's zones, in zone order: the place of each, and its locality serialized
    without weight nor priority (fields 1-2): every view and every weight shares it, and
    joining its bytes costs a fraction of building and encoding it again. Kept with the
    member port (`MemberPort.serialized`), for the health-check port last asked."""
    kept = member_port.serialized
    if isinstance(kept, _Localities) and kept.health_check_port == health_check_port:
        return kept.places, kept.blocks
    found = _Localities(member_port, health_check_port)
    object.__setattr__(member_port, "serialized", found)
    return found.places, found.blocks


class _Localities:
    __slots__ = ("blocks", "health_check_port", "places")

    def __init__(self, member_port: MemberPort, health_check_port: int | None) -> None:
        self.health_check_port = health_check_port
        self.places, self.blocks = _serialized_localities(member_port, health_check_port)


def _serialized_localities(
    member_port: MemberPort, health_check_port: int | None
) -> tuple[tuple[Place, ...], tuple[bytes, ...]]:
    member = member_port.member
    check = b""
    if health_check_port is not None:
        check = wire.length_delimited(_HEALTH_CHECK_CONFIG, _uint32(_PORT_VALUE, health_check_port))
    places = tuple(
        _place(member.region, zone.zone, member.name, member.zone) for zone in member_port.zones
    )
    blocks = tuple(_locality(member, zone.zone, zone.backends, check) for zone in member_port.zones)
    return places, blocks


@memoised
def _place(region: str, zone: str, member: str, member_zone: str) -> Place:
    """One object per place: every service port of a member has a locality there, and a fleet
    of 100,000 endpoints would otherwise hold a place per locality for the collector to walk."""
    return Place(region, zone, member, member_zone)


@functools.lru_cache(maxsize=4096)
def _weight(weight: int) -> bytes:
    """A locality's `load_balancing_weight` (field 3, a UInt32Value), serialized."""
    return wire.length_delimited(_WEIGHT, _uint32(_VALUE, weight))


def _locality(member: Member, zone: str, backends: tuple[Backend, ...], check: bytes) -> bytes:
    """A LocalityLbEndpoints' `locality` and `lb_endpoints` (fields 1-2), serialized by hand as
    deterministic serialization lays them out (fields in number order, proto3 defaults left
    out; tests/test_translate_endpoints.py holds the protobuf-built reference): building 100,000
    messages only to serialize them was most of a first publish at E = 100,000, and left the
    collector half a million objects to walk."""
    locality = (
        wire.text(_REGION, member.region)
        + wire.text(_ZONE, zone)
        + wire.text(_SUB_ZONE, member.name)
    )
    parts = [wire.length_delimited(_LOCALITY, locality)]
    endings: dict[tuple[int, bool], _Ending] = {}
    for backend in backends:
        key = (backend.port, backend.draining)
        ending = endings.get(key)
        if ending is None:
            ending = endings[key] = _Ending(backend.port, backend.draining, check)
        address = backend.address.encode()
        size = len(address)
        if 0 < size < 0x80 - ending.entry:
            # Every length fits one byte: the five nested headers are written at once.
            headers = (
                _LB_ENDPOINTS_TAG,
                size + ending.entry,
                _ENDPOINT_TAG,
                size + ending.endpoint,
                _ADDRESS_TAG,
                size + ending.address,
                _SOCKET_ADDRESS_TAG,
                size + ending.socket,
                _HOST_TAG,
                size,
            )
            parts.append(bytes(headers) + address + ending.tail)
        else:
            # An empty address is left out, as proto3 leaves out empty strings.
            host = wire.length_delimited(_ADDRESS, address) if address else b""
            socket = host + ending.port
            endpoint = (
                wire.length_delimited(
                    _ENDPOINT_ADDRESS, wire.length_delimited(_SOCKET_ADDRESS, socket)
                )
                + check
            )
            entry = wire.length_delimited(_ENDPOINT, endpoint) + ending.status
            parts.append(wire.length_delimited(_LB_ENDPOINTS, entry))
    return b"".join(parts)


class _Ending:
    """What follows the address in an `lb_endpoints` entry of a given port and health (its
    port, the health check, the status), and the sizes of the nested messages around the
    address, less the address's own length."""

    __slots__ = ("address", "endpoint", "entry", "port", "socket", "status", "tail")

    def __init__(self, port: int, draining: bool, check: bytes) -> None:
        # `port_value` is in a oneof: present, so serialized, even when 0.
        self.port = wire.varint(_SOCKET_PORT << 3) + wire.varint(port)
        self.status = _DRAINING if draining else _HEALTHY
        self.tail = self.port + check + self.status
        self.socket = 2 + len(self.port)  # the address's tag and length, then the port
        self.address = 2 + self.socket
        self.endpoint = 2 + self.address + len(check)
        self.entry = 2 + self.endpoint + len(self.status)


def _uint32(field_number: int, value: int) -> bytes:
    """A varint field; proto3 leaves 0 out."""
    return wire.varint(field_number << 3) + wire.varint(value) if value else b""


# Tags (field number, wire type 2) of the nested messages of an `lb_endpoints` entry.
_LB_ENDPOINTS_TAG = _LB_ENDPOINTS << 3 | 2
_ENDPOINT_TAG = _ENDPOINT << 3 | 2
_ADDRESS_TAG = _ENDPOINT_ADDRESS << 3 | 2
_SOCKET_ADDRESS_TAG = _SOCKET_ADDRESS << 3 | 2
_HOST_TAG = _ADDRESS << 3 | 2
_HEALTHY = _uint32(_HEALTH_STATUS, health_check_pb2.HEALTHY)
_DRAINING = _uint32(_HEALTH_STATUS, health_check_pb2.DRAINING)
