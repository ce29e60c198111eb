"""Everything `translate` produces must be a configuration the real Envoy accepts.

Envoy's `--mode validate` checks a bootstrap, not an xDS stream, so each profile's resources
are folded into a static bootstrap first: clusters become STATIC with their assignment inlined,
listeners carry their RouteConfiguration inline, SDS secrets become static secrets. What is
checked is exactly what we send.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from states import serving

from harness.local import envoy_binary
from xdsfleet.cache import typeurls
from xdsfleet.model.attachment import MCS_GROUP
from xdsfleet.model.fleet import (
    CORS,
    AllowedRoutes,
    BackendRef,
    Endpoint,
    FleetState,
    Gateway,
    GatewayListener,
    HeaderModifier,
    HTTPRoute,
    Member,
    ParentRef,
    PathMatch,
    PathMatchType,
    RequestRedirect,
    RouteFilters,
    RouteMatch,
    RouteNamespaces,
    RouteRule,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.sources.files import load_fleet
from xdsfleet.translate import Resources, translate
from xdsfleet.translate.listeners import HTTP_CONNECTION_MANAGER

EXAMPLE = Path(__file__).parent.parent / "examples" / "fleet.yaml"
FULL_EXAMPLE = Path(__file__).parent.parent / "examples" / "full" / "fleet.yaml"

pytestmark = pytest.mark.envoy

# Where proxyless listeners are mounted for validation; never bound in validate mode.
_FIRST_PORT = 20000


def static_bootstrap(resources: Resources) -> Any:
    """One profile's resources as a static bootstrap that Envoy can validate on its own."""
    bootstrap = bootstrap_pb2.Bootstrap()
    for name, cluster in resources[typeurls.CLUSTER].items():
        static = bootstrap.static_resources.clusters.add()
        static.CopyFrom(cluster)
        static.type = cluster_pb2.Cluster.STATIC
        static.ClearField("eds_cluster_config")
        # Through bytes: assignments are joined from serialized parts (translate.endpoints).
        assignment = resources[typeurls.ENDPOINT][name].SerializeToString(deterministic=True)
        static.load_assignment.ParseFromString(assignment)
    for port, listener in enumerate(resources[typeurls.LISTENER].values(), start=_FIRST_PORT):
        static = bootstrap.static_resources.listeners.add()
        static.CopyFrom(listener)
        if listener.HasField("api_listener"):
            # Envoy's server build has no API listener extension (that is Envoy Mobile's), so
            # mount the same connection manager on a socket to have Envoy check it.
            static.ClearField("api_listener")
            static.address.socket_address.address = "127.0.0.1"
            static.address.socket_address.port_value = port
            static.filter_chains.add().filters.add(
                name=HTTP_CONNECTION_MANAGER, typed_config=listener.api_listener.api_listener
            )
        for chain in static.filter_chains:
            for connection_manager in chain.filters:
                _inline_routes(connection_manager, resources[typeurls.ROUTE])
            if chain.HasField("transport_socket"):
                _static_secrets(chain.transport_socket)
    bootstrap.static_resources.secrets.extend(resources[typeurls.SECRET].values())
    return bootstrap


def _static_secrets(socket: Any) -> None:
    """Point a TLS or QUIC transport socket's SDS names at the bootstrap's static secrets."""
    for kind in (tls_pb2.DownstreamTlsContext, quic_transport_pb2.QuicDownstreamTransport):
        if socket.typed_config.Is(kind.DESCRIPTOR):
            config = kind()
            socket.typed_config.Unpack(config)
            context = (
                config if kind is tls_pb2.DownstreamTlsContext else config.downstream_tls_context
            )
            for secret in context.common_tls_context.tls_certificate_sds_secret_configs:
                secret.ClearField("sds_config")
            socket.typed_config.Pack(config, deterministic=True)


