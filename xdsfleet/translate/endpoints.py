"""ClusterLoadAssignments: a service port's endpoints by locality, prioritised for one node.

Assignments are the hot path: they change with every endpoint event and are sent to every
client. Each is built once per (endpoints, priorities) and handed out as the same object, which
callers must never mutate; the cache then skips re-encoding it. Nodes in different places get
different priorities for the same localities, so each locality is serialized once and an
assignment is joined from those bytes (protobuf's repeated fields concatenate on the wire): a
member lost rebuilds every assignment of every view by joining, not by building messages.
"""

from __future__ import annotations

import functools

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xdsfleet.cache import wire
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
        found = []
        for member_port, member_weights in zip(port.members, weights, strict=True):
            localities = _member_localities(member_port, placement.health_check_port)
            for (order, place, data), weight in zip(localities, member_weights, strict=True):
                if weight:
                    found.append((order, place, data, _weight(weight)))
        found.sort(key=lambda f: f[0])
        self.places = tuple(f[1] for f in found)
        self.blocks = tuple(f[2] for f in found)
        self.weights = tuple(f[3] for f in found)
        self.sizes = tuple(len(f[2]) + len(f[3]) for f in found)
        self.heads = tuple(_head(size) for size in self.sizes)  # framing without a priority
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
_WEIGHT = 3  # LocalityLbEndpoints.load_balancing_weight
_PRIORITY = 5  # LocalityLbEndpoints.priority
_VALUE = 1  # google.protobuf.UInt32Value.value


@functools.cache
def _priority(tier: int) -> bytes:
    return wire.varint(_PRIORITY << 3) + wire.varint(tier)


@functools.lru_cache(maxsize=4096)
def _head(size: int) -> bytes:
    """The tag and length of an `endpoints` block of `size` bytes."""
    return wire.varint(_ENDPOINTS << 3 | 2) + wire.varint(size)


@memoised_by_identity
def _member_localities(
    member_port: MemberPort, health_check_port: int | None
) -> tuple[tuple[tuple[str, str, str], Place, bytes], ...]:
    """Per zone of the member, in zone order: its sort key in a layout (region, zone, member),
    its place, and its locality serialized without weight nor priority (fields 1-2): every
    view and every weight shares it, and joining its bytes costs a fraction of building and
    encoding it again."""
    member = member_port.member
    found = []
    for zone in member_port.zones:
        block = endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region=member.region, zone=zone.zone, sub_zone=member.name),
            lb_endpoints=[_lb_endpoint(backend, health_check_port) for backend in zone.backends],
        )
        data = bytes(block.SerializeToString(deterministic=True))
        place = Place(member.name, member.region, member.zone, zone.zone)
        found.append(((member.region, zone.zone, member.name), place, data))
    return tuple(found)


@functools.lru_cache(maxsize=4096)
def _weight(weight: int) -> bytes:
    """A locality's `load_balancing_weight` (field 3, a UInt32Value), serialized."""
    return wire.length_delimited(_WEIGHT, wire.varint(_VALUE << 3) + wire.varint(weight))


def _lb_endpoint(backend: Backend, health_check_port: int | None) -> Message:
    endpoint = endpoint_components_pb2.Endpoint(
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=backend.address, port_value=backend.port
            )
        )
    )
    if health_check_port is not None:
        endpoint.health_check_config.port_value = health_check_port
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint,
        health_status=(health_check_pb2.DRAINING if backend.draining else health_check_pb2.HEALTHY),
    )
