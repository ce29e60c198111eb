"""TrafficPolicy: what Gateway API and the Multi-Cluster Services API cannot say about how traffic
spreads over members, and which policy applies where.

A policy attaches the Gateway API way (GEP-713): `targetRefs` name objects in the policy's own
namespace, optionally one section of them (a Service port, a route rule, a Gateway listener).
What a policy may set depends on the level of what it targets (`Level`); `PolicyIndex` finds the
policies that apply to one service port, route rule, listener or the whole fleet and merges them,
field by field, the more specific target first (docs/policy.md).

Values are what the user wrote: None means "the default", and the defaults live in translation,
which is the one place that knows Envoy. Durations are in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum


class TargetKind(StrEnum):
    SERVICE = "Service"
    SERVICE_IMPORT = "ServiceImport"
    HTTP_ROUTE = "HTTPRoute"
    GRPC_ROUTE = "GRPCRoute"
    GATEWAY = "Gateway"
    FLEET = "Fleet"


class Level(StrEnum):
    """What a policy is about, from the kind of its targets; each level has its own fields."""

    SERVICE = "a Service or ServiceImport"
    ROUTE = "an HTTPRoute or GRPCRoute"
    LISTENER = "a Gateway"
    FLEET = "the Fleet"


LEVELS = {
    TargetKind.SERVICE: Level.SERVICE,
    # A ServiceImport is the service across its exporting members: the same thing here.
    TargetKind.SERVICE_IMPORT: Level.SERVICE,
    TargetKind.HTTP_ROUTE: Level.ROUTE,
    TargetKind.GRPC_ROUTE: Level.ROUTE,
    TargetKind.GATEWAY: Level.LISTENER,
    TargetKind.FLEET: Level.FLEET,
}


@dataclass(frozen=True, slots=True)
class PolicyTarget:
    """A `targetRefs` entry. `section_name` is a Service port name, a route rule name or a
    Gateway listener name; None targets the whole object."""

    kind: TargetKind
    name: str
    section_name: str | None = None


@dataclass(frozen=True, slots=True)
class MemberPolicy:
    """One member's part in a service: its share of its tier, or drained."""

    name: str
    weight: int | None = None
    drain: bool = False


@dataclass(frozen=True, slots=True)
class Failover:
    """Tiers: explicit (member names, first tier preferred) or, when empty, by topology
    (same member or zone, same region, elsewhere: docs/architecture.md, "Localities and tiers")."""

    tiers: tuple[tuple[str, ...], ...] = ()
    overprovisioning_factor: int | None = None  # percent; Envoy's default is 140
    panic_threshold: int | None = None  # percent; Envoy's default is 50


class Balancer(StrEnum):
    ROUND_ROBIN = "RoundRobin"
    LEAST_REQUEST = "LeastRequest"
    RANDOM = "Random"


@dataclass(frozen=True, slots=True)
class SlowStart:
    window_ms: int
    aggression: float = 1.0
    min_weight_percent: int = 10


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    type: Balancer | None = None
    slow_start: SlowStart | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    enabled: bool = True
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    interval_ms: int | None = None
    base_ejection_time_ms: int | None = None
    max_ejection_percent: int | None = None


class HealthCheckType(StrEnum):
    HTTP = "HTTP"
    GRPC = "GRPC"
    TCP = "TCP"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: HealthCheckType
    path: str | None = None  # HTTP
    host: str | None = None  # HTTP: the Host header sent
    grpc_service: str | None = None  # GRPC: the service name asked about
    port: int | None = None  # another port than the endpoint's
    interval_ms: int | None = None
    timeout_ms: int | None = None
    healthy_threshold: int | None = None
    unhealthy_threshold: int | None = None
    expected_statuses: tuple[int, ...] = ()  # HTTP
    enabled: bool = True  # False: no health check at all, not even a gateway's default probe


