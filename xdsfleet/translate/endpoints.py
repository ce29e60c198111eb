"""ClusterLoadAssignments: a service port's endpoints by locality, prioritised for one node.

Assignments are the hot path: they change with every endpoint event and are sent to every
client. Each is built once per (endpoints, priorities) and handed out as the same object, which
callers must never mutate; the cache then skips re-encoding it.
"""

from __future__ import annotations

from functools import lru_cache

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from xdsfleet.translate.localities import LocalityView, compact, tier
from xdsfleet.translate.proto import Message
from xdsfleet.translate.services import Backend, MemberPort, ZoneBackends


@lru_cache(maxsize=65536)
def assignment(cluster: str, members: tuple[MemberPort, ...], view: LocalityView) -> Message:
    """The assignment of `cluster` as a node at `view` sees it."""
    # Many views give the same tiers (every node in a far region, say): they share one object.
    tiers = tuple(tuple(tier(view, m.member, z.zone) for z in m.zones) for m in members)
    return _assignment(cluster, members, tiers)


@lru_cache(maxsize=65536)
def _assignment(
    cluster: str, members: tuple[MemberPort, ...], tiers: tuple[tuple[int, ...], ...]
) -> Message:
    blocks = []
    for member_port, member_tiers in zip(members, tiers, strict=True):
        for zone, zone_tier in zip(member_port.zones, member_tiers, strict=True):
            healthy = sum(not backend.draining for backend in zone.backends)
            weight = healthy * member_port.member.weight
            # Envoy requires locality weights of at least 1. A member weighted 0 is drained on
            # purpose; a locality with only draining endpoints gets no new requests either way.
            if weight > 0:
                blocks.append((zone_tier, member_port, zone, weight))
    # Compact only the tiers still in use, or a dropped locality would leave a gap.
    priority = compact(block[0] for block in blocks)
    blocks.sort(key=lambda b: (b[0], b[1].member.region, b[2].zone, b[1].member.name))
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[
            _locality_endpoints(priority[zone_tier], member_port, zone, weight)
            for zone_tier, member_port, zone, weight in blocks
        ],
    )


def _locality_endpoints(
    priority: int, member_port: MemberPort, zone: ZoneBackends, weight: int
) -> Message:
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(
            region=member_port.member.region, zone=zone.zone, sub_zone=member_port.member.name
        ),
        lb_endpoints=[_lb_endpoint(backend) for backend in zone.backends],
        load_balancing_weight={"value": weight},
        priority=priority,
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
