"""Listeners: gateway listeners (HTTP, HTTPS, and an HTTP/3 twin), sidecar outbound listeners,
and proxyless gRPC listeners.

A gateway listener serves one port of a Gateway: every Gateway listener on that port, HTTP ones
as virtual hosts of one route table, HTTPS ones as one filter chain each, picked by SNI and
terminating TLS with its own certificates (Envoy refuses two listeners on one address).

Gateway and sidecar listeners fetch their routes over RDS and their certificates over SDS, so
route and certificate changes never touch a listener (which Envoy would drain). Proxyless
listeners are `api_listener`s with the route inline: that is the shape gRPC's xDS client resolves
`xds:///SVC.NS:PORT` with, and it fetches nothing else for them.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from xdsfleet.model.policy import AccessLogFormat
from xdsfleet.translate.accesslog import access_logs
from xdsfleet.translate.actions import CORS_FILTER, STATEFUL_SESSION, grpc_retry_policy
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.names import stat_prefix
from xdsfleet.translate.proto import Message, ads_config_source, pack_into
from xdsfleet.translate.rules import RetrySettings
from xdsfleet.translate.tracing import Trace, http_tracing

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
TLS = "envoy.transport_sockets.tls"
QUIC = "envoy.transport_sockets.quic"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
ANY_ADDRESS = "0.0.0.0"
LOOPBACK = "127.0.0.1"
WEBSOCKET = "websocket"
# (SNI hostname or None for any, SDS names of its certificates, its RouteConfiguration): one
# HTTPS Gateway listener.
TlsChain = tuple[str | None, tuple[str, ...], str]


@memoised
def gateway_listener(
    name: str,
    port: int,
    chains: tuple[TlsChain, ...] = (),
    sessions: bool = False,
    cors: bool = False,
    access_log: AccessLogFormat = AccessLogFormat.JSON,
    trace: Trace | None = None,
) -> Message:
    """A gateway listener on all addresses. Plain HTTP: its routes are the RouteConfiguration
    `name`. With `chains` it terminates TLS, one filter chain per SNI hostname, each with its
    certificates and routes. `sessions` and `cors` add the filters that routes keeping sessions
    by cookie, or with a CORS policy, configure; `access_log` is the format of its log, `trace`
    where its OpenTelemetry spans go."""
    built = listener_pb2.Listener(name=name, address=_address(ANY_ADDRESS, port))
    if not chains:
        built.filter_chains.add(
            filters=[
                _manager(name, name, sessions, cors, edge=True, access_log=access_log, trace=trace)
            ]
        )
    if any(server_name is not None for server_name, _, _ in chains):
        # Reads the SNI name from the ClientHello, so that filter chains can match on it.
        inspector = built.listener_filters.add(name=TLS_INSPECTOR)
        pack_into(inspector.typed_config, tls_inspector_pb2.TlsInspector())
    for server_name, secrets, routes in chains:
        manager = _manager(
            name, routes, sessions, cors, edge=True, access_log=access_log, trace=trace
        )
        chain = built.filter_chains.add(filters=[manager])
        if server_name is not None:
            chain.filter_chain_match.server_names.append(server_name)
        context = tls_pb2.DownstreamTlsContext(common_tls_context=_tls(secrets, "h2", "http/1.1"))
        chain.transport_socket.name = TLS
        pack_into(chain.transport_socket.typed_config, context)
    return built


@memoised
def quic_listener(
    name: str,
    port: int,
    chains: tuple[TlsChain, ...],
    early_data: bool,
    sessions: bool,
    cors: bool = False,
    access_log: AccessLogFormat = AccessLogFormat.JSON,
    trace: Trace | None = None,
) -> Message:
    """The HTTP/3 twin of an HTTPS gateway listener: the same port over UDP, the same SNI
    hostnames, certificates, routes, access log and tracing. `early_data` accepts 0-RTT requests."""
    listener = listener_pb2.Listener(
        name=name, address=_address(ANY_ADDRESS, port, address_pb2.SocketAddress.UDP)
    )
    for server_name, secrets, routes in chains:
        context = tls_pb2.DownstreamTlsContext(common_tls_context=_tls(secrets, "h3"))
        transport = quic_transport_pb2.QuicDownstreamTransport(downstream_tls_context=context)
        transport.enable_early_data.value = early_data
        manager = _manager(
            name, routes, sessions, cors, http3=True, edge=True, access_log=access_log, trace=trace
        )
        chain = listener.filter_chains.add(filters=[manager])
        if server_name is not None:
            chain.filter_chain_match.server_names.append(server_name)
        chain.transport_socket.name = QUIC
        pack_into(chain.transport_socket.typed_config, transport)
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


def _manager(
    name: str,
    routes: str,
    sessions: bool,
    cors: bool = False,
    *,
    http3: bool = False,
    edge: bool = False,
    access_log: AccessLogFormat = AccessLogFormat.OFF,
    trace: Trace | None = None,
) -> Message:
    """An HTTP connection manager fetching the RouteConfiguration `routes` over ADS. The Host
    header is left as sent, port included: gateway route tables match hosts without their
    port (`ignore_port_in_host_matching`), and backends see what the client sent.
    WebSocket upgrades pass through (Gateway API: `appProtocol: kubernetes.io/ws`).

    `edge` (a gateway, facing clients), as Envoy's edge-proxy guidance asks: the peer address
    is the client's (appended to X-Forwarded-For for backends; a client cannot pose as internal
    with a forged X-Forwarded-For and so have its `x-envoy-*` headers obeyed), and paths are
    normalized before routing (`/a/../admin` is routed as `/admin`)."""
    filters = [_cors()] if cors else []
    filters += [_stateful_session()] if sessions else []
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(name),
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=routes),
        http_filters=[*filters, _router()],
    )
    if edge:
        manager.use_remote_address.value = True
        manager.normalize_path.value = True
    manager.access_log.extend(access_logs(access_log))
    if trace is not None:
        manager.tracing.CopyFrom(http_tracing(trace))
    if not http3:
        manager.upgrade_configs.add(upgrade_type=WEBSOCKET)
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


def _cors() -> Message:
    """Present but idle: only routes with a CORS filter configure it (per route)."""
    cors = hcm_pb2.HttpFilter(name=CORS_FILTER)
    pack_into(cors.typed_config, cors_pb2.Cors())
    return cors


def _stateful_session() -> Message:
    """Present but idle: only routes that keep sessions by cookie configure it (per route)."""
    session = hcm_pb2.HttpFilter(name=STATEFUL_SESSION)
    pack_into(session.typed_config, stateful_session_pb2.StatefulSession())
    return session


def _router() -> Message:
    router = hcm_pb2.HttpFilter(name=ROUTER)
    pack_into(router.typed_config, router_pb2.Router())
    return router
