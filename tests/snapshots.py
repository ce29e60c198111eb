"""Small hand-made snapshots and requests for protocol tests, independent of translation."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot

ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def cluster(name: str, timeout_ms: int = 1000) -> Any:
    msg = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    msg.eds_cluster_config.eds_config.CopyFrom(ADS)
    msg.eds_cluster_config.service_name = name
    msg.connect_timeout.FromMilliseconds(timeout_ms)
    return msg


def assignment(name: str, *addresses: str) -> Any:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region="r", zone="z"),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(address=a, port_value=8080)
                            )
                        )
                    )
                    for a in addresses
                ],
            )
        ],
    )


def listener(name: str, route: str, port: int = 10000) -> Any:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="t")
    hcm.rds.route_config_name = route
    hcm.rds.config_source.CopyFrom(ADS)
    packed = any_pb2.Any()
    packed.Pack(hcm)
    msg = listener_pb2.Listener(name=name)
    msg.address.socket_address.address = "127.0.0.1"
    msg.address.socket_address.port_value = port
    msg.filter_chains.add().filters.add(name="hcm", typed_config=packed)
    return msg


def api_listener(name: str, cluster_name: str) -> Any:
    """A proxyless gRPC client's listener: its routes inline, to `cluster_name`."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="t")
    hcm.route_config.CopyFrom(route("inline", cluster_name))
    packed = any_pb2.Any()
    packed.Pack(hcm)
    msg = listener_pb2.Listener(name=name)
    msg.api_listener.api_listener.CopyFrom(packed)
    return msg


def route(name: str, cluster_name: str) -> Any:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            rc_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    rc_pb2.Route(
                        match=rc_pb2.RouteMatch(prefix="/"),
                        route=rc_pb2.RouteAction(cluster=cluster_name),
                    )
                ],
            )
        ],
    )


def snapshot(
    clusters: dict[str, tuple[str, ...]] | None = None,
    routes: dict[str, str] | None = None,
    *,
    timeout_ms: int = 1000,
    encoder: Encoder | None = None,
) -> Snapshot:
    """Clusters by name with their endpoint addresses; listeners `L-x` -> route `x` -> cluster."""
    clusters = clusters or {}
    routes = routes or {}
    messages: dict[str, dict[str, Any]] = {
        typeurls.CLUSTER: {n: cluster(n, timeout_ms) for n in clusters},
        typeurls.ENDPOINT: {n: assignment(n, *a) for n, a in clusters.items()},
        typeurls.LISTENER: {f"L-{r}": listener(f"L-{r}", r) for r in routes},
        typeurls.ROUTE: {r: route(r, c) for r, c in routes.items()},
    }
    return build_snapshot(messages, encoder or Encoder())


def request(
    type_url: str,
    names: list[str] | tuple[str, ...] = (),
    *,
    nonce: str = "",
    version: str = "",
    error: str | None = None,
) -> Any:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def delta_request(
    type_url: str,
    subscribe: list[str] | tuple[str, ...] = (),
    unsubscribe: list[str] | tuple[str, ...] = (),
    *,
    nonce: str = "",
    initial: dict[str, str] | None = None,
    error: str | None = None,
) -> Any:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def ack(stream: Any, response: Any, names: list[str] | tuple[str, ...] = ()) -> Any:
    """The SotW client's ACK of `response`, still asking for `names`."""
    return stream.on_request(
        request(response.type_url, names, nonce=response.nonce, version=response.version)
    )


def delta_ack(stream: Any, response: Any) -> Any:
    return stream.on_request(delta_request(response.type_url, nonce=response.nonce))
