"""What a route rule does, as plain values: the clusters it sends to (pinned or not), and how it
retries, hashes, times out and edits requests.

Gateway API (HTTPRoute and GRPCRoute rules) and the TrafficPolicies on a rule and on its
services meet here; the most specific says most: the rule's policy, then the rule itself, then
the service's policy, then the defaults (docs/policy.md). `routes` turns the result into Envoy
messages. Nothing here builds messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from xdsfleet.model.attachment import GATEWAY_GROUP, SERVICE_KINDS
from xdsfleet.model.fleet import (
    CORS,
    BackendRef,
    GrantFrom,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteMatch,
    HeaderModifier,
    HTTPRoute,
    PathMatch,
    PathMatchType,
    RequestRedirect,
    RouteMatch,
    RouteRule,
    URLRewrite,
    ValueMatchType,
)
from xdsfleet.model.policy import (
    ConsistentHash,
    Cookie,
    PolicyIndex,
    PolicySpec,
    Retry,
    TargetKind,
)
from xdsfleet.translate.names import pinned_cluster_name
from xdsfleet.translate.services import ServiceIndex, ServicePortKey

# The cluster name an invalid backendRef's share goes to. No cluster has it (real ones are
# `NS/SVC:PORT`), and routes answer a missing cluster with 500: Gateway API's answer for the
# requests of a backend that does not resolve, while the valid backends keep theirs.
INVALID_BACKEND = "invalid-backend-ref"
# Whether an object may refer to another namespace's object: (from, group, kind, namespace,
# name) -> permitted (FleetState.permits: ReferenceGrants).
Permits = Callable[[GrantFrom, str, str, str, str], bool]


# Retries on another host and another priority (docs/failover.md): connections that fail or are
# reset, streams refused, gRPC's unavailable and cancelled, and 503. `reset` also covers a try
# that hits its per-try timeout: without it Envoy would not hedge a try to a hung host.
DEFAULT_RETRY_ON = (
    "connect-failure",
    "refused-stream",
    "reset",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)
# A try that has no response headers after this long is hedged: another try goes to another host
# (and tier) while the first keeps going, and the first answer wins. A hung host (it accepts
# connections and never answers) then costs a request this much, not the route timeout, and
# outlier detection counts each such timeout against the host. Slow but live backends still
# answer (hedging never cancels); services whose normal answers take longer set
# `retry.perTryTimeout` (docs/failover.md).
DEFAULT_PER_TRY_TIMEOUT_MS = 250
RETRIABLE_STATUS_CODES = "retriable-status-codes"
PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """A retry policy with every default filled in."""

    attempts: int = 2
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    codes: tuple[int, ...] = (503,)
    per_try_timeout_ms: int | None = DEFAULT_PER_TRY_TIMEOUT_MS  # None or 0: no per-try timeout
    backoff_base_ms: int | None = None
    backoff_max_ms: int | None = None
    other_host: bool = True
    other_priority: bool = True
    hedge: bool = True  # on a per-try timeout, keep the try going and race another

    def overlaid(self, retry: Retry | None) -> RetrySettings:
        """These settings with what `retry` sets replacing them."""
        if retry is None:
            return self
        given = {
            "attempts": retry.attempts,
            "retry_on": retry.retry_on or None,
            "codes": retry.codes or None,
            "per_try_timeout_ms": retry.per_try_timeout_ms,
            "backoff_base_ms": retry.backoff_base_ms,
            "backoff_max_ms": retry.backoff_max_ms,
            "other_host": retry.other_host,
            "other_priority": retry.other_priority,
            "hedge": retry.hedge,
        }
        return replace(self, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


DEFAULT_RETRY = RetrySettings()


@dataclass(frozen=True, slots=True)
class Destination:
    """A cluster a rule sends to: a service port, pinned to some members or not."""

    key: ServicePortKey
    pinned: tuple[str, ...] = ()  # sorted

    @property
    def cluster(self) -> str:
        cluster = self.key.cluster
        return pinned_cluster_name(cluster, self.pinned) if self.pinned else cluster


@dataclass(frozen=True, slots=True)
class Backend:
    """A weighted cluster of a rule, with the header edits of its own backendRef filters."""

    cluster: str
    weight: int
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None

    @property
    def invalid(self) -> bool:
        return self.cluster == INVALID_BACKEND


@dataclass(frozen=True, slots=True)
class Action:
    """Everything a rule does to a request but match it."""

    # None, or only invalid ones: every request is answered 500.
    backends: tuple[Backend, ...] = ()
    retry: RetrySettings | None = DEFAULT_RETRY
    timeout_ms: int | None = None
    hash: ConsistentHash | None = None
    session_cookie: Cookie | None = None
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    mirrors: tuple[tuple[str, int], ...] = ()  # (cluster, parts per million mirrored)
    redirect: RequestRedirect | None = None
    rewrite: URLRewrite | None = None
    cors: CORS | None = None
    # Where the listener of the route listens: a redirect that changes nothing but the path
    # keeps it (Gateway API, RequestRedirect port).
    listener_port: int | None = None
    # Answer every request with this status instead (421 for a misdirected request).
    answer: int | None = None


@dataclass(frozen=True, slots=True)
class RoutePlan:
    match: RouteMatch
    action: Action
    # Where it comes from, as `HTTPRoute NS/NAME rules[R].matches[M]`: Envoy shows route names
    # in its logs, and `xdsfleet explain` names the rule that matched.
    name: str = ""


@dataclass(frozen=True, slots=True)
class VirtualHostPlan:
    name: str
    domains: tuple[str, ...]
    routes: tuple[RoutePlan, ...]


@dataclass(slots=True)
class Planner:
    """Plans rules against one fleet state; remembers every cluster the plans use."""

    services: ServiceIndex
    policies: PolicyIndex
    members: frozenset[str]
    permits: Permits
    used: set[Destination] = field(default_factory=set)

    def resolve(self, kind: TargetKind, namespace: str, ref: BackendRef) -> ServicePortKey | None:
        """The service port a backendRef of a `kind` route in `namespace` sends to, or None
        when it does not resolve: a kind we cannot send to, a namespace that grants no
        reference, a service port no member exports."""
        if (ref.group, ref.kind) not in SERVICE_KINDS:
            return None
        source = GrantFrom(GATEWAY_GROUP, str(kind), namespace)
        if not self.permits(source, ref.group, ref.kind, ref.namespace, ref.name):
            return None
        key = ServicePortKey(ref.namespace, ref.name, ref.port)
        return key if key in self.services else None

    def rule(self, kind: TargetKind, namespace: str, route: str, rule: RouteRule) -> Action:
        spec = self.policies.rule(kind, namespace, route, rule.name)
        pinned = tuple(
            sorted(m for m in (spec.pin.members if spec.pin else ()) if m in self.members)
        )
        # Gateway API: an unresolved backendRef keeps its weight, and its share of the
        # requests is answered 500; the others keep theirs.
        backends: dict[tuple[str, HeaderModifier | None, HeaderModifier | None], int] = {}
        destinations: list[Destination] = []
        for ref in rule.backend_refs:
            if ref.weight <= 0:
                continue
            resolved = self.resolve(kind, namespace, ref)
            cluster = INVALID_BACKEND
            if resolved is not None:
                destination = Destination(resolved, pinned)
                destinations.append(destination)
                cluster = destination.cluster
            edits = (cluster, ref.request_headers, ref.response_headers)
            backends[edits] = backends.get(edits, 0) + ref.weight
        self.used.update(destinations)
        first = destinations[0] if destinations else None
        service_spec = self._service_spec(first.key) if first is not None else None
        retry = DEFAULT_RETRY.overlaid(service_spec.retry if service_spec else None)
        retry = _overlay_gateway_api(retry, rule)
        retry = retry.overlaid(spec.retry)
        session = service_spec.session_persistence if service_spec else None
        filters = rule.filters
        return Action(
            backends=tuple(Backend(c, w, req, resp) for (c, req, resp), w in backends.items()),
            retry=retry if retry.attempts else None,
            timeout_ms=rule.timeouts.request_ms if rule.timeouts else None,
            hash=session.consistent_hash if session else None,
            session_cookie=session.cookie if session else None,
            request_headers=filters.request_headers,
            response_headers=filters.response_headers,
            mirrors=self._mirrors(kind, namespace, rule),
            redirect=filters.redirect,
            rewrite=filters.rewrite,
            cors=filters.cors,
        )

    def service(self, key: ServicePortKey) -> Action:
        """A plain route to every member of a service port (what sidecars use)."""
        spec = self._service_spec(key)
        self.used.add(Destination(key))
        retry = DEFAULT_RETRY.overlaid(spec.retry)
        session = spec.session_persistence
        return Action(
            backends=(Backend(key.cluster, 1),),
            retry=retry if retry.attempts else None,
            hash=session.consistent_hash if session else None,
            session_cookie=session.cookie if session else None,
        )

    def _service_spec(self, key: ServicePortKey) -> PolicySpec:
        port_name = self.services[key].port_name
        return self.policies.service(key.namespace, key.service, port_name)

    def _mirrors(
        self, kind: TargetKind, namespace: str, rule: RouteRule
    ) -> tuple[tuple[str, int], ...]:
        mirrors = []
        for mirror in rule.filters.mirrors:
            key = self.resolve(kind, namespace, mirror.backend)
            if key is not None and mirror.numerator > 0:
                self.used.add(Destination(key))
                mirrors.append((key.cluster, PER_MILLION * mirror.numerator // mirror.denominator))
        return tuple(mirrors)


def _overlay_gateway_api(retry: RetrySettings, rule: RouteRule) -> RetrySettings:
    """Gateway API's `retry` and `timeouts.backendRequest` of the rule itself."""
    if rule.retry is not None:
        if rule.retry.codes:
            on = retry.retry_on
            on = on if RETRIABLE_STATUS_CODES in on else (*on, RETRIABLE_STATUS_CODES)
            retry = replace(retry, retry_on=on, codes=rule.retry.codes)
        if rule.retry.attempts is not None:
            retry = replace(retry, attempts=rule.retry.attempts)
        if rule.retry.backoff_ms is not None:
            retry = replace(retry, backoff_base_ms=rule.retry.backoff_ms)
    if rule.timeouts is not None and rule.timeouts.backend_request_ms:
        # A bound on each request to a backend (Gateway API: exceeded, the client gets 504):
        # the try is cancelled, not hedged (a hedged try would still answer, late).
        retry = replace(retry, per_try_timeout_ms=rule.timeouts.backend_request_ms, hedge=False)
    return retry


