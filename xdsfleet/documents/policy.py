"""TrafficPolicy documents (xdsfleet.io/v1alpha1): the parser behind docs/policy.md.

Everything a policy says about itself is checked here, so that a broken policy is rejected alone
and its last good version keeps serving: unknown fields, types and ranges, targets of mixed
levels, settings that do not fit the level targeted, impossible tiers, and settings that
contradict each other. What it refers to (services, members, routes) is checked across
documents by `references`. Like every parser here it does no I/O and knows nothing of Envoy.
"""

from __future__ import annotations

from xdsfleet.documents.reading import (
    DNS_1035_LABEL,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    FLEET_GROUP,
    GATEWAY_GROUP,
    HOSTNAME,
    HTTP_TOKEN,
    MAX_PORT,
    MCS_GROUP,
    Map,
    did_you_mean,
    flag_repeats,
    metadata,
)
from xdsfleet.model.policy import (
    LEVEL_FIELDS,
    LEVELS,
    AccessLog,
    AccessLogFormat,
    Balancer,
    ConnectionPool,
    ConsistentHash,
    Cookie,
    Failover,
    HashAlgorithm,
    HealthCheck,
    HealthCheckType,
    Http3,
    Level,
    LoadBalancer,
    MemberPolicy,
    OutlierDetection,
    Pin,
    PolicySpec,
    PolicyTarget,
    Retry,
    RetryBudget,
    SessionPersistence,
    SidecarScope,
    SlowStart,
    TargetKind,
    Tracing,
    TrafficPolicy,
)

TARGET_GROUPS = {
    TargetKind.SERVICE: "",
    TargetKind.SERVICE_IMPORT: MCS_GROUP,
    TargetKind.HTTP_ROUTE: GATEWAY_GROUP,
    TargetKind.GRPC_ROUTE: GATEWAY_GROUP,
    TargetKind.GATEWAY: GATEWAY_GROUP,
    TargetKind.FLEET: FLEET_GROUP,
}
# YAML key -> PolicySpec field.
SPEC_FIELDS = {
    "members": "members",
    "failover": "failover",
    "loadBalancer": "load_balancer",
    "outlierDetection": "outlier_detection",
    "healthCheck": "health_check",
    "retry": "retry",
    "sessionPersistence": "session_persistence",
    "connectionPool": "connection_pool",
    "pin": "pin",
    "http3": "http3",
    "sidecar": "sidecar",
    "accessLog": "access_log",
    "tracing": "tracing",
}
# Envoy's retry conditions (x-envoy-retry-on and x-envoy-retry-grpc-on).
RETRY_ON = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)
MAX_TARGETS = 16
# Share weights: small enough that a locality's weight (share x 100) stays far below uint32.
MAX_SHARE = 10_000
MAX_COUNT = 1_000_000
MAX_LIMIT = 2**31 - 1


# --- Targets ---------------------------------------------------------------------------------


def _target(entry: Map) -> PolicyTarget | None:
    kinds = [k.value for k in TargetKind]
    kind_name = entry.required_text("kind")
    if kind_name and kind_name not in kinds:
        hint = did_you_mean(kind_name, kinds)
        entry.problem("kind", f"must be one of {', '.join(kinds)}; got {kind_name!r}{hint}")
        return None
    if not kind_name:
        return None
    kind = TargetKind(kind_name)
    group = entry.text("group", "")
    if group != TARGET_GROUPS[kind]:
        entry.problem("group", f"kind {kind} needs group {TARGET_GROUPS[kind]!r}; got {group!r}")
    rule = DNS_1035_LABEL if LEVELS[kind] is Level.SERVICE else DNS_SUBDOMAIN
    name = entry.name("name", rule)
    section = entry.optional_name("sectionName", DNS_SUBDOMAIN)
    if section is not None and kind is TargetKind.FLEET:
        entry.problem("sectionName", "a Fleet has no sections")
    return PolicyTarget(kind, name, section)


