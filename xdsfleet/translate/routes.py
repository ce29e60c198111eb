"""Gateway route configurations: HTTPRoutes attached to one Gateway listener, as Envoy routes.

Gateway API semantics live here (attachment, hostnames, match precedence, weighted backends);
which backends resolve is decided by the caller from the exported services, so a route
configuration changes only when its routes or the resolvability of their backends change.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3 import route_components_pb2, route_pb2

from xdsfleet.model.fleet import (
    BackendRef,
    Gateway,
    GatewayListener,
    HTTPRoute,
    PathMatch,
    PathMatchType,
    RouteRule,
)
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.proto import Message
from xdsfleet.translate.services import ServicePortKey

# Both kinds name the service across all exporting members (DESIGN.md, "Fleet documents").
_SERVICE_KINDS = frozenset({"Service", "ServiceImport"})
# Gateway API: a rule without matches matches every path (PathPrefix "/").
_DEFAULT_MATCH = PathMatch()


def attached(
    gateway: Gateway, listener: GatewayListener, routes: Iterable[HTTPRoute]
) -> tuple[HTTPRoute, ...]:
    """The routes with a parentRef to this Gateway that this listener accepts."""
    return tuple(
        route
        for route in routes
        if any(
            ref.namespace == gateway.namespace
            and ref.name == gateway.name
            and ref.section_name in (None, listener.name)
            and ref.port in (None, listener.port)
            for ref in route.parent_refs
        )
    )


def backend_key(ref: BackendRef) -> ServicePortKey | None:
    """The service port a backendRef names, or None for kinds we cannot resolve."""
    if ref.kind not in _SERVICE_KINDS:
        return None
    return ServicePortKey(ref.namespace, ref.name, ref.port)


def referenced(routes: Iterable[HTTPRoute]) -> frozenset[ServicePortKey]:
    """Every service port the routes name, resolvable or not."""
    keys = (
        backend_key(ref) for route in routes for rule in route.rules for ref in rule.backend_refs
    )
    return frozenset(key for key in keys if key is not None)


def used_service_ports(
    routes: Iterable[HTTPRoute], resolved: frozenset[ServicePortKey]
) -> frozenset[ServicePortKey]:
    """The service ports the route configuration of these routes sends traffic to."""
    return frozenset(
        key for route in routes for rule in route.rules for key, _ in _backends(rule, resolved)
    )


@memoised
def route_configuration(
    name: str,
    listener_hostname: str | None,
    routes: tuple[HTTPRoute, ...],
    resolved: frozenset[ServicePortKey],
) -> Message:
    """The routes of one gateway listener. `resolved` holds the referenced service ports that
    some member exports; the others are unresolved backends."""
    # hostname -> (precedence key, match, rule)
    by_host: dict[str, list[tuple[tuple[object, ...], PathMatch, RouteRule]]] = {}
    for route in routes:
        # Simplification: route hostnames are not intersected with the listener hostname yet.
        hostnames = route.hostnames or (listener_hostname or "*",)
        for rule_index, rule in enumerate(route.rules):
            for match in [m.path for m in rule.matches] or [_DEFAULT_MATCH]:
                precedence = (*_match_precedence(match), route.namespace, route.name, rule_index)
                for hostname in hostnames:
                    by_host.setdefault(hostname, []).append((precedence, match, rule))
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=hostname,
                domains=[hostname],
                routes=[
                    _route(match, rule, resolved)
                    for _, match, rule in sorted(by_host[hostname], key=lambda e: e[0])
                ],
            )
            for hostname in sorted(by_host)
        ],
    )


def _match_precedence(match: PathMatch) -> tuple[int, int]:
    """Gateway API order: Exact before PathPrefix, then the longer path first."""
    exact = match.type is PathMatchType.EXACT
    length = len(match.value) if exact else len(_prefix(match.value))
    return (0 if exact else 1, -length)


def _prefix(value: str) -> str:
    # Gateway API prefixes match whole path elements, so `/foo/` and `/foo` are the same match.
    return value.rstrip("/") or "/"


def _route(match: PathMatch, rule: RouteRule, resolved: frozenset[ServicePortKey]) -> Message:
    route = route_components_pb2.Route(match=_envoy_match(match))
    backends = _backends(rule, resolved)
    if not backends:
        # Gateway API: traffic for a rule whose backends are all invalid gets a 500.
        route.direct_response.status = 500
    elif len(backends) == 1:
        route.route.cluster = backends[0][0].cluster
    else:
        route.route.weighted_clusters.clusters.extend(
            route_components_pb2.WeightedCluster.ClusterWeight(
                name=key.cluster, weight={"value": weight}
            )
            for key, weight in backends
        )
    return route


def _envoy_match(match: PathMatch) -> Message:
    if match.type is PathMatchType.EXACT:
        return route_components_pb2.RouteMatch(path=match.value)
    prefix = _prefix(match.value)
    if prefix == "/":
        # Envoy's path_separated_prefix refuses "/" (it may not end with a slash).
        return route_components_pb2.RouteMatch(prefix="/")
    return route_components_pb2.RouteMatch(path_separated_prefix=prefix)


def _backends(
    rule: RouteRule, resolved: frozenset[ServicePortKey]
) -> list[tuple[ServicePortKey, int]]:
    """The rule's resolved backends with weight, in rule order, duplicates merged.

    Simplification: Gateway API wants the share of an unresolved backend answered with 500;
    we drop it and keep the resolved backends' relative weights, so that share is served.
    """
    weights: dict[ServicePortKey, int] = {}
    for ref in rule.backend_refs:
        key = backend_key(ref)
        if key is not None and key in resolved and ref.weight > 0:
            weights[key] = weights.get(key, 0) + ref.weight
    return list(weights.items())
