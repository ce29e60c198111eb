"""Gateway route configurations: the routes attached to one Gateway listener, as Envoy routes.

Gateway API semantics live here: attachment, hostnames and match precedence. What each rule does
comes from `rules` (which also records the clusters it needs), the messages from `actions`. A
route configuration is built from plain plans, so it changes only when its plans change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

from xdsfleet.model.fleet import (
    Gateway,
    GatewayListener,
    GRPCRoute,
    HTTPRoute,
    ParentRef,
    PathMatchType,
    RouteMatch,
)
from xdsfleet.model.policy import TargetKind
from xdsfleet.translate.actions import envoy_route
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.proto import Message
from xdsfleet.translate.rules import Planner, RoutePlan, VirtualHostPlan, as_http_route


class _Attachable(Protocol):
    @property
    def parent_refs(self) -> tuple[ParentRef, ...]: ...


A = TypeVar("A", bound=_Attachable)
# Path kinds in Gateway API precedence order.
_PATH_ORDER = {
    PathMatchType.EXACT: 0,
    PathMatchType.PATH_PREFIX: 1,
    PathMatchType.REGULAR_EXPRESSION: 2,
}


def attached(gateway: Gateway, listener: GatewayListener, routes: Iterable[A]) -> tuple[A, ...]:
    """The routes with a parentRef to this Gateway that this listener accepts."""
    return tuple(r for r in routes if any(p.selects(gateway, listener) for p in r.parent_refs))


def plan_listener(
    gateway: Gateway,
    listener: GatewayListener,
    http_routes: Iterable[HTTPRoute],
    grpc_routes: Iterable[GRPCRoute],
    planner: Planner,
) -> tuple[VirtualHostPlan, ...]:
    """The virtual hosts of one listener, each with its routes in precedence order."""
    routes = [(TargetKind.HTTP_ROUTE, r) for r in attached(gateway, listener, http_routes)]
    routes += [
        (TargetKind.GRPC_ROUTE, as_http_route(r)) for r in attached(gateway, listener, grpc_routes)
    ]
    by_host: dict[str, list[tuple[tuple[object, ...], RoutePlan]]] = {}
    for kind, route in routes:
        # Simplification: route hostnames are not intersected with the listener hostname yet.
        hostnames = route.hostnames or (listener.hostname or "*",)
        for rule_index, rule in enumerate(route.rules):
            action = planner.rule(kind, route.namespace, route.name, rule)
            # Gateway API: a rule without matches matches every path.
            for match_index, match in enumerate(rule.matches or (RouteMatch(),)):
                order = (*_precedence(match), route.namespace, route.name, kind, rule_index)
                source = f"{kind} {route.namespace}/{route.name} "
                source += f"rules[{rule_index}].matches[{match_index}]"
                plan = RoutePlan(match, action, source)
                for hostname in hostnames:
                    by_host.setdefault(hostname, []).append((order, plan))
    return tuple(
        VirtualHostPlan(
            hostname,
            (hostname,),
            tuple(plan for _, plan in sorted(by_host[hostname], key=lambda e: e[0])),
        )
        for hostname in sorted(by_host)
    )


def _precedence(match: RouteMatch) -> tuple[int, ...]:
    """Gateway API order: Exact before PathPrefix (the longer path first), then a method, then
    the most header matches, then the most query parameter matches."""
    path = match.path.normalized()
    return (
        _PATH_ORDER[path.type],
        -len(path.value),
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
    )


@memoised
def route_configuration(
    name: str, hosts: tuple[VirtualHostPlan, ...], alt_svc: str | None = None
) -> Message:
    """The RouteConfiguration `name`. `alt_svc` advertises HTTP/3 on every response."""
    built = route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=host.name,
                domains=host.domains,
                routes=[envoy_route(plan) for plan in host.routes],
            )
            for host in hosts
        ],
    )
    if alt_svc is not None:
        built.response_headers_to_add.add(
            header=base_pb2.HeaderValue(key="alt-svc", value=alt_svc),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    return built


def uses_sessions(hosts: tuple[VirtualHostPlan, ...]) -> bool:
    """Whether some route keeps sessions with a cookie: its listener then needs the filter."""
    return any(p.action.session_cookie is not None for h in hosts for p in h.routes)
