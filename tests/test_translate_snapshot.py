"""Which resources each role gets, and the listeners that lead to them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from states import serving

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import (
    AllowedRoutes,
    BackendRef,
    FleetState,
    Gateway,
    GatewayListener,
    HTTPRoute,
    Member,
    ParentRef,
    RouteMatch,
    RouteNamespaces,
    RouteRule,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate

WEB = Service("shop", "web", (ServicePort("http", 80), ServicePort("admin", 9090)))
CART = Service("shop", "cart", (ServicePort("grpc", 50051, app_protocol="grpc"),))
EAST = Member("east", "r-east", "z-east")
WEST = Member("west", "r-west", "z-west")
# The routes live in other namespaces than the Gateway.
ANY_NAMESPACE = AllowedRoutes(RouteNamespaces.ALL)
GATEWAY = Gateway(
    "infra",
    "edge",
    "xdsfleet",
    (
        GatewayListener("http", 8080, allowed_routes=ANY_NAMESPACE),
        GatewayListener("tls", 8443, "HTTPS", "shop.example.com", allowed_routes=ANY_NAMESPACE),
    ),
)
ROUTE = HTTPRoute(
    "shop",
    "web",
    (ParentRef("infra", "edge"),),
    (),
    (RouteRule((RouteMatch(),), (BackendRef("web", "shop", 80),)),),
)
STATE = FleetState(
    "f", (serving(EAST, WEB, CART), serving(WEST, WEB)), gateways=(GATEWAY,), http_routes=(ROUTE,)
)
ALL_CLUSTERS = {"shop/cart:50051", "shop/web:80", "shop/web:9090"}


def unpack_manager(packed: Any) -> Any:
    manager = hcm_pb2.HttpConnectionManager()
    assert packed.Unpack(manager)
    return manager


def test_every_type_is_present_even_when_empty() -> None:
    resources = translate(replace(STATE, gateways=()), NodeProfile(role=Role.GATEWAY))

    assert list(resources) == list(typeurls.ORDER)
    assert all(named == {} for named in resources.values())


def test_a_gateway_profile_naming_no_gateway_gets_the_only_one_of_the_fleet() -> None:
    unnamed = NodeProfile(role=Role.GATEWAY)

    assert set(translate(STATE, unnamed)[typeurls.LISTENER]) == {"infra/edge:8080"}
    two = replace(STATE, gateways=(GATEWAY, replace(GATEWAY, name="other")))
    assert all(named == {} for named in translate(two, unnamed).values())


def test_a_gateway_profile_naming_an_unknown_gateway_gets_nothing() -> None:
    resources = translate(STATE, NodeProfile(role=Role.GATEWAY, gateway="infra/nope"))

    assert all(named == {} for named in resources.values())


def test_a_gateway_gets_a_listener_and_routes_per_http_listener_only() -> None:
    resources = translate(STATE, NodeProfile(role=Role.GATEWAY, gateway="infra/edge"))

    assert set(resources[typeurls.LISTENER]) == {"infra/edge:8080"}
    assert set(resources[typeurls.ROUTE]) == {"infra/edge:8080"}


def test_a_gateway_listener_listens_on_all_addresses_and_fetches_its_routes_over_ads() -> None:
    resources = translate(STATE, NodeProfile(role=Role.GATEWAY, gateway="infra/edge"))
    listener = resources[typeurls.LISTENER]["infra/edge:8080"]

    assert listener.name == "infra/edge:8080"
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("0.0.0.0", 8080)
    [chain] = listener.filter_chains
    [connection_manager] = chain.filters
    assert connection_manager.name == "envoy.filters.network.http_connection_manager"
    manager = unpack_manager(connection_manager.typed_config)
    assert manager.stat_prefix == "infra_edge_8080"
    assert manager.rds.route_config_name == "infra/edge:8080"
    assert manager.rds.config_source.HasField("ads")
    assert manager.rds.config_source.resource_api_version == config_source_pb2.V3
    # The Host goes to backends as sent; the route table ignores its port when matching.
    assert not manager.strip_any_host_port
    assert resources[typeurls.ROUTE]["infra/edge:8080"].ignore_port_in_host_matching
    assert [u.upgrade_type for u in manager.upgrade_configs] == ["websocket"]
    [router] = manager.http_filters
    assert router.name == "envoy.filters.http.router"
    assert router.typed_config.Is(router_pb2.Router.DESCRIPTOR)


def test_a_gateway_gets_only_the_clusters_its_routes_send_to() -> None:
    resources = translate(STATE, NodeProfile(role=Role.GATEWAY, gateway="infra/edge"))

    assert set(resources[typeurls.CLUSTER]) == {"shop/web:80"}
    assert set(resources[typeurls.ENDPOINT]) == {"shop/web:80"}


def test_a_gateway_sees_endpoints_prioritised_from_its_own_place() -> None:
    west_gateway = NodeProfile(role=Role.GATEWAY, gateway="infra/edge", region="r-west")

    assignment = translate(STATE, west_gateway)[typeurls.ENDPOINT]["shop/web:80"]

    assert [(e.locality.sub_zone, e.priority) for e in assignment.endpoints] == [
        ("west", 0),
        ("east", 1),
    ]


def test_a_sidecar_gets_every_exported_service_port_and_an_outbound_listener_per_port() -> None:
    resources = translate(STATE, NodeProfile(role=Role.SIDECAR))

    assert set(resources[typeurls.CLUSTER]) == ALL_CLUSTERS
    assert set(resources[typeurls.ENDPOINT]) == ALL_CLUSTERS
    ports = {int(name.split(":")[-1]) for name in ALL_CLUSTERS}
    assert set(resources[typeurls.LISTENER]) == {f"outbound:{port}" for port in ports}
    assert set(resources[typeurls.ROUTE]) == set(resources[typeurls.LISTENER])


def test_a_proxyless_client_gets_every_cluster_and_a_listener_per_service_port() -> None:
    resources = translate(STATE, NodeProfile(role=Role.PROXYLESS))

    assert set(resources[typeurls.CLUSTER]) == ALL_CLUSTERS
    assert set(resources[typeurls.ENDPOINT]) == ALL_CLUSTERS
    assert set(resources[typeurls.LISTENER]) == {"cart.shop:50051", "web.shop:80", "web.shop:9090"}
    assert resources[typeurls.ROUTE] == {}


def test_a_proxyless_listener_routes_everything_to_its_cluster_inline() -> None:
    listener = translate(STATE, NodeProfile(role=Role.PROXYLESS))[typeurls.LISTENER][
        "cart.shop:50051"
    ]

    manager = unpack_manager(listener.api_listener.api_listener)
    [vhost] = manager.route_config.virtual_hosts
    assert list(vhost.domains) == ["*"]
    [route] = vhost.routes
    assert route.match.WhichOneof("path_specifier") == "prefix"
    assert route.match.prefix == ""
    assert route.route.cluster == "shop/cart:50051"
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    # What gRPC's client implements of the default retry: statuses, attempts; no per-try
    # timeout, hedging or host predicates (docs/failover.md).
    retry = route.route.retry_policy
    assert (retry.retry_on, retry.num_retries.value) == ("unavailable,cancelled", 2)
    assert not retry.HasField("per_try_timeout")
    assert not retry.retry_host_predicate
    assert not route.route.HasField("hedge_policy")


def test_the_order_of_services_in_a_member_does_not_change_the_output() -> None:
    reordered = FleetState("f", (serving(EAST, CART, WEB), serving(WEST, WEB)))
    profile = NodeProfile(role=Role.SIDECAR, region="r-east")

    assert translate(reordered, profile) == translate(STATE, profile)
