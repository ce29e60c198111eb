"""`xdsfleet explain`: which route a request takes, to which clusters, and what share of them
each member gets now, when whole tiers fail, and in a what-if: some members failing (`--fail`)
or drained (`--drain`).

It reads the resources `translate` serves the way Envoy does (virtual host by domain, then the
first route that matches), and spreads each cluster's requests with Envoy's own arithmetic
(`loads`: priorities, overprovisioning, panic, locality weights). So it explains what is served
rather than interpreting the documents a second time. Endpoints count as healthy when they were
sent as HEALTHY; a failed member's endpoints stay in the assignment but count as unhealthy, as
Envoy's health checks or outlier detection would find them (a zone outage: the member's API is
unreachable too, so its last endpoints are kept). A drain is translated like a real one. It
must not change anything: it only reads a fleet and prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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
from xdsfleet.tools.loads import (
    DEFAULT_OVERPROVISIONING,
    DEFAULT_PANIC_THRESHOLD,
    Loads,
    Locality,
    loads,
)
from xdsfleet.translate.drains import drained
from xdsfleet.translate.routes import gateway_ports, route_names
from xdsfleet.translate.rules import INVALID_BACKEND
from xdsfleet.translate.services import ServicePortKey, service_index
from xdsfleet.translate.snapshot import Resources, gateway_of, translation

# What happens to the share of a backendRef that does not resolve (translate/rules.py).
INVALID_SHARE = "answered 500: its backendRef does not resolve (validate says why)"
# A share below this counts as none in warnings: rounding, not traffic.
NEGLIGIBLE = 0.005


@dataclass(frozen=True, slots=True)
class Request:
    host: str
    path: str = "/"
    headers: Mapping[str, str] | None = None
    method: str = "GET"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A what-if: members whose endpoints fail Envoy's health checks, members drained."""

    failed: frozenset[str] = frozenset()
    drained: frozenset[str] = frozenset()

    def __str__(self) -> str:
        parts = [f"fail {name}" for name in sorted(self.failed)]
        parts += [f"drain {name}" for name in sorted(self.drained)]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class After:
    """A locality under the scenario. `tier` is None when the member is drained there."""

    tier: int | None
    healthy: int
    share: float


@dataclass(frozen=True, slots=True)
class LocalityShare:
    """One member's zone in a cluster. `tier` is the Envoy priority it has now (0 first), None
    when the member is drained now."""

    member: str
    region: str
    zone: str
    tier: int | None
    endpoints: int
    healthy: int
    weight: int
    # [0]: the share now; [k]: the share while tiers 0..k-1 have no healthy endpoint.
    shares: tuple[float, ...]
    after: After | None = None  # under the scenario, when one is asked about

    @property
    def drained(self) -> bool:
        return self.tier is None