def _inline_routes(connection_manager: Any, routes: dict[str, Any]) -> None:
    manager = hcm_pb2.HttpConnectionManager()
    assert connection_manager.typed_config.Unpack(manager)
    if manager.HasField("rds"):
        manager.route_config.CopyFrom(routes[manager.rds.route_config_name])
        # As over RDS, where Envoy does not check that named clusters exist: a share of
        # requests is meant to go to a missing one (an invalid backendRef, answered 500).
        manager.route_config.validate_clusters.value = False
        connection_manager.typed_config.Pack(manager, deterministic=True)


WEB = Service("shop", "web", (ServicePort("http", 80), ServicePort("admin", 9090)))
CART = Service("shop", "cart", (ServicePort("grpc", 50051, app_protocol="grpc"),))
# Ready, ready in another zone, draining, and gone: every kind of endpoint the rules treat.
ENDPOINTS = (
    Endpoint(("10.0.0.1",)),
    Endpoint(("10.0.0.2",), zone="z-east-b"),
    Endpoint(("10.0.0.3",), ready=False, terminating=True),
    Endpoint(("10.0.0.4",), ready=False, serving=False),
)


MEMBERS = (
    serving(Member("east", "r-east", "z-east-a", weight=3), WEB, CART, endpoints=ENDPOINTS),
    serving(Member("idc", "r-idc", "z-idc", weight=0), WEB, CART, endpoints=ENDPOINTS),
    serving(Member("west", "r-west", "z-west"), WEB, endpoints=ENDPOINTS),
)


def _rule(path: str, *backends: BackendRef, exact: bool = False) -> RouteRule:
    kind = PathMatchType.EXACT if exact else PathMatchType.PATH_PREFIX
    return RouteRule((RouteMatch(PathMatch(kind, path)),), backends)


ANY_NAMESPACE = AllowedRoutes(RouteNamespaces.ALL)
GATEWAY = Gateway(
    "infra",
    "edge",
    "xdsfleet",
    (
        GatewayListener("http", 8080, allowed_routes=ANY_NAMESPACE),
        GatewayListener("shop", 8081, hostname="shop.example.com", allowed_routes=ANY_NAMESPACE),
        # Two HTTP listeners sharing a port, told apart by hostname.
        GatewayListener("shop2", 8081, hostname="*.shop.example", allowed_routes=ANY_NAMESPACE),
        GatewayListener("tls", 8443, protocol="HTTPS"),
    ),
)
EDITS = HeaderModifier(set=(("x-backend", "web"),))
ROUTES = (
    HTTPRoute(
        "shop",
        "web",
        (ParentRef("infra", "edge"),),
        ("*.example.com", "www.example.com"),
        (
            _rule("/", BackendRef("web", "shop", 80)),
            _rule("/healthz", BackendRef("web", "shop", 9090), exact=True),
            _rule(
                "/api/", BackendRef("web", "shop", 80, weight=9), BackendRef("cart", "shop", 50051)
            ),
            _rule("/gone", BackendRef("missing", "shop", 80)),
            _rule("/off", BackendRef("web", "shop", 80, weight=0)),
            # Partly invalid: an unknown kind's share is answered 500.
            _rule("/pod", BackendRef("web", "shop", 80), BackendRef("p", "shop", 80, kind="Pod")),
            _rule("/edited", BackendRef("web", "shop", 80, request_headers=EDITS)),
            RouteRule(
                (RouteMatch(PathMatch(value="/moved")),),
                (),
                filters=RouteFilters(redirect=RequestRedirect(status_code=308)),
            ),
            RouteRule(
                (RouteMatch(PathMatch(value="/cors")),),
                (BackendRef("web", "shop", 80),),
                filters=RouteFilters(cors=CORS(("https://*.example.com",), ("GET",))),
            ),
        ),
    ),
    HTTPRoute(
        "shop",
        "cart",
        (ParentRef("infra", "edge", "shop"),),
        (),
        (
            RouteRule(
                (), (BackendRef("cart", "shop", 50051, kind="ServiceImport", group=MCS_GROUP),)
            ),
        ),
    ),
)
STATE = FleetState("demo", MEMBERS, gateways=(GATEWAY,), http_routes=ROUTES)

