"""HTTPS and HTTP/3 gateway listeners with certificates over SDS, and sidecar outbound listeners."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from states import AT_GATEWAY, EAST, NS, WEST, fleet, policy, running

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import Gateway, GatewayListener, SecretRef, TLSSecret
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.model.policy import Http3, PolicyTarget, SidecarScope, TargetKind
from xdsfleet.translate import translate
from xdsfleet.translate.memo import Memo

HTTPS = GatewayListener("https", 8443, "HTTPS", certificate_refs=(SecretRef(NS, "tls"),))
SECURE = Gateway(NS, "gw", "xdsfleet", (GatewayListener("http", 8080), HTTPS))
LISTENER = "ns/gw:8443"
HTTP3 = policy("h3", PolicyTarget(TargetKind.GATEWAY, "gw", "https"), http3=Http3(early_data=False))


def secure(*policies: Any, certificate: str = "CERT", secrets: bool = True) -> Any:
    state = fleet(running(EAST, "10.0.0.1"), policies=policies)
    return replace(
        state,
        gateways=(SECURE,),
        secrets=(TLSSecret(NS, "tls", certificate, "KEY"),) if secrets else (),
    )


def unpack(packed: Any, kind: Any) -> Any:
    message = kind()
    assert packed.Unpack(message)
    return message


def test_an_https_listener_terminates_tls_with_its_certificate_over_sds() -> None:
    resources = translate(secure(), AT_GATEWAY)

    chain = resources[typeurls.LISTENER][LISTENER].filter_chains[0]
    context = unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    [sds] = context.common_tls_context.tls_certificate_sds_secret_configs
    assert sds.name == "ns/tls"
    assert sds.sds_config.HasField("ads")
    assert list(context.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]
    secret = resources[typeurls.SECRET]["ns/tls"]
    assert secret.tls_certificate.certificate_chain.inline_string == "CERT"


def test_an_https_listener_without_its_certificate_is_not_served() -> None:
    resources = translate(secure(secrets=False), AT_GATEWAY)
    assert set(resources[typeurls.LISTENER]) == {"ns/gw:8080"}
    assert resources[typeurls.SECRET] == {}


def test_rotating_a_certificate_changes_only_its_secret() -> None:
    with Memo().active():  # one translator, as a publisher is
        before = translate(secure(certificate="OLD"), AT_GATEWAY)
        after = translate(secure(certificate="NEW"), AT_GATEWAY)

    assert after[typeurls.SECRET]["ns/tls"] != before[typeurls.SECRET]["ns/tls"]
    for type_url in (typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE):
        assert all(after[type_url][n] is m for n, m in before[type_url].items())


def test_http3_adds_a_quic_twin_that_shares_routes_and_certificates() -> None:
    resources = translate(secure(HTTP3), AT_GATEWAY)

    twin = resources[typeurls.LISTENER]["ns/gw:8443/h3"]
    assert twin.address.socket_address.protocol == address_pb2.SocketAddress.UDP
    assert twin.address.socket_address.port_value == 8443
    assert twin.udp_listener_config.HasField("quic_options")
    [chain] = twin.filter_chains
    transport = unpack(
        chain.transport_socket.typed_config, quic_transport_pb2.QuicDownstreamTransport
    )
    assert transport.enable_early_data.value is False
    sds = transport.downstream_tls_context.common_tls_context.tls_certificate_sds_secret_configs
    assert [s.name for s in sds] == ["ns/tls"]
    manager = unpack(chain.filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert manager.codec_type == hcm_pb2.HttpConnectionManager.HTTP3
    assert manager.rds.route_config_name == LISTENER


def test_http3_is_advertised_on_every_response_of_the_listener() -> None:
    routes = translate(secure(HTTP3), AT_GATEWAY)[typeurls.ROUTE][LISTENER]
    [header] = routes.response_headers_to_add
    assert (header.header.key, header.header.value) == ("alt-svc", 'h3=":8443"; ma=86400')


def test_http3_on_a_plain_http_listener_is_not_served() -> None:
    plain = policy("h3", PolicyTarget(TargetKind.GATEWAY, "gw", "http"), http3=Http3())
    resources = translate(secure(plain), AT_GATEWAY)
    assert set(resources[typeurls.LISTENER]) == {"ns/gw:8080", LISTENER}


SIDECAR = NodeProfile(role=Role.SIDECAR, member="west", region="r1", zone="z-west")


def two_services(*policies: Any) -> Any:
    cart = running(EAST, "10.0.0.2", service="cart")
    east = running(EAST, "10.0.0.1")
    east = replace(
        east,
        services=east.services + cart.services,
        endpoint_slices=east.endpoint_slices + cart.endpoint_slices,
        exports=east.exports + cart.exports,
    )
    return fleet(east, running(WEST, "10.1.0.1"), policies=policies)


def test_a_sidecar_calls_each_service_on_loopback_at_its_port_by_its_names() -> None:
    resources = translate(two_services(), SIDECAR)

    listener = resources[typeurls.LISTENER]["outbound:80"]
    assert listener.address.socket_address.address == "127.0.0.1"
    hosts = {
        h.name: list(h.domains) for h in resources[typeurls.ROUTE]["outbound:80"].virtual_hosts
    }
    assert hosts["ns/web:80"] == [
        "web.ns.svc.clusterset.local",
        "web.ns.svc.cluster.local",
        "web.ns.svc",
        "web.ns",
    ]
    assert set(hosts) == {"ns/cart:80", "ns/web:80"}


def test_a_fleet_policy_limits_the_services_sidecars_get() -> None:
    scope = policy(
        "sidecars",
        PolicyTarget(TargetKind.FLEET, "f"),
        sidecar=SidecarScope(((NS, "web"),)),
    )
    resources = translate(two_services(scope), SIDECAR)

    assert set(resources[typeurls.CLUSTER]) == {"ns/web:80"}
    [host] = resources[typeurls.ROUTE]["outbound:80"].virtual_hosts
    assert host.name == "ns/web:80"


def test_a_sidecar_prefers_its_own_member() -> None:
    assignment = translate(two_services(), SIDECAR)[typeurls.ENDPOINT]["ns/web:80"]
    assert [(e.locality.sub_zone, e.priority) for e in assignment.endpoints] == [
        ("west", 0),
        ("east", 1),
    ]
