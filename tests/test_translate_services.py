"""Which service ports the fleet exports, and which endpoints each member contributes."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import health_check_pb2

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
from xdsfleet.translate import translate

SIDECAR = NodeProfile(role=Role.SIDECAR)
WEB = Service("ns", "web", (ServicePort("http", 80),))


def web_slice(*addresses: str, name: str = "web-1", port_name: str = "http") -> EndpointSlice:
    return EndpointSlice(
        "ns",
        name,
        "web",
        (EndpointPort(port_name, 8080),),
        tuple(Endpoint((a,)) for a in addresses),
    )


def member_state(
    name: str,
    *slices: EndpointSlice,
    services: tuple[Service, ...] = (WEB,),
    exports: tuple[tuple[str, str], ...] = (("ns", "web"),),
) -> MemberState:
    return MemberState(
        Member(name, "r1", "z1"), services=services, endpoint_slices=slices, exports=exports
    )


def addresses(state: FleetState, cluster: str = "ns/web:80") -> list[tuple[str, int]]:
    assignment: Any = translate(state, SIDECAR)[typeurls.ENDPOINT][cluster]
    return [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for locality in assignment.endpoints
        for e in locality.lb_endpoints
    ]


def test_a_service_without_a_service_export_is_not_served() -> None:
    state = FleetState("f", (member_state("a", web_slice("10.0.0.1"), exports=()),))

    assert translate(state, SIDECAR)[typeurls.CLUSTER] == {}


def test_export_all_serves_every_service_without_a_service_export() -> None:
    state = FleetState(
        "f", (member_state("a", web_slice("10.0.0.1"), exports=()),), export_all=True
    )

    assert addresses(state) == [("10.0.0.1", 8080)]


def test_a_service_export_without_its_service_is_not_served() -> None:
    state = FleetState("f", (member_state("a", web_slice("10.0.0.1"), services=()),))

    assert translate(state, SIDECAR)[typeurls.CLUSTER] == {}


def test_only_members_that_export_the_service_contribute_endpoints() -> None:
    state = FleetState(
        "f",
        (
            member_state("a", web_slice("10.0.0.1")),
            member_state("b", web_slice("10.0.1.1"), exports=()),
        ),
    )

    assert addresses(state) == [("10.0.0.1", 8080)]


def test_the_service_ports_are_the_union_over_exporting_members() -> None:
    with_admin = Service("ns", "web", (ServicePort("http", 80), ServicePort("admin", 9090)))
    state = FleetState("f", (member_state("a"), member_state("b", services=(with_admin,))))

    assert set(translate(state, SIDECAR)[typeurls.CLUSTER]) == {"ns/web:80", "ns/web:9090"}


def test_an_exported_service_without_endpoints_still_has_a_cluster_and_an_assignment() -> None:
    state = FleetState("f", (member_state("a"),))

    resources = translate(state, SIDECAR)

    assert set(resources[typeurls.CLUSTER]) == {"ns/web:80"}
    assert list(resources[typeurls.ENDPOINT]["ns/web:80"].endpoints) == []


def test_the_endpoint_port_is_the_slice_port_named_like_the_service_port() -> None:
    other = EndpointSlice(
        "ns",
        "web-2",
        "web",
        (EndpointPort("metrics", 9100), EndpointPort("http", 8081)),
        (Endpoint(("10.0.0.2",)),),
    )
    state = FleetState("f", (member_state("a", web_slice("10.0.0.1"), other),))

    assert addresses(state) == [("10.0.0.1", 8080), ("10.0.0.2", 8081)]


def test_a_slice_without_the_service_ports_name_contributes_nothing() -> None:
    state = FleetState("f", (member_state("a", web_slice("10.0.0.1", port_name="grpc")),))

    assert addresses(state) == []


def test_slices_of_another_service_contribute_nothing() -> None:
    api = EndpointSlice(
        "ns", "api-1", "api", (EndpointPort("http", 8080),), (Endpoint(("10.0.9.9",)),)
    )
    state = FleetState("f", (member_state("a", web_slice("10.0.0.1"), api),))

    assert addresses(state) == [("10.0.0.1", 8080)]


def test_fqdn_slices_are_ignored() -> None:
    fqdn = EndpointSlice(
        "ns",
        "web-fqdn",
        "web",
        (EndpointPort("http", 8080),),
        (Endpoint(("web.example.com",)),),
        address_type="FQDN",
    )
    state = FleetState("f", (member_state("a", fqdn),))

    assert addresses(state) == []


def test_only_the_first_address_of_an_endpoint_is_used() -> None:
    two = EndpointSlice(
        "ns", "web-1", "web", (EndpointPort("http", 8080),), (Endpoint(("10.0.0.1", "10.0.0.9")),)
    )
    state = FleetState("f", (member_state("a", two),))

    assert addresses(state) == [("10.0.0.1", 8080)]


def test_an_endpoint_listed_in_two_slices_is_served_once_and_ready_wins() -> None:
    terminating = EndpointSlice(
        "ns",
        "web-old",
        "web",
        (EndpointPort("http", 8080),),
        (Endpoint(("10.0.0.1",), ready=False, terminating=True),),
    )
    state = FleetState("f", (member_state("a", terminating, web_slice("10.0.0.1")),))

    assignment: Any = translate(state, SIDECAR)[typeurls.ENDPOINT]["ns/web:80"]

    [locality] = assignment.endpoints
    [endpoint] = locality.lb_endpoints
    assert endpoint.health_status == health_check_pb2.HEALTHY
