"""ClusterLoadAssignments: a service port's endpoints by locality, prioritised for one node.

Assignments are the hot path: they change with every endpoint event and are sent to every
client. Each is built once per (endpoints, priorities) and handed out as the same object, which
callers must never mutate; the cache then skips re-encoding it. Nodes in different places get
different priorities for the same localities, so each locality is built once and copied.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xdsfleet.translate.localities import LocalityView, compact
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.names import pinned_cluster_name
from xdsfleet.translate.placement import (
    DEFAULT_PLACEMENT,
    Placement,
    locality_weights,
    member_tier,
)
from xdsfleet.translate.proto import Message
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
        for zone_index, (zone_tier, weight) in enumerate(
            zip(member_tiers, member_weights, strict=True)
        ):
            # Envoy requires locality weights of at least 1: a drained member, a member
            # weighted 0 and a locality with only draining endpoints are left out.
            if weight:
                locality = _locality(member_port, zone_index, weight, placement.health_check_port)
                blocks.append((zone_tier, locality))
    # Compact only the tiers still in use, or a dropped locality would leave a gap.
    priority = compact(zone_tier for zone_tier, _ in blocks)
    blocks.sort(
        key=lambda b: (b[0], b[1].locality.region, b[1].locality.zone, b[1].locality.sub_zone)
    )
    built = endpoint_pb2.ClusterLoadAssignment(cluster_name=assignment_name(port, placement))
    if placement.overprovisioning_factor is not None:
        built.policy.overprovisioning_factor.value = placement.overprovisioning_factor
    for zone_tier, locality in blocks:
        block = built.endpoints.add()
        block.CopyFrom(locality)
        block.priority = priority[zone_tier]
    return built


@memoised
def _locality(
    member_port: MemberPort, zone_index: int, weight: int, health_check_port: int | None
) -> Message:
    """One locality with its weight but no priority: every view shares it, and copying it costs
    a fraction of building it again."""
    zone = member_port.zones[zone_index]
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(
            region=member_port.member.region, zone=zone.zone, sub_zone=member_port.member.name
        ),
        lb_endpoints=[_lb_endpoint(backend, health_check_port) for backend in zone.backends],
        load_balancing_weight={"value": weight},
    )


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
