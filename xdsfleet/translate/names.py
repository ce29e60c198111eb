"""Resource names: the one place that spells the table of docs/architecture.md,
"Resource names".

Clients, routes, tests and tools all find resources by these names, so nothing else may build
them by hand. Pure string functions; no knowledge of protobuf.
"""

from __future__ import annotations

import re


def cluster_name(namespace: str, service: str, port: int) -> str:
    """The Envoy cluster (and its ClusterLoadAssignment) of a multi-cluster service port."""
    return f"{namespace}/{service}:{port}"


def pinned_cluster_name(cluster: str, members: tuple[str, ...]) -> str:
    """The cluster of a service port pinned to some members (the others as fallback):
    `NS/SVC:PORT@MEMBER`, or `NS/SVC:PORT@A+B` for several, in name order."""
    return f"{cluster}@{'+'.join(sorted(members))}"


def gateway_port_name(gateway_namespace: str, gateway_name: str, port: int) -> str:
    """The gateway listener serving every Gateway listener on `port`; its RouteConfiguration
    carries the same name."""
    return f"{gateway_namespace}/{gateway_name}:{port}"


def sni_routes_name(port_name: str, listener: str) -> str:
    """The RouteConfiguration of one Gateway listener of an HTTPS port that several share
    (its SNI filter chain answers 421 for the others' hosts)."""
    return f"{port_name}/{listener}"


def quic_listener_name(listener: str) -> str:
    """The HTTP/3 (UDP) twin of a gateway listener; it shares the listener's routes."""
    return f"{listener}/h3"


def outbound_name(port: int) -> str:
    """A sidecar's outbound listener for one port, and its RouteConfiguration."""
    return f"outbound:{port}"


def secret_name(namespace: str, name: str) -> str:
    """An SDS secret: the Kubernetes Secret it comes from."""
    return f"{namespace}/{name}"


def proxyless_listener_name(service: str, namespace: str, port: int) -> str:
    """The listener gRPC's xDS client asks for when dialling `xds:///SVC.NS:PORT`."""
    return f"{service}.{namespace}:{port}"


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def stat_prefix(name: str) -> str:
    """A stats-safe prefix: Envoy splits stat names on dots, and tools choke on `/` and `:`."""
    return _NOT_ALNUM.sub("_", name)