@dataclass(frozen=True, slots=True)
class ClusterShare:
    cluster: str
    fraction: float  # of the route's requests
    localities: tuple[LocalityShare, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Explanation:
    route_configuration: str
    virtual_host: str
    route: str  # the Envoy route's name: the rule it comes from
    action: str
    clusters: tuple[ClusterShare, ...]
    scenario: Scenario | None = None


def explain(
    state: FleetState,
    profile: NodeProfile,
    request: Request,
    listener: str | None = None,
    scenario: Scenario | None = None,
) -> Explanation | None:
    """What happens to `request` at a client of `profile`, now and under `scenario`; None when
    no route matches. `listener` limits the search to one gateway listener (its name, or the
    port's route configuration name `NS/GATEWAY:PORT`): the listeners sharing its port share
    its routes."""
    now = _Served.of(state, profile)
    if listener is not None:
        listener = _port_name(state, profile, listener)
    for name, config in _route_configurations(now.resources, profile, listener):
        found = _match(config, request)
        if found is not None:
            host, route = found
            after = None
            if scenario is not None:
                after = _Served.of(_with_drained(state, scenario.drained), profile)
            return _explained(now, after, scenario, profile, name, host.name, route)
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
    for port in gateway_ports(gateway):
        names = route_names(gateway, port)
        if listener in names:
            return names[listener]
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


@dataclass(frozen=True, slots=True)
class _Served:
    """What a profile is served from one state, with what explaining it needs."""

    state: FleetState
    resources: Resources
    services: Mapping[str, ServicePortKey]  # cluster -> the service port it comes from
    drained: frozenset[tuple[ServicePortKey, str]]

    @classmethod
    def of(cls, state: FleetState, profile: NodeProfile) -> _Served:
        done = translation(state, profile, service_index(state))
        services = {d.cluster: key for key, found in done.destinations.items() for d in found}
        return cls(state, done.resources, services, drained(state))

    def balancing(self, cluster: str) -> _Balancing:
        """The cluster's overprovisioning factor, panic threshold and locality weighting."""
        assignment = self.resources[typeurls.ENDPOINT].get(cluster)
        built = self.resources[typeurls.CLUSTER].get(cluster)
        policy = assignment.policy if assignment is not None else None
        factor = DEFAULT_OVERPROVISIONING
        if policy is not None and policy.HasField("overprovisioning_factor"):
            factor = policy.overprovisioning_factor.value
        threshold, weighted = DEFAULT_PANIC_THRESHOLD, True
        if built is not None:
            lb = built.common_lb_config
            if lb.HasField("healthy_panic_threshold"):
                threshold = round(lb.healthy_panic_threshold.value)
            weighted = lb.HasField("locality_weighted_lb_config")
        return _Balancing(factor, threshold, weighted)


@dataclass(frozen=True, slots=True)
class _Balancing:
    overprovisioning: int
    panic_threshold: int
    locality_weighted: bool

    def loads(self, localities: Sequence[Locality]) -> Loads:
        return loads(
            localities,
            overprovisioning=self.overprovisioning,
            panic_threshold=self.panic_threshold,
            locality_weighted=self.locality_weighted,
        )


@dataclass(frozen=True, slots=True)
class _Block:
    """One locality of an assignment."""

    member: str
    region: str
    zone: str
    locality: Locality

    @property
    def key(self) -> tuple[str, str]:
        return (self.member, self.zone)


def _blocks(assignment: Any, failed: frozenset[str] = frozenset()) -> list[_Block]:
    if assignment is None:
        return []
    found = []
    for block in assignment.endpoints:
        member = block.locality.sub_zone
        statuses = [e.health_status for e in block.lb_endpoints]
        healthy = statuses.count(health_check_pb2.HEALTHY)
        locality = Locality(
            priority=block.priority,
            weight=block.load_balancing_weight.value,
            hosts=len(statuses),
            healthy=0 if member in failed else healthy,
            excluded=statuses.count(health_check_pb2.DRAINING),
        )
        found.append(_Block(member, block.locality.region, block.locality.zone, locality))
    return found


def _explained(
    now: _Served,
    after: _Served | None,
    scenario: Scenario | None,
    profile: NodeProfile,
    config: str,
    vhost: str,
    route: Any,
) -> Explanation:
    action = route.WhichOneof("action")
    if action == "redirect":
        return Explanation(config, vhost, route.name, "redirect", (), scenario)
    if action == "direct_response":
        status = route.direct_response.status
        return Explanation(config, vhost, route.name, f"answered {status}", (), scenario)
    target = route.route
    if target.WhichOneof("cluster_specifier") == "cluster":
        weighted = [(target.cluster, 1)]
    else:
        weighted = [(c.name, c.weight.value) for c in target.weighted_clusters.clusters]
    total = sum(weight for _, weight in weighted) or 1
    clusters = tuple(
        ClusterShare(name, weight / total, (), (INVALID_SHARE,))
        if name == INVALID_BACKEND
        else _cluster_share(name, weight / total, now, after, scenario, profile)
        for name, weight in weighted
    )
    names = ", ".join(name for name, _ in weighted)
    return Explanation(config, vhost, route.name, f"to {names}", clusters, scenario)


def _cluster_share(
    name: str,
    fraction: float,
    now: _Served,
    after: _Served | None,
    scenario: Scenario | None,
    profile: NodeProfile,
) -> ClusterShare:
    blocks = _blocks(now.resources[typeurls.ENDPOINT].get(name))
    balancing = now.balancing(name)
    tiers = sorted({b.locality.priority for b in blocks})
    # Tiers failing in turn: the first k tiers keep their endpoints, none of them healthy.
    by_failures = [
        balancing.loads(
            [
                replace(loc, healthy=0) if loc.priority < k else loc
                for loc in (b.locality for b in blocks)
            ]
        )
        for k in range(len(tiers) or 1)
    ]
    rows = {
        b.key: LocalityShare(
            member=b.member,
            region=b.region,
            zone=b.zone,
            tier=b.locality.priority,
            endpoints=b.locality.hosts,
            healthy=b.locality.healthy,
            weight=b.locality.weight,
            shares=tuple(found.shares[i] for found in by_failures),
        )
        for i, b in enumerate(blocks)
    }
    key = now.services.get(name)
    regions = {m.member.name: m.member.region for m in now.state.members}
    for member in sorted(m for k, m in now.drained if k == key):
        if not any(row.member == member for row in rows.values()):
            rows[member, ""] = LocalityShare(
                member, regions.get(member, ""), "", None, 0, 0, 0, tuple(0.0 for _ in by_failures)
            )
    warnings = _panic_warnings(blocks, by_failures[0], balancing, "now: ")
    if after is not None and scenario is not None:
        later = _blocks(after.resources[typeurls.ENDPOINT].get(name), scenario.failed)
        later_loads = after.balancing(name).loads([b.locality for b in later])
        outcome = {
            b.key: After(b.locality.priority, b.locality.healthy, later_loads.shares[i])
            for i, b in enumerate(later)
        }
        for row_key, row in list(rows.items()):
            rows[row_key] = replace(row, after=outcome.pop(row_key, After(None, 0, 0.0)))
        for b in later:  # a locality only the scenario serves (none today, but be exact)
            if b.key in outcome:
                rows[b.key] = LocalityShare(
                    b.member, b.region, b.zone, None, 0, 0, 0, (0.0,), outcome[b.key]
                )
        warnings = warnings + _scenario_warnings(
            name, tuple(rows.values()), later, later_loads, after.balancing(name), scenario, profile
        )
    return ClusterShare(name, fraction, tuple(rows.values()), warnings)


def _panic_warnings(
    blocks: Sequence[_Block], found: Loads, balancing: _Balancing, prefix: str
) -> tuple[str, ...]:
    if blocks and not found.served:
        return (f"{prefix}no healthy endpoint and panic mode is off: every request fails",)
    warnings = []
    for tier, panic in enumerate(found.panic):
        if not panic or not found.priority_load[tier]:
            continue
        hosts = sum(b.locality.hosts for b in blocks if b.locality.priority == tier)
        healthy = sum(b.locality.healthy for b in blocks if b.locality.priority == tier)
        warnings.append(
            f"{prefix}tier {tier} is in panic ({healthy} of {hosts} endpoints healthy, below "
            f"{balancing.panic_threshold} %): Envoy sends its {found.priority_load[tier]} % to "
            "all of its endpoints, failed ones included"
        )
    return tuple(warnings)


def _scenario_warnings(
    cluster: str,
    rows: Sequence[LocalityShare],
    later: Sequence[_Block],
    later_loads: Loads,
    balancing: _Balancing,
    scenario: Scenario,
    profile: NodeProfile,
) -> tuple[str, ...]:
    warnings = list(_panic_warnings(later, later_loads, balancing, f"{scenario}: "))
    # Spill: traffic to localities that serve nothing today (a lower tier taking over).
    spilled: dict[int, list[LocalityShare]] = {}
    for row in rows:
        if row.after is None or row.tier is None:
            continue
        if row.shares[0] < NEGLIGIBLE and row.after.share >= NEGLIGIBLE:
            spilled.setdefault(row.tier, []).append(row)
    for tier, spilling in sorted(spilled.items()):
        total = sum(row.after.share for row in spilling if row.after is not None)
        who = ", ".join(_who(row) for row in spilling)
        warnings.append(
            f"{scenario}: {total:.0%} of {cluster}'s requests spill into tier {tier} ({who})"
        )
    # Another region: more traffic than today to regions other than the client's (or, for a
    # client that gives none, than those serving today).
    home = {profile.region} if profile.region else {r.region for r in rows if r.shares[0] > 0}
    grown: dict[str, list[LocalityShare]] = {}
    for row in rows:
        if row.after is None or row.region in home:
            continue
        if row.after.share - row.shares[0] >= NEGLIGIBLE:
            grown.setdefault(row.region, []).append(row)
    for region, growing in sorted(grown.items()):
        total = sum(row.after.share for row in growing if row.after is not None)
        who = ", ".join(_who(row) for row in growing)
        warnings.append(
            f"{scenario}: {total:.0%} of {cluster}'s requests go to region {region} ({who})"
        )
    return tuple(warnings)


def _who(row: LocalityShare) -> str:
    share = row.after.share if row.after is not None else 0.0
    return f"{row.member} {share:.0%}"


def _with_drained(state: FleetState, members: frozenset[str]) -> FleetState:
    """The state with `members` drained from every service, as `drain: true` on the Fleet's
    members does it."""
    if not members:
        return state
    return replace(
        state,
        members=tuple(
            replace(m, member=replace(m.member, drain=True)) if m.member.name in members else m
            for m in state.members
        ),
    )


# --- Presentation ----------------------------------------------------------------------------


def render_explanation(explanation: Explanation) -> Group:
    """The explanation as rich renderables: what matched, then a table per cluster with its
    warnings."""
    parts: list[Any] = [
        Text.assemble(
            ("route ", "bold"),
            explanation.route or "(unnamed)",
            f" in {explanation.route_configuration} (virtual host {explanation.virtual_host})",
        ),
        Text.assemble(("action ", "bold"), explanation.action),
    ]
    for cluster in explanation.clusters:
        parts.append(_table(cluster, explanation.scenario))
        parts.extend(Text.assemble(("warning ", "bold yellow"), w) for w in cluster.warnings)
    return Group(*parts)


def _table(cluster: ClusterShare, scenario: Scenario | None) -> Table:
    table = Table(title=f"{cluster.cluster}: {cluster.fraction:.0%} of the route's requests")
    for column in ("member", "region", "zone"):
        table.add_column(column)
    for column in ("tier", "healthy", "weight", "share now"):
        table.add_column(column, justify="right")
    if scenario is not None:
        table.add_column(f"if {scenario}", justify="right")
    else:
        tiers = max((len(loc.shares) for loc in cluster.localities), default=1)
        for k in range(1, tiers):
            label = "if tier 0 fails" if k == 1 else f"if tiers 0-{k - 1} fail"
            table.add_column(label, justify="right")
    for loc in cluster.localities:
        if loc.drained:
            cells = [loc.member, loc.region, loc.zone, "drained", "", "", "drained"]
        else:
            cells = [
                loc.member,
                loc.region,
                loc.zone,
                str(loc.tier),
                f"{loc.healthy}/{loc.endpoints}",
                str(loc.weight),
                f"{loc.shares[0]:.1%}",
            ]
        if scenario is not None:
            cells.append(_after_cell(loc))
        elif not loc.drained:
            cells.extend(f"{share:.1%}" for share in loc.shares[1:])
        table.add_row(*cells)
    return table


def _after_cell(loc: LocalityShare) -> str:
    after = loc.after
    if after is None or after.tier is None:
        return "drained"
    moved = f" (tier {after.tier})" if after.tier != loc.tier else ""
    failed = " failed" if after.healthy == 0 and loc.endpoints else ""
    return f"{after.share:.1%}{failed}{moved}"
