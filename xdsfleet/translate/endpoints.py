"""ClusterLoadAssignments: a service port's endpoints by locality, prioritised for one node.

Assignments are the hot path: they change with every endpoint event and are sent to every
client. Each is built once per (endpoints, priorities) and handed out as the same object, which
callers must never mutate; the cache then skips re-encoding it. Nodes in different places get
different priorities for the same localities, so each locality is built once and copied.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xdsfleet.translate.localities import LocalityView, compact, tier
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.proto import Message
from xdsfleet.translate.services import Backend, MemberPort, ServicePortBackends


@memoised
def assignment(port: ServicePortBackends, view: LocalityView) -> Message:
    """The assignment of the service port's cluster as a node at `view` sees it."""
    # Many views give the same tiers (every node in a far region, say): they share one object.
    tiers = tuple(tuple(tier(view, m.member, z.zone) for z in m.zones) for m in port.members)
    return _assignment(port, tiers)


@memoised
def _assignment(port: ServicePortBackends, tiers: tuple[tuple[int, ...], ...]) -> Message:
    blocks = []
    for member_port, member_tiers in zip(port.members, tiers, strict=True):
        for zone_index, zone_tier in enumerate(member_tiers):
            locality = _locality(member_port, zone_index)
            if locality is not None:
                blocks.append((zone_tier, locality))
    # Compact only the tiers still in use, or a dropped locality would leave a gap.
    priority = compact(zone_tier for zone_tier, _ in blocks)
    blocks.sort(
        key=lambda b: (b[0], b[1].locality.region, b[1].locality.zone, b[1].locality.sub_zone)
    )
    built = endpoint_pb2.ClusterLoadAssignment(cluster_name=port.key.cluster)
    for zone_tier, locality in blocks:
        block = built.endpoints.add()
        block.CopyFrom(locality)
        block.priority = priority[zone_tier]
    return built


@memoised
def _locality(member_port: MemberPort, zone_index: int) -> Message | None:
    """One locality with its weight but no priority: every view shares it, and copying it costs
    a fraction of building it again. None when its weight would be 0."""
    zone = member_port.zones[zone_index]
    healthy = sum(not backend.draining for backend in zone.backends)
    weight = healthy * member_port.member.weight
    # Envoy requires locality weights of at least 1. A member weighted 0 is drained on purpose;
    # a locality with only draining endpoints gets no new requests either way.
    if weight == 0:
        return None
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(
            region=member_port.member.region, zone=zone.zone, sub_zone=member_port.member.name
        ),
        lb_endpoints=[_lb_endpoint(backend) for backend in zone.backends],
        load_balancing_weight={"value": weight},
    )


def _lb_endpoint(backend: Backend) -> Message:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=backend.address, port_value=backend.port
                )
            )
        ),
        health_status=(health_check_pb2.DRAINING if backend.draining else health_check_pb2.HEALTHY),
    )
