"""Endpoint assignments: localities, weights, health and priorities as a node sees them."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Member,
    MemberState,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import endpoints, services, translate


def running(member: Member, *endpoints: Endpoint) -> MemberState:
    return MemberState(
        member,
        services=(Service("ns", "web", (ServicePort("http", 80),)),),
        endpoint_slices=(
            EndpointSlice("ns", "web-1", "web", (EndpointPort("http", 8080),), endpoints),
        ),
        exports=(("ns", "web"),),
    )


def ready(address: str, zone: str | None = None) -> Endpoint:
    return Endpoint((address,), zone=zone)


def assignment(profile: NodeProfile, *members: MemberState) -> Any:
    return translate(FleetState("f", members), profile)[typeurls.ENDPOINT]["ns/web:80"]


def localities(profile: NodeProfile, *members: MemberState) -> list[tuple[str, int, int]]:
    """(sub_zone/zone, priority, weight) per locality, in the order sent."""
    return [
        (f"{e.locality.sub_zone}/{e.locality.zone}", e.priority, e.load_balancing_weight.value)
        for e in assignment(profile, *members).endpoints
    ]


SIDECAR = NodeProfile(role=Role.SIDECAR)
EAST_A = Member("east-a", "east", "east-1a")
EAST_B = Member("east-b", "east", "east-1b")
WEST = Member("west", "west", "west-1a")
FLEET = (
    running(EAST_A, ready("10.0.0.1")),
    running(EAST_B, ready("10.0.1.1")),
    running(WEST, ready("10.1.0.1")),
)


def test_the_assignment_is_named_after_its_cluster() -> None:
    assert assignment(SIDECAR, *FLEET).cluster_name == "ns/web:80"


def test_a_locality_is_member_region_endpoint_zone_and_member_name() -> None:
    [locality] = assignment(SIDECAR, running(EAST_A, ready("10.0.0.1", zone="east-1c"))).endpoints

    assert (locality.locality.region, locality.locality.zone, locality.locality.sub_zone) == (
        "east",
        "east-1c",
        "east-a",
    )


def test_an_endpoint_without_a_zone_is_in_its_members_zone() -> None:
    [locality] = assignment(SIDECAR, running(EAST_A, ready("10.0.0.1"))).endpoints

    assert locality.locality.zone == "east-1a"


def test_one_member_spread_over_zones_has_one_locality_per_zone() -> None:
    member = running(EAST_A, ready("10.0.0.1", zone="east-1a"), ready("10.0.0.2", zone="east-1c"))

    assert localities(SIDECAR, member) == [("east-a/east-1a", 0, 1), ("east-a/east-1c", 0, 1)]


def test_the_locality_weight_is_healthy_endpoints_times_member_weight() -> None:
    heavy = Member("east-a", "east", "east-1a", weight=3)

    assert localities(SIDECAR, running(heavy, ready("10.0.0.1"), ready("10.0.0.2"))) == [
        ("east-a/east-1a", 0, 6)
    ]


def test_serving_terminating_endpoints_drain_and_do_not_add_weight() -> None:
    member = running(
        EAST_A, ready("10.0.0.1"), Endpoint(("10.0.0.2",), ready=False, terminating=True)
    )

    [locality] = assignment(SIDECAR, member).endpoints

    assert [
        (e.endpoint.address.socket_address.address, e.health_status) for e in locality.lb_endpoints
    ] == [
        ("10.0.0.1", health_check_pb2.HEALTHY),
        ("10.0.0.2", health_check_pb2.DRAINING),
    ]
    assert locality.load_balancing_weight.value == 1


def test_endpoints_that_are_not_ready_nor_draining_are_left_out() -> None:
    member = running(
        EAST_A,
        ready("10.0.0.1"),
        Endpoint(("10.0.0.2",), ready=False, serving=False),
        Endpoint(("10.0.0.3",), ready=False, serving=False, terminating=True),
        Endpoint(("10.0.0.4",), ready=False, serving=True, terminating=False),
    )

    [locality] = assignment(SIDECAR, member).endpoints

    assert [e.endpoint.address.socket_address.address for e in locality.lb_endpoints] == [
        "10.0.0.1"
    ]


def test_a_member_weighted_zero_gets_no_locality() -> None:
    drained = Member("west", "west", "west-1a", weight=0)

    assert localities(
        SIDECAR, running(EAST_A, ready("10.0.0.1")), running(drained, ready("10.1.0.1"))
    ) == [("east-a/east-1a", 0, 1)]


def test_a_locality_with_only_draining_endpoints_is_left_out() -> None:
    member = running(
        EAST_A,
        ready("10.0.0.1"),
        Endpoint(("10.0.0.2",), ready=False, terminating=True, zone="east-1b"),
    )

    assert localities(SIDECAR, member) == [("east-a/east-1a", 0, 1)]


def test_a_member_whose_every_endpoint_terminates_serves_those_still_serving() -> None:
    # KEP-1669: a one-replica service during a node drain answers rather than 503.
    member = running(
        EAST_A,
        Endpoint(("10.0.0.2",), ready=False, serving=True, terminating=True),
        Endpoint(("10.0.0.3",), ready=False, serving=False, terminating=True),
    )

    [locality] = assignment(SIDECAR, member).endpoints

    assert [e.endpoint.address.socket_address.address for e in locality.lb_endpoints] == [
        "10.0.0.2"
    ]
    assert locality.lb_endpoints[0].health_status == health_check_pb2.HEALTHY


def test_a_node_prefers_its_zone_then_its_region_then_elsewhere() -> None:
    node = NodeProfile(role=Role.SIDECAR, region="east", zone="east-1a")

    assert localities(node, *FLEET) == [
        ("east-a/east-1a", 0, 1),
        ("east-b/east-1b", 1, 1),
        ("west/west-1a", 2, 1),
    ]


def test_a_node_ranks_its_own_member_first_whatever_the_zone() -> None:
    node = NodeProfile(role=Role.SIDECAR, member="west", region="east", zone="east-1b")

    assert localities(node, *FLEET) == [
        ("east-b/east-1b", 0, 1),
        ("west/west-1a", 0, 1),
        ("east-a/east-1a", 1, 1),
    ]


def test_in_its_own_regional_member_a_node_prefers_endpoints_of_its_zone() -> None:
    regional = Member("eu", "eu-west", "eu-west")  # a regional cluster: zones come from slices
    member = running(regional, ready("10.0.0.1", "eu-west-1a"), ready("10.0.0.2", "eu-west-1b"))
    node = NodeProfile(role=Role.SIDECAR, member="eu", region="eu-west", zone="eu-west-1b")

    assert localities(node, member) == [("eu/eu-west-1b", 0, 1), ("eu/eu-west-1a", 1, 1)]


def test_a_zone_of_the_same_name_in_another_region_is_not_the_nodes_zone() -> None:
    node = NodeProfile(role=Role.SIDECAR, region="east", zone="z1")
    here, there = Member("here", "east", "z1"), Member("there", "west", "z1")

    assert localities(
        node, running(here, ready("10.0.0.1")), running(there, ready("10.1.0.1"))
    ) == [
        ("here/z1", 0, 1),
        ("there/z1", 1, 1),
    ]


def test_unused_tiers_are_compacted_into_contiguous_priorities() -> None:
    node = NodeProfile(role=Role.SIDECAR, region="east", zone="east-1z")

    assert localities(node, *FLEET) == [
        ("east-a/east-1a", 0, 1),
        ("east-b/east-1b", 0, 1),
        ("west/west-1a", 1, 1),
    ]


def test_a_dropped_locality_leaves_no_priority_gap() -> None:
    node = NodeProfile(role=Role.SIDECAR, region="east", zone="east-1a")
    drained = Member("east-a", "east", "east-1a", weight=0)

    assert localities(node, running(drained, ready("10.0.0.1")), *FLEET[1:]) == [
        ("east-b/east-1b", 0, 1),
        ("west/west-1a", 1, 1),
    ]


def test_a_node_that_says_nothing_of_its_place_sees_one_priority() -> None:
    assert localities(SIDECAR, *FLEET) == [
        ("east-a/east-1a", 0, 1),
        ("east-b/east-1b", 0, 1),
        ("west/west-1a", 0, 1),
    ]


def test_localities_and_endpoints_are_sorted_whatever_the_input_order() -> None:
    member = running(EAST_A, ready("10.0.0.9"), ready("10.0.0.10"), ready("10.0.0.1"))

    [locality] = assignment(SIDECAR, member).endpoints

    assert [e.endpoint.address.socket_address.address for e in locality.lb_endpoints] == [
        "10.0.0.1",
        "10.0.0.10",
        "10.0.0.9",
    ]


def test_the_field_numbers_joined_are_those_of_the_descriptors() -> None:
    cla = endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR.fields_by_name
    block = endpoint_components_pb2.LocalityLbEndpoints.DESCRIPTOR.fields_by_name
    assert (cla["cluster_name"].number, cla["endpoints"].number, cla["policy"].number) == (
        endpoints._CLUSTER_NAME,
        endpoints._ENDPOINTS,
        endpoints._POLICY,
    )
    assert (block["load_balancing_weight"].number, block["priority"].number) == (
        endpoints._WEIGHT,
        endpoints._PRIORITY,
    )
    assert wrappers_pb2.UInt32Value.DESCRIPTOR.fields_by_name["value"].number == endpoints._VALUE
    # Joining a block's priority after its bytes keeps field order only while it is the last
    # field set: the fields after it (proximity, metadata, LEDS) are never set.
    assert [f.number for f in block.values() if f.number > endpoints._PRIORITY] == [9, 7, 8, 6]


def joined_bytes_are_deterministic(profile: NodeProfile, *members: MemberState) -> None:
    data = assignment(profile, *members).SerializeToString(deterministic=True)
    parsed = endpoint_pb2.ClusterLoadAssignment.FromString(data)
    assert parsed.SerializeToString(deterministic=True) == data


def test_a_joined_assignment_is_what_serializing_the_message_gives() -> None:
    east_node = NodeProfile(role=Role.SIDECAR, region="east", zone="east-1a")
    spread = running(EAST_A, ready("10.0.0.1", "east-1a"), ready("10.0.0.2", "east-1c"))
    for profile in (SIDECAR, east_node):
        joined_bytes_are_deterministic(profile, *FLEET)
        joined_bytes_are_deterministic(profile, spread, *FLEET[1:])
    # Priorities 0, 1 and 2 all present: the blocks with a priority carry field 5.
    assert [e.priority for e in assignment(east_node, *FLEET).endpoints] == [0, 1, 2]


_zones = st.sampled_from(("east-1a", "east-1b", "west-1a", None))
_members = st.sampled_from((EAST_A, EAST_B, WEST, Member("heavy", "east", "east-1a", weight=7)))
_endpoint = st.builds(
    Endpoint,
    st.tuples(st.sampled_from(("10.0.0.1", "10.0.0.2", "10.1.0.1", "fd00::1"))),
    ready=st.booleans(),
    serving=st.booleans(),
    terminating=st.booleans(),
    zone=_zones,
)
_views = st.builds(
    NodeProfile,
    role=st.just(Role.SIDECAR),
    member=st.sampled_from((None, "east-a", "west")),
    region=st.sampled_from(("", "east", "west")),
    zone=st.sampled_from(("", "east-1a", "west-1a")),
)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(_members, st.lists(_endpoint, max_size=4), min_size=1, max_size=4),
    st.lists(_views, min_size=1, max_size=3),
)
def test_joined_assignments_are_deterministic_serializations_wherever_the_node_stands(
    fleet: dict[Member, list[Endpoint]], views: list[NodeProfile]
) -> None:
    # Localities are serialized once per member and joined per view with their weight and
    # priority: whatever the tiers, weights and zones, the bytes must be those of serializing
    # the message they parse to, with contiguous priorities in the order sent.
    members = [running(member, *endpoints) for member, endpoints in fleet.items()]
    for profile in views:
        joined_bytes_are_deterministic(profile, *members)
        sent = [e.priority for e in assignment(profile, *members).endpoints]
        assert sent == sorted(sent)
        assert sorted(set(sent)) == list(range(len(set(sent))))


def reference_locality(
    member: Member, zone: services.ZoneBackends, weight: int, health_check_port: int | None
) -> bytes:
    """A locality built as protobuf messages and serialized: what the hand-serialized blocks
    must equal, byte for byte."""
    lb_endpoints = []
    for backend in zone.backends:
        endpoint = endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=backend.address, port_value=backend.port
                )
            )
        )
        if health_check_port is not None:
            endpoint.health_check_config.port_value = health_check_port
        status = health_check_pb2.DRAINING if backend.draining else health_check_pb2.HEALTHY
        lb_endpoints.append(
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint, health_status=status)
        )
    block = endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region=member.region, zone=zone.zone, sub_zone=member.name),
        lb_endpoints=lb_endpoints,
        load_balancing_weight={"value": weight},
    )
    return bytes(block.SerializeToString(deterministic=True))


_text = st.text(max_size=140)  # lengths past 127 take a two-byte varint
_backends = st.builds(
    services.Backend,
    st.one_of(st.sampled_from(("10.0.0.1", "fd00::1", "")), _text),
    st.integers(0, 65535),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    st.builds(Member, _text, _text, _text),
    st.builds(services.ZoneBackends, _text, st.lists(_backends, max_size=5).map(tuple)),
    st.integers(1, 2**32 - 1),
    st.one_of(st.none(), st.integers(0, 65535)),
)
def test_a_hand_serialized_locality_is_what_protobuf_serializes(
    member: Member, zone: services.ZoneBackends, weight: int, health_check_port: int | None
) -> None:
    member_port = services.MemberPort(member, http2=False, zones=(zone,))

    _, [data] = endpoints._member_localities(member_port, health_check_port)

    expected = reference_locality(member, zone, weight, health_check_port)
    assert data + endpoints._weight(weight) == expected