def _targets(spec: Map) -> tuple[tuple[PolicyTarget, ...], Level | None]:
    entries = spec.mappings(
        "targetRefs", ("group", "kind", "name", "sectionName"), required=True, non_empty=True
    )
    if len(entries) > MAX_TARGETS:
        spec.problem("targetRefs", f"at most {MAX_TARGETS} targets; got {len(entries)}")
    found = [_target(entry) for entry in entries]
    level = None
    for entry, target in zip(entries, found, strict=True):
        if target is None:
            continue
        if level is None:
            level = LEVELS[target.kind]
        elif LEVELS[target.kind] is not level:
            entry.problem("kind", f"all targets of a policy must be {level}; this is {target.kind}")
    described = [
        f"{t.kind} {t.name}" + (f" section {t.section_name}" if t.section_name else "")
        if t is not None
        else None
        for t in found
    ]
    flag_repeats(spec, "targetRefs", "", described, "target")
    return tuple(t for t in found if t is not None), level


# --- Service-level settings ------------------------------------------------------------------


def _members(spec: Map, level: Level | None) -> tuple[MemberPolicy, ...]:
    entries = spec.mappings("members", ("name", "weight", "drain"), non_empty=True)
    for entry in entries:
        if level is Level.FLEET and entry.has("weight"):
            # A Fleet policy drains members from every service; shares stay per service.
            entry.problem(
                "weight",
                "not for a policy that targets the Fleet (use the Fleet "
                "member's weight, or a policy per service)",
            )
    members = tuple(
        MemberPolicy(
            name=entry.name("name", DNS_LABEL),
            weight=entry.number("weight", 0, MAX_SHARE) if level is not Level.FLEET else None,
            drain=entry.flag("drain", False),
        )
        for entry in entries
    )
    flag_repeats(spec, "members", "name", [m.name for m in members], "member")
    return members


def _failover(spec: Map) -> Failover:
    entry = spec.mapping("failover", ("tiers", "overprovisioningFactor", "panicThreshold"))
    tiers = []
    seen: dict[str, int] = {}
    for t, tier in enumerate(entry.mappings("tiers", ("members",), non_empty=True)):
        names = tier.strings("members", required=True)
        for i, name in enumerate(names):
            if not DNS_LABEL.accepts(name):
                tier.problem(f"members[{i}]", f"{name!r} is not {DNS_LABEL.description}")
            elif name in seen:
                # A member in two tiers has no place: the failover order would be undefined.
                tier.problem(f"members[{i}]", f"member {name} is already in tier {seen[name]}")
            else:
                seen[name] = t
        tiers.append(tuple(names))
    return Failover(
        tiers=tuple(tiers),
        # Below 100 a fully healthy tier would already spill traffic to the next one.
        overprovisioning_factor=entry.number("overprovisioningFactor", 100, 1000),
        panic_threshold=entry.number("panicThreshold", 0, 100),
    )


def _load_balancer(spec: Map) -> LoadBalancer:
    entry = spec.mapping("loadBalancer", ("type", "slowStart"))
    kinds = [b.value for b in Balancer]
    kind = (
        Balancer(entry.choice("type", kinds, Balancer.ROUND_ROBIN)) if entry.has("type") else None
    )
    slow_start = None
    if entry.has("slowStart"):
        ramp = entry.mapping("slowStart", ("window", "aggression", "minWeightPercent"))
        slow_start = SlowStart(
            window_ms=ramp.duration("window", positive=True) or 0,
            aggression=ramp.decimal("aggression", 0.1, 10) or 1.0,
            min_weight_percent=ramp.number("minWeightPercent", 0, 100, 10),
        )
        if not ramp.has("window"):
            ramp.problem("window", "missing required field")
        if kind is Balancer.RANDOM:
            entry.problem("slowStart", "needs type RoundRobin or LeastRequest")
    return LoadBalancer(kind, slow_start)


