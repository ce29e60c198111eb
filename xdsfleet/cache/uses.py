"""Which clusters a route configuration or a listener sends traffic to.

A stream must not hand a client a route before the clusters it names are warm there, nor remove
a cluster while a route the client holds still names it (make before break,
docs/xds-protocol.md rules 13 and 14). The snapshot records these references once per resource
so that no stream ever parses a resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from xdsfleet.cache import typeurls

HCM_TYPE_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
TCP_PROXY_TYPE_URL = "type.googleapis.com/" + tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name

# The types whose resources name clusters.
USERS = (typeurls.LISTENER, typeurls.ROUTE)


def uses_of(messages: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, frozenset[str]]]:
    """Per type of `USERS`, the clusters each resource that names some uses."""
    out: dict[str, dict[str, frozenset[str]]] = {}
    for type_url in USERS:
        named = {}
        for name, message in messages.get(type_url, {}).items():
            clusters = clusters_used(type_url, message)
            if clusters:
                named[name] = clusters
        out[type_url] = named
    return out


def clusters_used(type_url: str, message: Any) -> frozenset[str]:
    if type_url == typeurls.ROUTE:
        return frozenset(_route_clusters(message))
    if type_url == typeurls.LISTENER:
        return frozenset(_listener_clusters(message))
    return frozenset()


def _route_clusters(config: Any) -> Iterable[str]:
    for host in config.virtual_hosts:
        for mirror in host.request_mirror_policies:
            yield mirror.cluster
        for route in host.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                yield action.cluster
            for weighted in action.weighted_clusters.clusters:
                yield weighted.name
            for mirror in action.request_mirror_policies:
                yield mirror.cluster


def _listener_clusters(listener: Any) -> Iterable[str]:
    packed = [flt.typed_config for chain in listener.filter_chains for flt in chain.filters]
    if listener.HasField("api_listener"):
        packed.append(listener.api_listener.api_listener)
    for config in packed:
        if config.type_url == HCM_TYPE_URL:
            manager = hcm_pb2.HttpConnectionManager()
            config.Unpack(manager)
            if manager.HasField("route_config"):
                yield from _route_clusters(manager.route_config)
        elif config.type_url == TCP_PROXY_TYPE_URL:
            proxy = tcp_proxy_pb2.TcpProxy()
            config.Unpack(proxy)
            if proxy.cluster:
                yield proxy.cluster
            for weighted in proxy.weighted_clusters.clusters:
                yield weighted.name