# --- GRPCRoute -------------------------------------------------------------------------------


def grpc_rules(route: GRPCRoute) -> tuple[RouteRule, ...]:
    """A GRPCRoute's rules as HTTP rules: a gRPC method is the path `/SERVICE/METHOD`."""
    return tuple(
        RouteRule(
            matches=tuple(_grpc_match(m) for m in rule.matches),
            backend_refs=rule.backend_refs,
            name=rule.name,
            filters=rule.filters,
        )
        for rule in route.rules
    )


def _grpc_match(match: GRPCRouteMatch) -> RouteMatch:
    return RouteMatch(path=_grpc_path(match.method), headers=match.headers)


def _grpc_path(method: GRPCMethodMatch | None) -> PathMatch:
    if method is None:
        return PathMatch()
    if method.type is ValueMatchType.REGULAR_EXPRESSION or method.service is None:
        service = method.service or "[^/]+"
        name = method.method or "[^/]+"
        return PathMatch(PathMatchType.REGULAR_EXPRESSION, f"/{service}/{name}")
    if method.method is None:
        return PathMatch(PathMatchType.PATH_PREFIX, f"/{method.service}")
    return PathMatch(PathMatchType.EXACT, f"/{method.service}/{method.method}")


def as_http_route(route: GRPCRoute) -> HTTPRoute:
    return HTTPRoute(
        route.namespace, route.name, route.parent_refs, route.hostnames, grpc_rules(route)
    )
