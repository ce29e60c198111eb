"""Where members stand under a policy: shares, explicit tiers, drain, pinning, node ports."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from states import AT_GATEWAY, EAST, FAR, WEST, fleet, policy, route, running, to

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import EndpointMode, Member, Node, RouteRule
from xdsfleet.model.node import NodeProfile
from xdsfleet.model.policy import (
    Failover,
    HealthCheck,
    HealthCheckType,
    MemberPolicy,
    Pin,
    PolicyTarget,
    TargetKind,
)
from xdsfleet.translate import translate


def localities(
    state: Any, cluster: str = "ns/web:80", profile: NodeProfile = AT_GATEWAY
) -> list[tuple[str, str, int, int]]:
    """(member, zone, priority, weight) per locality, in the order sent."""
    assignment = translate(state, profile)[typeurls.ENDPOINT][cluster]
    return [
        (e.locality.sub_zone, e.locality.zone, e.priority, e.load_balancing_weight.value)
        for e in assignment.endpoints
    ]


def three_members(*policies: Any) -> Any:
    return fleet(
        running(EAST, "10.0.0.1"),
        running(WEST, "10.1.0.1", "10.1.0.2", "10.1.0.3"),
        running(FAR, "10.2.0.1"),
        policies=policies,
    )


def test_by_default_a_locality_weighs_its_ready_endpoints() -> None:
    assert localities(three_members()) == [
        ("east", "z-east", 0, 1),
        ("west", "z-west", 0, 3),
        ("far", "z-far", 1, 1),
    ]


def test_member_weights_are_shares_whatever_the_replicas() -> None:
    shares = policy("p", members=(MemberPolicy("east", weight=80), MemberPolicy("west", weight=20)))
    assert localities(three_members(shares))[:2] == [
        ("east", "z-east", 0, 8000),
        ("west", "z-west", 0, 2000),
    ]


def test_a_member_without_a_share_takes_its_fleet_weight_as_share() -> None:
    shares = policy("p", members=(MemberPolicy("east", weight=3),))
    assert [w for *_, w in localities(three_members(shares))] == [300, 100, 100]


def test_a_share_is_split_over_the_member_zones_by_their_endpoints() -> None:
    east = running(EAST, "10.0.0.1", "10.0.0.2", "10.0.0.3")
    [endpoints] = east.endpoint_slices
    zoned = (replace(endpoints.endpoints[0], zone="z-east-b"), *endpoints.endpoints[1:])
    east = replace(east, endpoint_slices=(replace(endpoints, endpoints=zoned),))
    state = fleet(east, policies=(policy("p", members=(MemberPolicy("east", weight=6),)),))
    assert localities(state) == [("east", "z-east", 0, 400), ("east", "z-east-b", 0, 200)]


def test_a_drained_member_is_left_out_and_returns_as_it_was() -> None:
    before = translate(three_members(), AT_GATEWAY)[typeurls.ENDPOINT]["ns/web:80"]
    drained = three_members(policy("p", members=(MemberPolicy("east", drain=True),)))

    assert [m for m, *_ in localities(drained)] == ["west", "far"]
    assert translate(three_members(), AT_GATEWAY)[typeurls.ENDPOINT]["ns/web:80"] == before


def test_explicit_tiers_order_members_the_same_for_every_node() -> None:
    tiers = policy("p", failover=Failover(tiers=(("far",), ("east",))))
    state = three_members(tiers)
    far_away = NodeProfile(gateway="ns/gw", region="elsewhere")

    expected = [("far", "z-far", 0, 1), ("east", "z-east", 1, 1), ("west", "z-west", 2, 3)]
    assert localities(state) == expected
    assert localities(state, profile=far_away) == expected


def test_weights_inside_a_tier_and_tiers_at_once() -> None:
    shares = (MemberPolicy("east", weight=80), MemberPolicy("west", weight=20))
    tiers = Failover(tiers=(("east", "west"), ("far",)), overprovisioning_factor=120)
    state = three_members(policy("p", members=shares, failover=tiers))
    assignment = translate(state, AT_GATEWAY)[typeurls.ENDPOINT]["ns/web:80"]

    assert localities(state) == [
        ("east", "z-east", 0, 8000),
        ("west", "z-west", 0, 2000),
        ("far", "z-far", 1, 100),
    ]
    assert assignment.policy.overprovisioning_factor.value == 120


def canary(*members: str) -> Any:
    target = PolicyTarget(TargetKind.HTTP_ROUTE, "web", "canary")
    return policy("canary", target, pin=Pin(members))


def pinned_state(*policies: Any) -> Any:
    rules = (RouteRule((), (to(),), name="canary"), RouteRule((), (to(),)))
    return replace(three_members(*policies), http_routes=(route(*rules),))


def test_a_pinned_rule_gets_a_cluster_with_the_pinned_member_first_and_the_rest_behind() -> None:
    resources = translate(pinned_state(canary("far")), AT_GATEWAY)

    assert set(resources[typeurls.CLUSTER]) == {"ns/web:80", "ns/web:80@far"}
    assert localities(pinned_state(canary("far")), "ns/web:80@far") == [
        ("far", "z-far", 0, 1),
        ("east", "z-east", 1, 1),
        ("west", "z-west", 1, 3),
    ]


def test_a_subset_is_pinned_under_one_name_in_member_order() -> None:
    resources = translate(pinned_state(canary("west", "east")), AT_GATEWAY)
    assert "ns/web:80@east+west" in resources[typeurls.CLUSTER]
    assert resources[typeurls.ENDPOINT]["ns/web:80@east+west"].cluster_name == "ns/web:80@east+west"


def test_a_pin_to_members_not_in_the_fleet_is_no_pin() -> None:
    resources = translate(pinned_state(canary("mars")), AT_GATEWAY)
    assert set(resources[typeurls.CLUSTER]) == {"ns/web:80"}


def test_a_health_check_port_goes_on_every_endpoint() -> None:
    check = HealthCheck(HealthCheckType.TCP, port=9000)
    assignment = translate(three_members(policy("p", health_check=check)), AT_GATEWAY)
    for block in assignment[typeurls.ENDPOINT]["ns/web:80"].endpoints:
        for endpoint in block.lb_endpoints:
            assert endpoint.endpoint.health_check_config.port_value == 9000


IDC = Member("idc", "r3", "dc1", endpoint_mode=EndpointMode.NODE_PORT)
NODES = (
    Node("n1", ("192.168.0.1",), zone="dc1-a"),
    Node("n2", ("192.168.0.2",), ready=False),
    Node("n3", ("192.168.0.3", "10.9.9.9")),
)


def endpoints(state: Any) -> list[tuple[str, str, int, int]]:
    """(member, address, port, locality weight) per endpoint."""
    assignment = translate(state, AT_GATEWAY)[typeurls.ENDPOINT]["ns/web:80"]
    found = []
    for block in assignment.endpoints:
        for endpoint in block.lb_endpoints:
            address = endpoint.endpoint.address.socket_address
            weight = block.load_balancing_weight.value
            found.append((block.locality.sub_zone, address.address, address.port_value, weight))
    return found


def test_a_node_port_member_is_reached_at_its_ready_nodes_weighted_by_its_pods() -> None:
    idc = running(IDC, "10.5.0.1", "10.5.0.2", node_port=30080, nodes=NODES)
    assert endpoints(fleet(idc)) == [
        ("idc", "192.168.0.1", 30080, 2),
        ("idc", "192.168.0.3", 30080, 2),
    ]


def test_a_node_port_member_without_ready_pods_offers_nothing() -> None:
    idc = running(IDC, "10.5.0.1", node_port=30080, nodes=NODES, ready=False)
    assert endpoints(fleet(idc, running(EAST, "10.0.0.1"))) == [("east", "10.0.0.1", 8080, 1)]


def test_a_node_port_member_is_one_locality_in_its_zone() -> None:
    idc = running(IDC, "10.5.0.1", node_port=30080, nodes=NODES)
    assert [(m, z) for m, z, *_ in localities(fleet(idc))] == [("idc", "dc1")]


def test_locality_weights_are_scaled_down_to_what_envoy_accepts() -> None:
    pods = [f"10.0.{i // 250}.{i % 250}" for i in range(6000)]
    east = running(replace(EAST, weight=1_000_000), *pods[:4000])
    west = running(replace(WEST, weight=1_000_000), *pods[4000:])
    weights = [w for *_, w in localities(fleet(east, west))]
    assert sum(weights) <= 2**32 - 1
    assert round(weights[0] / weights[1], 3) == 2.0
