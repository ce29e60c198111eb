"""Listeners: gateway listeners that fetch their routes over RDS, and proxyless gRPC listeners.

Proxyless listeners are `api_listener`s with the route inline: that is the shape gRPC's xDS
client resolves `xds:///SVC.NS:PORT` with, and it fetches nothing else for them.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xdsfleet.translate.memo import memoised
from xdsfleet.translate.names import stat_prefix
from xdsfleet.translate.proto import Message, ads_config_source, pack_into

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"


@memoised
def gateway_listener(name: str, port: int) -> Message:
    """A plaintext HTTP listener on all addresses; its routes are the RouteConfiguration `name`."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(name),
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=name),
        http_filters=[_router()],
        # Gateway API hostnames never carry a port; clients often send one in Host.
        strip_any_host_port=True,
    )
    connection_manager = listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER)
    pack_into(connection_manager.typed_config, manager)
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=port)
        ),
        filter_chains=[listener_components_pb2.FilterChain(filters=[connection_manager])],
    )


@memoised
def proxyless_listener(name: str, cluster: str) -> Message:
    """The listener gRPC resolves `name` with: every call goes to `cluster`."""
    routes = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=""),
                        route=route_components_pb2.RouteAction(cluster=cluster),
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


def _router() -> Message:
    router = hcm_pb2.HttpFilter(name=ROUTER)
    pack_into(router.typed_config, router_pb2.Router())
    return router