def _outlier_detection(spec: Map) -> OutlierDetection:
    fields = (
        "enabled",
        "consecutive5xx",
        "consecutiveGatewayErrors",
        "consecutiveLocalOriginFailures",
        "interval",
        "baseEjectionTime",
        "maxEjectionPercent",
    )
    entry = spec.mapping("outlierDetection", fields)
    return OutlierDetection(
        enabled=entry.flag("enabled", True),
        consecutive_5xx=entry.number("consecutive5xx", 0, MAX_COUNT),
        consecutive_gateway_errors=entry.number("consecutiveGatewayErrors", 0, MAX_COUNT),
        consecutive_local_origin_failures=entry.number(
            "consecutiveLocalOriginFailures", 0, MAX_COUNT
        ),
        interval_ms=entry.duration("interval", positive=True),
        base_ejection_time_ms=entry.duration("baseEjectionTime", positive=True),
        max_ejection_percent=entry.number("maxEjectionPercent", 0, 100),
    )


# HealthCheck fields that only one type uses.
_CHECK_ONLY = {
    "path": HealthCheckType.HTTP,
    "host": HealthCheckType.HTTP,
    "expectedStatuses": HealthCheckType.HTTP,
    "grpcService": HealthCheckType.GRPC,
}


def _health_check(spec: Map) -> HealthCheck:
    fields = (
        "enabled",
        "type",
        "path",
        "host",
        "grpcService",
        "port",
        "interval",
        "timeout",
        "healthyThreshold",
        "unhealthyThreshold",
        "expectedStatuses",
    )
    entry = spec.mapping("healthCheck", fields)
    kinds = [k.value for k in HealthCheckType]
    given = entry.text("type")
    kind = HealthCheckType(entry.choice("type", kinds, HealthCheckType.TCP))
    enabled = entry.flag("enabled", True)
    if not enabled:
        # Off: gateways' default probe too (docs/failover.md); nothing else may be said.
        for key in fields[1:]:
            if entry.has(key):
                entry.problem(key, "not with enabled: false")
        return HealthCheck(kind, enabled=False)
    if given is None:
        entry.problem("type", "missing required field")
    elif given == kind:
        # Only a known type says which of the other fields belong.
        for key, only in _CHECK_ONLY.items():
            if entry.has(key) and kind is not only:
                entry.problem(key, f"only for type {only}")
        if kind is HealthCheckType.HTTP and not entry.has("path"):
            entry.problem("path", "missing required field (type HTTP)")
    path = entry.text("path")
    if path is not None and not path.startswith("/"):
        entry.problem("path", "must start with '/'")
    return HealthCheck(
        type=kind,
        path=path,
        host=entry.optional_name("host", HOSTNAME),
        grpc_service=entry.text("grpcService"),
        port=entry.number("port", 1, MAX_PORT),
        interval_ms=entry.duration("interval", positive=True),
        timeout_ms=entry.duration("timeout", positive=True),
        healthy_threshold=entry.number("healthyThreshold", 1, 100),
        unhealthy_threshold=entry.number("unhealthyThreshold", 1, 100),
        expected_statuses=tuple(entry.numbers("expectedStatuses", 100, 599)),
    )


def _budget(entry: Map) -> RetryBudget:
    budget = entry.mapping("budget", ("percent", "minConcurrency"))
    percent = budget.number("percent", 1, 100)
    if percent is None:
        budget.problem("percent", "missing required field")
    return RetryBudget(percent or 1, budget.number("minConcurrency", 1, MAX_COUNT))


