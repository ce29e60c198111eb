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
from xdsfleet.translate.services import service_index, updated_index

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


def slice_of(
    service: str, address_type: str, *endpoints: Endpoint, ports: tuple[EndpointPort, ...] = ()
) -> EndpointSlice:
    return EndpointSlice(
        "ns",
        f"{service}-{address_type.lower()}",
        service,
        ports or (EndpointPort("http", 8080),),
        endpoints,
        address_type,
    )


def pod(
    address: str, name: str, *, ready: bool = True, serving: bool = True, terminating: bool = False
) -> Endpoint:
    return Endpoint(
        (address,), ready=ready, serving=serving, terminating=terminating, target=f"ns/{name}"
    )


def test_a_dual_stack_service_serves_its_first_family_and_counts_each_pod_once() -> None:
    dual = Service("ns", "web", (ServicePort("http", 80),), ip_families=("IPv6", "IPv4"))
    v4 = slice_of("web", "IPv4", pod("10.0.0.1", "a"), pod("10.0.0.2", "b"))
    v6 = slice_of("web", "IPv6", pod("fd00::1", "a"), pod("fd00::2", "b"))
    single = member_state("single", web_slice("10.1.0.1", "10.1.0.2"))
    state = FleetState("f", (member_state("dual", v4, v6, services=(dual,)), single))

    assert addresses(state) == [
        ("fd00::1", 8080),
        ("fd00::2", 8080),
        ("10.1.0.1", 8080),
        ("10.1.0.2", 8080),
    ]
    [entry] = service_index(state).values()
    assert [m.replicas for m in entry.members] == [2, 2]


def test_without_ip_families_ipv4_is_preferred() -> None:
    v4 = slice_of("web", "IPv4", pod("10.0.0.1", "a"))
    v6 = slice_of("web", "IPv6", pod("fd00::1", "a"))

    assert addresses(FleetState("f", (member_state("a", v6, v4),))) == [("10.0.0.1", 8080)]


def test_replicas_are_pods_not_addresses() -> None:
    # One pod behind two addresses (a rollover listing it twice under different IPs).
    state = FleetState(
        "f",
        (member_state("a", slice_of("web", "IPv4", pod("10.0.0.1", "a"), pod("10.0.0.2", "a"))),),
    )

    [entry] = service_index(state).values()
    assert entry.members[0].replicas == 1


DNS = Service(
    "ns",
    "dns",
    (ServicePort("dns", 53, protocol="UDP"), ServicePort("dns-tcp", 53, protocol="TCP")),
)
DNS_PORTS = (EndpointPort("dns", 53, protocol="UDP"), EndpointPort("dns-tcp", 53, protocol="TCP"))


def test_one_port_number_with_two_protocols_serves_the_tcp_port_only() -> None:
    dns = slice_of("dns", "IPv4", pod("10.0.0.9", "coredns"), ports=DNS_PORTS)
    state = FleetState("f", (member_state("a", dns, services=(DNS,), exports=(("ns", "dns"),)),))

    [(key, entry)] = service_index(state).items()
    assert (key.port, entry.port_name, len(entry.members)) == (53, "dns-tcp", 1)
    assert entry.members[0].replicas == 1
    assert addresses(state, "ns/dns:53") == [("10.0.0.9", 53)]


def test_a_udp_only_service_is_not_served() -> None:
    udp = Service("ns", "dns", (ServicePort("dns", 53, protocol="UDP"),))
    dns = slice_of("dns", "IPv4", pod("10.0.0.9", "coredns"), ports=DNS_PORTS[:1])
    state = FleetState("f", (member_state("a", dns, services=(udp,), exports=(("ns", "dns"),)),))

    assert service_index(state) == {}


def test_full_and_incremental_indexes_agree_on_a_port_with_two_protocols() -> None:
    before = FleetState("f", (member_state("a", services=(), exports=(("ns", "dns"),)),))
    dns = slice_of("dns", "IPv4", pod("10.0.0.9", "coredns"), ports=DNS_PORTS)
    after = FleetState("f", (member_state("a", dns, services=(DNS,), exports=(("ns", "dns"),)),))

    updated, _ = updated_index(service_index(before), after, {0: [("ns", "dns")]})

    assert updated == service_index(after)


def test_a_terminating_endpoint_is_draining_even_when_published_ready() -> None:
    # publishNotReadyAddresses: `ready` is forced true; `serving` and `terminating` tell.
    state = FleetState(
        "f",
        (
            member_state(
                "a",
                slice_of(
                    "web",
                    "IPv4",
                    pod("10.0.0.1", "a"),
                    pod("10.0.0.2", "b", ready=True, serving=True, terminating=True),
                    pod("10.0.0.3", "c", ready=True, serving=False, terminating=True),
                ),
            ),
        ),
    )

    [entry] = service_index(state).values()
    [zone] = entry.members[0].zones
    assert [(b.address, b.draining) for b in zone.backends] == [
        ("10.0.0.1", False),
        ("10.0.0.2", True),
    ]
    assert zone.replicas == 1


def test_the_fleets_address_family_wins_where_a_service_has_it() -> None:
    dual = Service("ns", "web", (ServicePort("http", 80),), ip_families=("IPv4", "IPv6"))
    v4 = slice_of("web", "IPv4", pod("10.0.0.1", "a"))
    v6 = slice_of("web", "IPv6", pod("fd00::1", "a"))
    single = member_state("single", web_slice("10.1.0.1"))  # IPv4 only: serves IPv4
    state = FleetState(
        "f", (member_state("dual", v4, v6, services=(dual,)), single), ip_family="IPv6"
    )

    assert addresses(state) == [("fd00::1", 8080), ("10.1.0.1", 8080)]
