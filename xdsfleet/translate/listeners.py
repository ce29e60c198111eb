"""Listeners: gateway listeners (HTTP, HTTPS, and an HTTP/3 twin), sidecar outbound listeners,
and proxyless gRPC listeners.

Gateway and sidecar listeners fetch their routes over RDS and their certificates over SDS, so
route and certificate changes never touch a listener (which Envoy would drain). Proxyless
listeners are `api_listener`s with the route inline: that is the shape gRPC's xDS client resolves
`xds:///SVC.NS:PORT` with, and it fetches nothing else for them.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from xdsfleet.translate.actions import STATEFUL_SESSION, grpc_retry_policy
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.names import stat_prefix
from xdsfleet.translate.proto import Message, ads_config_source, pack_into
from xdsfleet.translate.rules import RetrySettings

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
TLS = "envoy.transport_sockets.tls"
QUIC = "envoy.transport_sockets.quic"
ANY_ADDRESS = "0.0.0.0"
LOOPBACK = "127.0.0.1"


@memoised
def gateway_listener(
    name: str, port: int, secrets: tuple[str, ...] = (), sessions: bool = False
) -> Message:
    """A gateway listener on all addresses; its routes are the RouteConfiguration `name`.
    With `secrets` (SDS names) it terminates TLS; `sessions` adds the stateful-session filter
    that routes keeping sessions by cookie configure."""
    chain = listener_components_pb2.FilterChain(filters=[_manager(name, name, sessions)])
    if secrets:
        context = tls_pb2.DownstreamTlsContext(common_tls_context=_tls(secrets, "h2", "http/1.1"))
        chain.transport_socket.name = TLS
        pack_into(chain.transport_socket.typed_config, context)
    return listener_pb2.Listener(
        name=name, address=_address(ANY_ADDRESS, port), filter_chains=[chain]
    )


@memoised
def quic_listener(
    name: str, routes: str, port: int, secrets: tuple[str, ...], early_data: bool, sessions: bool
) -> Message:
    """The HTTP/3 twin of an HTTPS gateway listener: the same port over UDP, the same routes
    and certificates. `early_data` accepts 0-RTT requests."""
    manager = _manager(name, routes, sessions, http3=True)
    transport = quic_transport_pb2.QuicDownstreamTransport(
        downstream_tls_context=tls_pb2.DownstreamTlsContext(common_tls_context=_tls(secrets, "h3"))
    )
    transport.enable_early_data.value = early_data
    chain = listener_components_pb2.FilterChain(filters=[manager])
    chain.transport_socket.name = QUIC
    pack_into(chain.transport_socket.typed_config, transport)
    listener = listener_pb2.Listener(
        name=name,
        address=_address(ANY_ADDRESS, port, address_pb2.SocketAddress.UDP),
        filter_chains=[chain],
    )
    listener.udp_listener_config.quic_options.SetInParent()
    return listener


@memoised
def outbound_listener(name: str, port: int, sessions: bool = False) -> Message:
    """A sidecar's outbound listener: the application calls its services on loopback at their
    port, naming the service in the Host header; the routes are the RouteConfiguration `name`."""
    return listener_pb2.Listener(
        name=name,
        address=_address(LOOPBACK, port),
        filter_chains=[
            listener_components_pb2.FilterChain(filters=[_manager(name, name, sessions)])
        ],
    )


@memoised
def proxyless_listener(name: str, cluster: str, retry: RetrySettings | None = None) -> Message:
    """The listener gRPC resolves `name` with: every call goes to `cluster`, retried as far as
    gRPC can (`grpc_retry_policy`)."""
    action = route_components_pb2.RouteAction(cluster=cluster)
    policy = grpc_retry_policy(retry)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    routes = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""), route=action
                    )
                ],
            )
        ],
    )
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(name), route_config=routes, http_filters=[_router()]
    )
    listener = listener_pb2.Listener(name=name)
    pack_into(listener.api_listener.api_listener, manager)
    return listener


def _address(host: str, port: int, protocol: int = address_pb2.SocketAddress.TCP) -> Message:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port, protocol=protocol)
    )


def _manager(name: str, routes: str, sessions: bool, *, http3: bool = False) -> Message:
    """An HTTP connection manager fetching the RouteConfiguration `routes` over ADS."""
    filters = [_stateful_session()] if sessions else []
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(name),
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=routes),
        http_filters=[*filters, _router()],
        # Gateway API hostnames never carry a port; clients often send one in Host.
        strip_any_host_port=True,
    )
    if http3:
        manager.codec_type = hcm_pb2.HttpConnectionManager.HTTP3
        manager.http3_protocol_options.CopyFrom(protocol_pb2.Http3ProtocolOptions())
    connection_manager = listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER)
    pack_into(connection_manager.typed_config, manager)
    return connection_manager


def _tls(secrets: tuple[str, ...], *alpn: str) -> Message:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[
            secret_pb2.SdsSecretConfig(name=secret, sds_config=ads_config_source())
            for secret in secrets
        ],
        alpn_protocols=alpn,
    )


def _stateful_session() -> Message:
    """Present but idle: only routes that keep sessions by cookie configure it (per route)."""
    session = hcm_pb2.HttpFilter(name=STATEFUL_SESSION)
    pack_into(session.typed_config, stateful_session_pb2.StatefulSession())
    return session


def _router() -> Message:
    router = hcm_pb2.HttpFilter(name=ROUTER)
    pack_into(router.typed_config, router_pb2.Router())
    return router
