"""Gateway route configurations: the routes attached to the listeners of one Gateway port, as
Envoy virtual hosts and routes.

Gateway API semantics live here: which listeners a route attaches to (parentRefs,
`allowedRoutes`, hostname intersection), which listener of a port a hostname belongs to, and the
precedence of rules across routes (hostname specificity, then match precedence). What each rule
does comes from `rules` (which also records the clusters it needs), the messages from `actions`.
A route configuration is built from plain plans, so it changes only when its plans change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2

from xdsfleet.model.attachment import (
    Attachable,
    Labels,
    attaches,
    covers,
    effective_hostnames,
    specificity,
)
from xdsfleet.model.fleet import (
    Gateway,
    GatewayListener,
    GRPCRoute,
    HTTPRoute,
    PathMatchType,
    RouteMatch,
)
from xdsfleet.model.policy import TargetKind
from xdsfleet.translate.actions import envoy_route
from xdsfleet.translate.memo import cached, memoised, remember
from xdsfleet.translate.names import gateway_port_name, sni_routes_name
from xdsfleet.translate.proto import Message
from xdsfleet.translate.rules import Action, Planner, RoutePlan, VirtualHostPlan, as_http_route
from xdsfleet.translate.steps import Steps, finish

A = TypeVar("A", bound=Attachable)
# Path kinds in Gateway API precedence order.
_PATH_ORDER = {
    PathMatchType.EXACT: 0,
    PathMatchType.PATH_PREFIX: 1,
    PathMatchType.REGULAR_EXPRESSION: 2,
}
# The port a listener's protocol implies: a redirect from it names no other.
DEFAULT_PORTS = {"HTTP": 80, "HTTPS": 443}
# Routes planned between two yields (~20 us each).
ROUTES_STEP = 64


def attached(
    gateway: Gateway,
    listener: GatewayListener,
    kind: str,
    routes: Iterable[A],
    labels: Labels,
) -> tuple[A, ...]:
    """The routes of `kind` that attach to this listener."""
    return tuple(r for r in routes if attaches(gateway, listener, kind, r, labels))


# --- Ports -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayPort:
    """The listeners of a Gateway that share one port: one Envoy listener serves them all.
    `listeners` are those served, most specific hostname first; `conflicted` are those whose
    protocol differs from the port's first listener (Gateway API: ProtocolConflict), not
    served."""

    port: int
    protocol: str
    listeners: tuple[GatewayListener, ...]
    conflicted: tuple[GatewayListener, ...] = ()

    def owner(self, host: str) -> GatewayListener | None:
        """The listener a request for `host` belongs to: the most specific hostname that
        takes it (Gateway API listener precedence)."""
        for listener in self.listeners:  # most specific first
            if covers(listener.hostname or "*", host):
                return listener
        return None


def gateway_ports(gateway: Gateway) -> tuple[GatewayPort, ...]:
    """The Gateway's served listeners grouped by port, in port order (TLS, TCP and UDP
    listeners are not served: no Envoy listener)."""
    by_port: dict[int, list[GatewayListener]] = {}
    for listener in (x for x in gateway.listeners if x.served):
        by_port.setdefault(listener.port, []).append(listener)
    ports = []
    for port, listeners in sorted(by_port.items()):
        protocol = listeners[0].protocol
        served = sorted(
            (x for x in listeners if x.protocol == protocol),
            key=lambda x: specificity(x.hostname or "*"),
        )
        conflicted = tuple(x for x in listeners if x.protocol != protocol)
        ports.append(GatewayPort(port, protocol, tuple(served), conflicted))
    return tuple(ports)


def route_names(gateway: Gateway, port: GatewayPort) -> dict[str, str]:
    """Gateway listener name -> the RouteConfiguration serving it: the port's, or, where
    several HTTPS listeners share the port, one each (`sni_routes_name`), so that the SNI filter
    chain of one answers 421 for the hosts of the others (a misdirected request)."""
    name = gateway_port_name(gateway.namespace, gateway.name, port.port)
    if port.protocol == "HTTPS" and len(port.listeners) > 1:
        return {x.name: sni_routes_name(name, x.name) for x in port.listeners}
    return {x.name: name for x in port.listeners}


def plan_port(
    gateway: Gateway,
    port: GatewayPort,
    http_routes: Iterable[HTTPRoute],
    grpc_routes: Iterable[GRPCRoute],
    planner: Planner,
    labels: Labels,
) -> Steps[dict[str, tuple[VirtualHostPlan, ...]]]:
    """The virtual hosts of one port by the listener they belong to, each with its routes in
    precedence order. A hostname is served by the listener it belongs to only, so that listeners
    stay apart on a shared port. Yields every `ROUTES_STEP` routes (a Gateway with a route per
    service of a large fleet plans thousands)."""
    http_routes, grpc_routes = tuple(http_routes), tuple(grpc_routes)
    hosts: dict[str, list[tuple[tuple[object, ...], RoutePlan]]] = {}
    owners: dict[str, str] = {}  # virtual host -> its listener
    for listener in port.listeners:
        routes = [
            (TargetKind.HTTP_ROUTE, r)
            for r in attached(gateway, listener, TargetKind.HTTP_ROUTE, http_routes, labels)
        ]
        routes += [
            (TargetKind.GRPC_ROUTE, as_http_route(r))
            for r in attached(gateway, listener, TargetKind.GRPC_ROUTE, grpc_routes, labels)
        ]
        serving = [(k, r, effective_hostnames(listener, r.hostnames)) for k, r in routes]
        domains = {h for _, _, names in serving for h in names}
        if listener.hostname is not None:
            # Its own hostname answers (404 when nothing matches) rather than falling through
            # to a less specific listener of the port.
            domains.add(listener.hostname)
        domains = {d for d in domains if port.owner(d) is listener}
        for domain in domains:
            hosts[domain] = []
            owners[domain] = listener.name
        for done, (kind, route, names) in enumerate(serving, 1):
            _plan_route(hosts, domains, kind, route, names, listener, port, planner)
            if done % ROUTES_STEP == 0:
                yield
    planned: dict[str, tuple[VirtualHostPlan, ...]] = {x.name: () for x in port.listeners}
    for domain in sorted(hosts):
        plans = tuple(p for _, p in sorted(hosts[domain], key=_key))
        owner = owners[domain]
        planned[owner] = (*planned[owner], VirtualHostPlan(domain, (domain,), plans))
    return planned


def misdirected(domains: Iterable[str]) -> VirtualHostPlan:
    """A virtual host answering 421 for `domains`: those of the other listeners of an HTTPS
    port, reached through this listener's SNI name (Gateway API: misdirected requests)."""
    plan = RoutePlan(RouteMatch(), Action(answer=421), "misdirected: another listener's host")
    # Not a hostname (a space), so it cannot clash with the name of another virtual host.
    return VirtualHostPlan("misdirected requests", tuple(sorted(domains)), (plan,))