@dataclass(frozen=True, slots=True)
class RetryBudget:
    percent: int
    min_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int | None = None
    per_try_timeout_ms: int | None = None  # 0: no per-try timeout
    retry_on: tuple[str, ...] = ()
    codes: tuple[int, ...] = ()
    backoff_base_ms: int | None = None
    backoff_max_ms: int | None = None
    other_host: bool | None = None
    other_priority: bool | None = None
    hedge: bool | None = None  # on a per-try timeout, race another try instead of cancelling
    # Service level only: it bounds the cluster's concurrent retries.
    budget: RetryBudget | None = None


class HashAlgorithm(StrEnum):
    RING_HASH = "RingHash"
    MAGLEV = "Maglev"


@dataclass(frozen=True, slots=True)
class Cookie:
    name: str
    ttl_ms: int | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """Exactly one of `header`, `cookie` and `source_ip` is the hash key."""

    header: str | None = None
    cookie: Cookie | None = None
    source_ip: bool = False
    algorithm: HashAlgorithm = HashAlgorithm.RING_HASH


@dataclass(frozen=True, slots=True)
class SessionPersistence:
    """Exactly one: a consistent hash of the request, or Envoy's stateful-session cookie, which
    names the endpoint that served the session's first request."""

    consistent_hash: ConsistentHash | None = None
    cookie: Cookie | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None


@dataclass(frozen=True, slots=True)
class Pin:
    """Send a route rule's requests to these members first; the others remain a fallback."""

    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Http3:
    early_data: bool = True  # accept 0-RTT requests


class AccessLogFormat(StrEnum):
    JSON = "JSON"  # one JSON object per request (the default on gateway listeners)
    TEXT = "Text"  # Envoy's default text line
    OFF = "Off"


@dataclass(frozen=True, slots=True)
class AccessLog:
    """The access log a gateway listener writes to Envoy's stdout."""

    format: AccessLogFormat = AccessLogFormat.JSON


@dataclass(frozen=True, slots=True)
class Tracing:
    """OpenTelemetry traces of a gateway listener's requests, sent over OTLP/gRPC to the
    collector Service `namespace/name:port` of the fleet, for `sampling_percent` of them."""

    collector: str
    namespace: str
    port: int
    sampling_percent: float = 1.0


@dataclass(frozen=True, slots=True)
class SidecarScope:
    """The services sidecars get outbound listeners for, as (namespace, name)."""

    services: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy's settings; a field left None (or empty) leaves the matter to a less specific
    policy or to the default."""

    members: tuple[MemberPolicy, ...] = ()
    failover: Failover | None = None
    load_balancer: LoadBalancer | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    retry: Retry | None = None
    session_persistence: SessionPersistence | None = None
    connection_pool: ConnectionPool | None = None
    pin: Pin | None = None
    http3: Http3 | None = None
    sidecar: SidecarScope | None = None
    access_log: AccessLog | None = None
    tracing: Tracing | None = None

    def set_fields(self) -> Iterator[str]:
        """The names of the fields this spec sets."""
        for spec_field in dataclasses.fields(self):
            value = getattr(self, spec_field.name)
            if value is not None and value != ():
                yield spec_field.name

    def member(self, name: str) -> MemberPolicy | None:
        return next((m for m in self.members if m.name == name), None)


# The fields of PolicySpec each level may set (docs/policy.md, "What a policy targets").
LEVEL_FIELDS = {
    Level.SERVICE: frozenset(
        {
            "members",
            "failover",
            "load_balancer",
            "outlier_detection",
            "health_check",
            "retry",
            "session_persistence",
            "connection_pool",
        }
    ),
    Level.ROUTE: frozenset({"pin", "retry"}),
    Level.LISTENER: frozenset({"http3", "access_log", "tracing"}),
    # `members` of a Fleet policy drain members from every service (drain only).
    Level.FLEET: frozenset({"sidecar", "members"}),
}

EMPTY = PolicySpec()


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    namespace: str
    name: str
    targets: tuple[PolicyTarget, ...]
    spec: PolicySpec

    @property
    def level(self) -> Level | None:
        """The level of its targets (the parser makes sure they share one)."""
        return LEVELS[self.targets[0].kind] if self.targets else None


# --- Attachment ------------------------------------------------------------------------------

# Where a policy attaches: (level, namespace, object name). Route rules also key on the route
# kind, since an HTTPRoute and a GRPCRoute may share a name.
_Key = tuple[Level, str, str, str]


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two policies setting the same field at the same target; `winner` is the one applied."""

    loser: TrafficPolicy
    winner: TrafficPolicy
    target: PolicyTarget
    field: str


