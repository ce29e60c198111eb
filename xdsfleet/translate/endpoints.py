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
from xdsfleet.translate.localities import LocalityView, compact
from xdsfleet.translate.memo import memoised
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
    # Many views give the same tiers (every node in a far region, say): they share one object.
    tiers = tuple(
        tuple(member_tier(view, placement, m.member, z.zone) for z in m.zones) for m in port.members
    )
    return _assignment(port, tiers, placement)


@memoised
def _assignment(
    port: ServicePortBackends, tiers: tuple[tuple[int, ...], ...], placement: Placement
) -> Message:
    weights = locality_weights(port, placement)
    blocks = []
    for member_port, member_tiers, member_weights in zip(port.members, tiers, weights, strict=True):
        member = member_port.member
        for zone_index, (zone_tier, weight) in enumerate(
            zip(member_tiers, member_weights, strict=True)
        ):
            # Envoy requires locality weights of at least 1: a drained member, a member
            # weighted 0 and a locality with only draining endpoints are left out.
            if weight:
                zone = member_port.zones[zone_index].zone
                data = _locality(member_port, zone_index, weight, placement.health_check_port)
                blocks.append((zone_tier, member.region, zone, member.name, data))
    # Compact only the tiers still in use, or a dropped locality would leave a gap.
    priority = compact(block[0] for block in blocks)
    blocks.sort(key=lambda b: b[:4])
    # Joined as deterministic serialization lays the message out: fields in number order, the
    # repeated `endpoints` one framed block after another, and each block's `priority` (field 5)
    # after its locality, endpoints and weight (fields 1-3). Proto3 leaves a 0 priority out.
    parts = [wire.text(_CLUSTER_NAME, assignment_name(port, placement))]
    for zone_tier, *_, data in blocks:
        tier = priority[zone_tier]
        parts.append(wire.length_delimited(_ENDPOINTS, data + _priority(tier) if tier else data))
    if placement.overprovisioning_factor is not None:
        policy = endpoint_pb2.ClusterLoadAssignment.Policy()
        policy.overprovisioning_factor.value = placement.overprovisioning_factor
        parts.append(wire.length_delimited(_POLICY, policy.SerializeToString(deterministic=True)))
    return Serialized(endpoint_pb2.ClusterLoadAssignment, b"".join(parts))


# Field numbers of envoy.config.endpoint.v3 (checked against the descriptors in the tests).
_CLUSTER_NAME = 1  # ClusterLoadAssignment.cluster_name
_ENDPOINTS = 2  # ClusterLoadAssignment.endpoints
_POLICY = 4  # ClusterLoadAssignment.policy
_PRIORITY = 5  # LocalityLbEndpoints.priority


@functools.cache
def _priority(tier: int) -> bytes:
    return wire.varint(_PRIORITY << 3) + wire.varint(tier)


@memoised
def _locality(
    member_port: MemberPort, zone_index: int, weight: int, health_check_port: int | None
) -> bytes:
    """One locality with its weight but no priority, serialized: every view shares it, and
    joining its bytes costs a fraction of building and encoding it again."""
    zone = member_port.zones[zone_index]
    block = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(
            region=member_port.member.region, zone=zone.zone, sub_zone=member_port.member.name
        ),
        lb_endpoints=[_lb_endpoint(backend, health_check_port) for backend in zone.backends],
        load_balancing_weight={"value": weight},
    )
    return bytes(block.SerializeToString(deterministic=True))


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