PROFILES = {
    "gateway": NodeProfile(
        role=Role.GATEWAY, gateway="infra/edge", region="r-east", zone="z-east-a"
    ),
    "sidecar": NodeProfile(role=Role.SIDECAR, member="west", region="r-west", zone="z-west"),
    "proxyless": NodeProfile(role=Role.PROXYLESS),
}


def assert_envoy_accepts(resources: Resources, tmp_path: Path) -> None:
    assert resources[typeurls.CLUSTER], "nothing to validate: the fixture state lost its services"
    config = tmp_path / "bootstrap.pb"
    config.write_bytes(static_bootstrap(resources).SerializeToString())
    assert_envoy_validates(config)


def assert_envoy_validates(config: Path) -> None:
    """Envoy's own `--mode validate` takes the bootstrap `config`, with no deprecated field."""
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--concurrency", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "deprecated" not in result.stderr, result.stderr


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_envoy_accepts_everything_a_profile_gets(profile: NodeProfile, tmp_path: Path) -> None:
    assert_envoy_accepts(translate(STATE, profile), tmp_path)


EXAMPLE_PROFILES = {
    "gateway-anywhere": NodeProfile(role=Role.GATEWAY, gateway="default/demo"),
    "gateway-zone-a": NodeProfile(gateway="default/demo", region="eu-west", zone="eu-west-1a"),
    "sidecar-idc": NodeProfile(role=Role.SIDECAR, member="idc", region="on-prem", zone="dc1"),
    "proxyless": NodeProfile(role=Role.PROXYLESS, region="eu-west"),
}


@pytest.mark.parametrize("profile", EXAMPLE_PROFILES.values(), ids=EXAMPLE_PROFILES.keys())
def test_envoy_accepts_what_the_example_fleet_renders(profile: NodeProfile, tmp_path: Path) -> None:
    state = load_fleet(EXAMPLE).state
    assert_envoy_accepts(translate(state, profile), tmp_path)


FULL_PROFILES = {
    "gateway-zone-a": NodeProfile(gateway="default/edge", region="eu-west", zone="eu-west-1a"),
    "gateway-anywhere": NodeProfile(gateway="default/edge"),
    "sidecar-idc": NodeProfile(role=Role.SIDECAR, member="idc", region="on-prem", zone="dc1"),
    "proxyless": NodeProfile(role=Role.PROXYLESS, region="us-east"),
}


@pytest.mark.parametrize("profile", FULL_PROFILES.values(), ids=FULL_PROFILES.keys())
def test_envoy_accepts_everything_the_full_example_renders(
    profile: NodeProfile, tmp_path: Path
) -> None:
    assert_envoy_accepts(translate(load_fleet(FULL_EXAMPLE).state, profile), tmp_path)


def test_envoy_accepts_https_listeners_sharing_the_http3_port(tmp_path: Path) -> None:
    """Two SNI filter chains on the TCP listener and on its QUIC twin."""
    state = load_fleet(FULL_EXAMPLE).state
    [edge] = state.gateways
    [https] = [x for x in edge.listeners if x.protocol == "HTTPS"]
    other = replace(https, name="other", hostname="other.example.org")
    state = replace(state, gateways=(replace(edge, listeners=(*edge.listeners, other)),))
    resources = translate(state, FULL_PROFILES["gateway-zone-a"])

    twin = resources[typeurls.LISTENER][f"default/edge:{https.port}/h3"]
    assert len(twin.filter_chains) == 2
    assert_envoy_accepts(resources, tmp_path)


@pytest.mark.parametrize(
    "path", sorted((EXAMPLE.parent.parent / "envoy").glob("*.yaml")), ids=lambda p: p.name
)
def test_envoy_accepts_the_bootstraps_we_ship(path: Path) -> None:
    # They carry the ADS retry backoff (tools/bootstrap.py): Envoy must know every field.
    assert_envoy_validates(path)