def _object_key(policy: TrafficPolicy, target: PolicyTarget) -> _Key:
    kind = target.kind.value if LEVELS[target.kind] is Level.ROUTE else ""
    namespace = "" if target.kind is TargetKind.FLEET else policy.namespace
    return (LEVELS[target.kind], kind, namespace, target.name)


class PolicyIndex:
    """The policies of one fleet state by what they attach to. Among policies at the same
    target, the first by (namespace, name) wins each field it sets (Gateway API breaks such
    ties by age, which files do not have, then by name)."""

    def __init__(self, policies: Iterable[TrafficPolicy]) -> None:
        # object key -> section (None = whole object) -> policies, in precedence order
        self._attached: dict[_Key, dict[str | None, list[TrafficPolicy]]] = {}
        for policy in sorted(policies, key=lambda p: (p.namespace, p.name)):
            for target in policy.targets:
                sections = self._attached.setdefault(_object_key(policy, target), {})
                attached = sections.setdefault(target.section_name, [])
                if policy not in attached:
                    attached.append(policy)
        self._merged: dict[tuple[_Key, str | None], PolicySpec] = {}

    def _spec(self, key: _Key, section: str | None) -> PolicySpec:
        cached = self._merged.get((key, section))
        if cached is not None:
            return cached
        sections = self._attached.get(key, {})
        # Most preferred first: the section's own policies, then the whole object's.
        ranked = [*sections.get(section, []), *(sections.get(None, []) if section else [])]
        values: dict[str, object] = {}
        for policy in ranked:
            for name in policy.spec.set_fields():
                values.setdefault(name, getattr(policy.spec, name))
        merged = PolicySpec(**values) if values else EMPTY  # type: ignore[arg-type]
        self._merged[(key, section)] = merged
        return merged

    def service(self, namespace: str, service: str, port_name: str) -> PolicySpec:
        """What applies to one port of a multi-cluster service (by the Service port's name)."""
        return self._spec((Level.SERVICE, "", namespace, service), port_name or None)

    def rule(self, kind: TargetKind, namespace: str, route: str, rule: str | None) -> PolicySpec:
        """What applies to one rule of an HTTPRoute or GRPCRoute (by the rule's name)."""
        return self._spec((Level.ROUTE, kind.value, namespace, route), rule)

    def listener(self, namespace: str, gateway: str, listener: str) -> PolicySpec:
        return self._spec((Level.LISTENER, "", namespace, gateway), listener)

    def fleet(self, name: str) -> PolicySpec:
        """What applies to the whole fleet (a policy targeting the Fleet `name`)."""
        return self._spec((Level.FLEET, "", "", name), None)

    def conflicts(self) -> list[Conflict]:
        """Each field a policy sets that another, preferred policy at the same target sets too."""
        found = []
        for key, sections in self._attached.items():
            for section, attached in sections.items():
                owners: dict[str, TrafficPolicy] = {}
                for policy in attached:
                    target = PolicyTarget(_kind_of(key, policy), key[3], section)
                    for name in policy.spec.set_fields():
                        winner = owners.setdefault(name, policy)
                        if winner is not policy:
                            found.append(Conflict(policy, winner, target, name))
        return found


def _kind_of(key: _Key, policy: TrafficPolicy) -> TargetKind:
    """The kind `policy` used to reach `key` (Service and ServiceImport share one key)."""
    return next(t.kind for t in policy.targets if _object_key(policy, t) == key)
