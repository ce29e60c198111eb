"""`xdsfleet explain`: which route a request takes, to which clusters, and what share of them
each member gets now and when tiers fail.

It reads the resources `translate` serves the way Envoy does (virtual host by domain, then the
first route that matches, then priorities and locality weights), so it explains what is served
rather than interpreting the documents a second time. Endpoints count as healthy when they were
sent as HEALTHY: active health checks and outlier detection happen in Envoy and are not seen
here. It must not change anything: it only reads a fleet and prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from rich.console import Group
from rich.table import Table
from rich.text import Text

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate
from xdsfleet.translate.names import gateway_port_name
from xdsfleet.translate.snapshot import gateway_of

# Envoy's default when an assignment sets no overprovisioning factor.
DEFAULT_OVERPROVISIONING = 140


@dataclass(frozen=True, slots=True)
class Request:
    host: str
    path: str = "/"
    headers: Mapping[str, str] | None = None
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class LocalityShare:
    member: str
    region: str
    zone: str
    priority: int
    healthy: int
    weight: int
    # [0]: the share now; [k]: the share while priorities 0..k-1 have no healthy endpoint.
    shares: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ClusterShare:
    cluster: str
    fraction: float  # of the route's requests
    localities: tuple[LocalityShare, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    route_configuration: str
    virtual_host: str
    route: str  # the Envoy route's name: the rule it comes from
    action: str
    clusters: tuple[ClusterShare, ...]


def explain(
    state: FleetState, profile: NodeProfile, request: Request, listener: str | None = None
) -> Explanation | None:
    """What happens to `request` at a client of `profile`; None when no route matches.
    `listener` limits the search to one gateway listener (its name, or the port's route
    configuration name `NS/GATEWAY:PORT`): the listeners sharing its port share its routes."""
    resources = translate(state, profile)
    if listener is not None:
        listener = _port_name(state, profile, listener)
    for name, config in _route_configurations(resources, profile, listener):
        found = _match(config, request)
        if found is not None:
            host, route = found
            return _explained(resources, name, host.name, route)
    return None


def _route_configurations(
    resources: Mapping[str, Mapping[str, Any]], profile: NodeProfile, listener: str | None
) -> Iterable[tuple[str, Any]]:
    if profile.role is Role.PROXYLESS:
        # Proxyless listeners carry their routes inline.
        for name, message in sorted(resources[typeurls.LISTENER].items()):
            manager = hcm_pb2.HttpConnectionManager()
            message.api_listener.api_listener.Unpack(manager)
            yield name, manager.route_config
        return
    for name, config in sorted(resources[typeurls.ROUTE].items()):
        if listener is None or listener == name:
            yield name, config


def _port_name(state: FleetState, profile: NodeProfile, listener: str) -> str:
    """The route configuration serving the Gateway listener named `listener` (or `listener`
    itself, when it names none of the profile's Gateway)."""
    gateway = gateway_of(state, profile.gateway)
    if gateway is None:
        return listener
    for found in gateway.listeners:
        if found.name == listener:
            return gateway_port_name(gateway.namespace, gateway.name, found.port)
    return listener


# --- Matching, as Envoy does -----------------------------------------------------------------


def _domain_rank(domain: str, host: str) -> tuple[int, int] | None:
    """How well `domain` matches `host`: exact first, then the longest suffix wildcard, then
    the longest prefix wildcard, then `*`; None when it does not match."""
    if domain == host:
        return (0, 0)
    if domain == "*":
        return (3, 0)
    if domain.startswith("*") and host.endswith(domain[1:]) and len(host) > len(domain) - 1:
        return (1, -len(domain))
    if domain.endswith("*") and host.startswith(domain[:-1]) and len(host) > len(domain) - 1:
        return (2, -len(domain))
    return None


def _virtual_host(config: Any, host: str) -> Any:
    best: tuple[tuple[int, int], int] | None = None
    for index, vhost in enumerate(config.virtual_hosts):
        ranks = [rank for d in vhost.domains if (rank := _domain_rank(d, host)) is not None]
        if ranks and (best is None or (min(ranks), index) < best):
            best = (min(ranks), index)
    return config.virtual_hosts[best[1]] if best is not None else None


def _match(config: Any, request: Request) -> tuple[Any, Any] | None:
    # Route tables match the Host without its port (ignore_port_in_host_matching).
    vhost = _virtual_host(config, request.host.lower().split(":", 1)[0])
    if vhost is None:
        return None
    parts = urlsplit(request.path)
    headers = {k.lower(): v for k, v in (request.headers or {}).items()}
    headers[":method"] = request.method
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for route in vhost.routes:
        if _route_matches(route.match, parts.path or "/", headers, query):
            return vhost, route
    return None


def _route_matches(
    match: Any, path: str, headers: Mapping[str, str], query: Mapping[str, str]
) -> bool:
    specifier = match.WhichOneof("path_specifier")
    if specifier == "prefix" and not path.startswith(match.prefix):
        return False
    if specifier == "path" and path != match.path:
        return False
    if specifier == "path_separated_prefix":
        prefix = match.path_separated_prefix
        if path != prefix and not path.startswith(prefix + "/"):
            return False
    if specifier == "safe_regex" and re.fullmatch(match.safe_regex.regex, path) is None:
        return False
    found = [(headers.get(h.name), h.string_match) for h in match.headers]
    found += [(query.get(q.name), q.string_match) for q in match.query_parameters]
    return all(value is not None and _string_matches(m, value) for value, m in found)


def _string_matches(matcher: Any, value: str) -> bool:
    if matcher.WhichOneof("match_pattern") == "safe_regex":
        return re.fullmatch(matcher.safe_regex.regex, value) is not None
    return bool(value == matcher.exact)


# --- Shares ----------------------------------------------------------------------------------


def _explained(
    resources: Mapping[str, Mapping[str, Any]], config: str, vhost: str, route: Any
) -> Explanation:
    action = route.WhichOneof("action")
    if action == "redirect":
        return Explanation(config, vhost, route.name, "redirect", ())
    if action == "direct_response":
        status = route.direct_response.status
        return Explanation(config, vhost, route.name, f"answered {status}", ())
    target = route.route
    if target.WhichOneof("cluster_specifier") == "cluster":
        weighted = [(target.cluster, 1)]
    else:
        weighted = [(c.name, c.weight.value) for c in target.weighted_clusters.clusters]
    total = sum(weight for _, weight in weighted) or 1
    clusters = tuple(
        ClusterShare(name, weight / total, _shares(resources[typeurls.ENDPOINT].get(name)))
        for name, weight in weighted
    )
    names = ", ".join(name for name, _ in weighted)
    return Explanation(config, vhost, route.name, f"to {names}", clusters)


def _shares(assignment: Any) -> tuple[LocalityShare, ...]:
    if assignment is None:
        return ()
    factor = (
        assignment.policy.overprovisioning_factor.value
        if assignment.policy.HasField("overprovisioning_factor")
        else DEFAULT_OVERPROVISIONING
    ) / 100
    blocks = list(assignment.endpoints)
    healthy = [
        sum(e.health_status == health_check_pb2.HEALTHY for e in b.lb_endpoints) for b in blocks
    ]
    priorities = sorted({b.priority for b in blocks})
    scenarios = [
        _scenario(blocks, healthy, factor, down=set(priorities[:k])) for k in range(len(priorities))
    ]
    return tuple(
        LocalityShare(
            member=b.locality.sub_zone,
            region=b.locality.region,
            zone=b.locality.zone,
            priority=b.priority,
            healthy=healthy[i],
            weight=b.load_balancing_weight.value,
            shares=tuple(scenario[i] for scenario in scenarios),
        )
        for i, b in enumerate(blocks)
    )


def _scenario(
    blocks: Sequence[Any], healthy: Sequence[int], factor: float, down: set[int]
) -> list[float]:
    """Each locality's share when the priorities in `down` have no healthy endpoint: Envoy
    gives each priority its health (x overprovisioning, at most 100 %) of what the priorities
    before it left, and splits a priority over its localities by weight x health."""
    health: dict[int, float] = {}
    effective: list[float] = []
    for block, count in zip(blocks, healthy, strict=True):
        total = len(block.lb_endpoints) or 1
        ratio = 0.0 if block.priority in down else min(1.0, factor * count / total)
        effective.append(block.load_balancing_weight.value * ratio)
        health.setdefault(block.priority, 0.0)
    for priority in health:
        members = [i for i, b in enumerate(blocks) if b.priority == priority]
        counted = sum(healthy[i] for i in members) if priority not in down else 0
        total = sum(len(blocks[i].lb_endpoints) for i in members) or 1
        health[priority] = min(1.0, factor * counted / total)
    load: dict[int, float] = {}
    left = 1.0
    for priority in sorted(health):
        load[priority] = min(left, health[priority])
        left -= load[priority]
    spread = sum(load.values())
    if 0 < spread < 1:
        # Too few healthy endpoints anywhere: Envoy spreads by health instead.
        load = {p: v / spread for p, v in load.items()}
    shares = []
    for i, block in enumerate(blocks):
        peers = sum(e for j, e in enumerate(effective) if blocks[j].priority == block.priority)
        shares.append(load[block.priority] * effective[i] / peers if peers else 0.0)
    return shares


# --- Presentation ----------------------------------------------------------------------------


def render(explanation: Explanation) -> Group:
    """The explanation as rich renderables: what matched, then a table per cluster."""
    parts: list[Any] = [
        Text.assemble(
            ("route ", "bold"),
            explanation.route or "(unnamed)",
            f" in {explanation.route_configuration} (virtual host {explanation.virtual_host})",
        ),
        Text.assemble(("action ", "bold"), explanation.action),
    ]
    for cluster in explanation.clusters:
        parts.append(_table(cluster))
    return Group(*parts)


def _table(cluster: ClusterShare) -> Table:
    table = Table(title=f"{cluster.cluster}: {cluster.fraction:.0%} of the route's requests")
    for column in ("member", "region", "zone"):
        table.add_column(column)
    for column in ("priority", "healthy", "weight", "share now"):
        table.add_column(column, justify="right")
    tiers = max((len(loc.shares) for loc in cluster.localities), default=1)
    for k in range(1, tiers):
        label = "if priority 0 fails" if k == 1 else f"if priorities 0-{k - 1} fail"
        table.add_column(label, justify="right")
    for loc in cluster.localities:
        table.add_row(
            loc.member,
            loc.region,
            loc.zone,
            str(loc.priority),
            str(loc.healthy),
            str(loc.weight),
            *(f"{share:.1%}" for share in loc.shares),
        )
    return table