def _retry(spec: Map, level: Level | None) -> Retry:
    fields = (
        "attempts",
        "perTryTimeout",
        "retryOn",
        "codes",
        "backoff",
        "otherHost",
        "otherPriority",
        "hedge",
        "budget",
    )
    entry = spec.mapping("retry", fields)
    retry_on = entry.strings("retryOn")
    for i, condition in enumerate(retry_on):
        if condition not in RETRY_ON:
            entry.problem(f"retryOn[{i}]", f"unknown condition {condition!r}")
    flag_repeats(entry, "retryOn", "", retry_on, "condition")
    base = maximum = None
    if entry.has("backoff"):
        backoff = entry.mapping("backoff", ("base", "max"))
        base = backoff.duration("base", positive=True)
        maximum = backoff.duration("max", positive=True)
        if base is None:
            backoff.problem("base", "missing required field")
        if base and maximum and maximum < base:
            backoff.problem("max", "must not be shorter than base")
    budget = None
    if entry.has("budget"):
        budget = _budget(entry)
        if level is not None and level is not Level.SERVICE:
            entry.problem("budget", "only in a policy that targets a Service or ServiceImport")
    return Retry(
        attempts=entry.number("attempts", 0, 10),
        # 0s turns the default per-try timeout off (docs/failover.md, non-idempotent requests).
        per_try_timeout_ms=entry.duration("perTryTimeout"),
        retry_on=tuple(retry_on),
        codes=tuple(entry.numbers("codes", 400, 599)),
        backoff_base_ms=base,
        backoff_max_ms=maximum,
        other_host=entry.optional_flag("otherHost"),
        other_priority=entry.optional_flag("otherPriority"),
        hedge=entry.optional_flag("hedge"),
        budget=budget,
    )


def _cookie(entry: Map) -> Cookie:
    name = entry.required_text("name")
    if name and HTTP_TOKEN.fullmatch(name) is None:
        entry.problem("name", f"{name!r} is not a valid cookie name")
    path = entry.text("path")
    if path is not None and not path.startswith("/"):
        entry.problem("path", "must start with '/'")
    return Cookie(name, entry.duration("ttl"), path)


def _one_of(entry: Map, keys: tuple[str, ...]) -> None:
    given = [key for key in keys if entry.has(key)]
    if len(given) != 1:
        choices = ", ".join(keys)
        entry.report(f"needs exactly one of {choices}; got {', '.join(given) or 'none'}")


def _consistent_hash(entry: Map) -> ConsistentHash:
    _one_of(entry, ("header", "cookie", "sourceIP"))
    header = entry.text("header")
    if header is not None and HTTP_TOKEN.fullmatch(header) is None:
        entry.problem("header", f"{header!r} is not a valid header name")
    cookie_fields = ("name", "ttl", "path")
    cookie = _cookie(entry.mapping("cookie", cookie_fields)) if entry.has("cookie") else None
    source_ip = entry.flag("sourceIP", False)
    if entry.has("sourceIP") and not source_ip:
        entry.problem("sourceIP", "only true is meaningful (leave it out instead)")
    kinds = [a.value for a in HashAlgorithm]
    algorithm = HashAlgorithm(entry.choice("algorithm", kinds, HashAlgorithm.RING_HASH))
    return ConsistentHash(header.lower() if header else None, cookie, source_ip, algorithm)


def _session_persistence(spec: Map) -> SessionPersistence:
    entry = spec.mapping("sessionPersistence", ("consistentHash", "cookie"))
    _one_of(entry, ("consistentHash", "cookie"))
    hashed = None
    if entry.has("consistentHash"):
        fields = ("header", "cookie", "sourceIP", "algorithm")
        hashed = _consistent_hash(entry.mapping("consistentHash", fields))
    cookie = (
        _cookie(entry.mapping("cookie", ("name", "ttl", "path"))) if entry.has("cookie") else None
    )
    return SessionPersistence(hashed, cookie)


def _connection_pool(spec: Map) -> ConnectionPool:
    entry = spec.mapping("connectionPool", ("maxConnections", "maxPendingRequests", "maxRequests"))
    return ConnectionPool(
        max_connections=entry.number("maxConnections", 1, MAX_LIMIT),
        max_pending_requests=entry.number("maxPendingRequests", 1, MAX_LIMIT),
        max_requests=entry.number("maxRequests", 1, MAX_LIMIT),
    )


# --- Other levels ----------------------------------------------------------------------------


def _names(entry: Map, key: str) -> tuple[str, ...]:
    names = entry.strings(key, required=True)
    for i, name in enumerate(names):
        if not DNS_LABEL.accepts(name):
            entry.problem(f"{key}[{i}]", f"{name!r} is not {DNS_LABEL.description}")
    flag_repeats(entry, key, "", names, "member")
    return tuple(names)