def _key(entry: tuple[tuple[object, ...], RoutePlan]) -> tuple[object, ...]:
    return entry[0]


def _plan_route(
    hosts: dict[str, list[tuple[tuple[object, ...], RoutePlan]]],
    domains: set[str],
    kind: TargetKind,
    route: HTTPRoute,
    names: tuple[str, ...],
    listener: GatewayListener,
    port: GatewayPort,
    planner: Planner,
) -> None:
    """Add the rules of `route` to every virtual host among `domains` one of its `names`
    takes, ranked by the most specific of those names first (Gateway API: across routes,
    hostname specificity, then match precedence)."""
    ranks: dict[str, tuple[int, int]] = {}
    for name in names:
        # An exact name takes only itself: no scan of every domain (a fleet has thousands).
        taken = (name,) if not name.startswith("*") else (d for d in domains if covers(name, d))
        for domain in taken:
            if domain in domains:
                rank = specificity(name)
                ranks[domain] = min(ranks.get(domain, rank), rank)
    if not ranks:
        return
    for rule_index, rule in enumerate(route.rules):
        action = planner.rule(kind, route.namespace, route.name, rule)
        if action.redirect is not None and listener.port != DEFAULT_PORTS.get(port.protocol):
            action = replace(action, listener_port=listener.port)
        # Gateway API: a rule without matches matches every path.
        for match_index, match in enumerate(rule.matches or (RouteMatch(),)):
            order = (*_precedence(match), route.namespace, route.name, kind, rule_index)
            source = f"{kind} {route.namespace}/{route.name} "
            source += f"rules[{rule_index}].matches[{match_index}]"
            plan = RoutePlan(match, action, source)
            for domain, rank in ranks.items():
                hosts[domain].append(((rank, *order), plan))


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


def route_configuration_steps(
    name: str, hosts: tuple[VirtualHostPlan, ...], alt_svc: str | None = None
) -> Steps[Message]:
    """`route_configuration`, its virtual hosts built a few per step when it is not in the
    memo: a route table of a fleet of 1,000 services took ~20 ms to build in one go."""
    found = cached(route_configuration, name, hosts, alt_svc)
    if found is None:
        found = yield from _building(name, hosts, alt_svc)
        remember(route_configuration, found, name, hosts, alt_svc)
    return found


@memoised
def route_configuration(
    name: str, hosts: tuple[VirtualHostPlan, ...], alt_svc: str | None = None
) -> Message:
    """The RouteConfiguration `name`. `alt_svc` advertises HTTP/3 on every response. Virtual
    hosts match the Host without its port, while the Host itself, port included, goes to the
    backend as sent (Gateway API hostnames carry no port; clients often send one)."""
    return finish(_building(name, hosts, alt_svc))


def _building(name: str, hosts: tuple[VirtualHostPlan, ...], alt_svc: str | None) -> Steps[Message]:
    """`route_configuration`, yielding every few virtual hosts (built in place: a virtual host
    built apart is copied into the table)."""
    built = route_pb2.RouteConfiguration(name=name, ignore_port_in_host_matching=True)
    for done, host in enumerate(hosts, 1):
        built.virtual_hosts.add(
            name=host.name, domains=host.domains, routes=[envoy_route(p) for p in host.routes]
        )
        if done % ROUTES_STEP == 0:
            yield
    if alt_svc is not None:
        built.response_headers_to_add.add(
            header=base_pb2.HeaderValue(key="alt-svc", value=alt_svc),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
    return built


def uses_sessions(hosts: tuple[VirtualHostPlan, ...]) -> bool:
    """Whether some route keeps sessions with a cookie: its listener then needs the filter."""
    return any(p.action.session_cookie is not None for h in hosts for p in h.routes)


def uses_cors(hosts: tuple[VirtualHostPlan, ...]) -> bool:
    """Whether some route has a CORS filter: its listener then needs Envoy's CORS filter."""
    return any(p.action.cors is not None for h in hosts for p in h.routes)