def _pin(spec: Map) -> Pin:
    return Pin(_names(spec.mapping("pin", ("members",)), "members"))


def _http3(spec: Map) -> Http3:
    return Http3(early_data=spec.mapping("http3", ("earlyData",)).flag("earlyData", True))


def _access_log(spec: Map) -> AccessLog:
    formats = [f.value for f in AccessLogFormat]
    entry = spec.mapping("accessLog", ("format",))
    return AccessLog(AccessLogFormat(entry.choice("format", formats, AccessLogFormat.JSON.value)))


def _tracing(spec: Map, namespace: str) -> Tracing:
    entry = spec.mapping("tracing", ("collector", "samplingPercent"))
    collector = entry.mapping("collector", ("name", "namespace", "port"), required=True)
    sampling = entry.decimal("samplingPercent", 0, 100)
    return Tracing(
        collector=collector.name("name", DNS_1035_LABEL),
        namespace=collector.optional_name("namespace", DNS_LABEL) or namespace,
        port=collector.port("port"),
        sampling_percent=1.0 if sampling is None else sampling,
    )


def _sidecar(spec: Map, namespace: str) -> SidecarScope:
    entry = spec.mapping("sidecar", ("services",))
    services = tuple(
        (s.optional_name("namespace", DNS_LABEL) or namespace, s.name("name", DNS_1035_LABEL))
        for s in entry.mappings("services", ("name", "namespace"), required=True, non_empty=True)
    )
    flag_repeats(entry, "services", "name", [f"{ns}/{n}" for ns, n in services], "service")
    return SidecarScope(services)


# --- The document ----------------------------------------------------------------------------


def _check_combinations(spec: Map, parsed: PolicySpec) -> None:
    """Settings of one policy that contradict each other."""
    balancer = parsed.load_balancer
    session = parsed.session_persistence
    if balancer is not None and session is not None and session.consistent_hash is not None:
        # The hash decides the endpoint: there is no other balancing left to configure.
        spec.problem("loadBalancer", "does not go with sessionPersistence.consistentHash")


def traffic_policy(doc: Map) -> TrafficPolicy:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    spec = doc.mapping("spec", ("targetRefs", *SPEC_FIELDS), required=True)
    targets, level = _targets(spec)
    allowed = LEVEL_FIELDS[level] if level is not None else frozenset(SPEC_FIELDS.values())
    values: dict[str, object] = {}
    for key, field_name in SPEC_FIELDS.items():
        if not spec.has(key):
            continue
        if field_name not in allowed:
            spec.problem(key, f"not for a policy that targets {level}")
            continue
        values[field_name] = _parse_field(spec, key, level, namespace)
    parsed = PolicySpec(**values)  # type: ignore[arg-type]
    _check_combinations(spec, parsed)
    # A setting given for the wrong level was reported above: saying it sets nothing would
    # only repeat that.
    if level is not None and not any(spec.has(key) for key in SPEC_FIELDS):
        spec.report("sets nothing: give at least one setting besides targetRefs")
    return TrafficPolicy(namespace, name, targets, parsed)


def _parse_field(spec: Map, key: str, level: Level | None, namespace: str) -> object:
    match key:
        case "members":
            return _members(spec, level)
        case "failover":
            return _failover(spec)
        case "loadBalancer":
            return _load_balancer(spec)
        case "outlierDetection":
            return _outlier_detection(spec)
        case "healthCheck":
            return _health_check(spec)
        case "retry":
            return _retry(spec, level)
        case "sessionPersistence":
            return _session_persistence(spec)
        case "connectionPool":
            return _connection_pool(spec)
        case "pin":
            return _pin(spec)
        case "http3":
            return _http3(spec)
        case "accessLog":
            return _access_log(spec)
        case "tracing":
            return _tracing(spec, namespace)
        case _:
            return _sidecar(spec, namespace)
