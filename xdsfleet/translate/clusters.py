"""Clusters: one EDS cluster per multi-cluster service port (and per pinned variant of it).

A cluster says how to talk to a service port, never where its endpoints are: those come in the
ClusterLoadAssignment of the same name, so endpoint churn never touches CDS (which would send
the cluster warming again). How it balances, ejects, health-checks and bounds retries comes from
the service's TrafficPolicy; the defaults here are the ones that make failover work without one
(docs/policy.md, "How it maps to Envoy").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2, range_pb2

from xdsfleet.model.policy import (
    Balancer,
    ConnectionPool,
    HashAlgorithm,
    HealthCheck,
    HealthCheckType,
    LoadBalancer,
    OutlierDetection,
    PolicySpec,
    RetryBudget,
)
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.proto import Message, ads_config_source, duration, pack_into

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Ejections that fail over: a host answering gateway errors, refusing connections or timing out
# (a per-try timeout counts) leaves the pool at once, and a whole member may be ejected (Envoy's
# default caps ejection at 10 % of the hosts, which would keep a dead member's last hosts in the
# pool). A first ejection lasts 5 s, so traffic returns soon after a recovery; Envoy lengthens
# each further ejection of a host that is still bad, so probing a dead member costs ever less.
DEFAULT_OUTLIER_DETECTION = OutlierDetection(
    consecutive_5xx=5,
    consecutive_gateway_errors=3,
    interval_ms=1000,
    base_ejection_time_ms=5_000,
    max_ejection_percent=100,
)
# Proxyless gRPC clients implement only the success-rate and failure-percentage detectors
# (gRFC A50), so the consecutive-error ones above do nothing there, and an unset field is not
# always their default: grpc-js-xds 1.14 read an unset success-rate block as zeros and crashed
# on its first interval. So they get a failure-percentage detector with every field set, and
# success rate explicitly off (it needs many hosts to mean anything). A host failing at least
# half of ten calls or more in an interval is ejected, once two hosts have that much traffic.
PROXYLESS_FAILURE_PERCENT = 50
PROXYLESS_MINIMUM_HOSTS = 2
PROXYLESS_REQUEST_VOLUME = 10
PROXYLESS_MAX_EJECTION_MS = 300_000
# The success-rate fields, set though it is off: Envoy's documented defaults.
_SUCCESS_RATE_DEFAULTS = {
    "success_rate_minimum_hosts": 5,
    "success_rate_request_volume": 100,
    "success_rate_stdev_factor": 1900,
}
# Envoy's default circuit breaker allows 3 concurrent retries per cluster, which silently stops
# retries during a failover under load. A budget scales with the traffic, but not with a burst:
# when a cut-off host is ejected, every request waiting to connect to it fails at that instant
# and asks for a retry, while few requests are in flight elsewhere (docs/failover.md). So the
# floor is high, Envoy's own default for its other circuit breakers (1,024), and the percentage
# bounds retries and hedges (which also run while a whole service is slow) beyond it.
DEFAULT_RETRY_BUDGET = RetryBudget(percent=20, min_concurrency=1024)
HEALTH_CHECK_INTERVAL_MS = 5000
HEALTH_CHECK_TIMEOUT_MS = 1000
# Gateways probe every endpoint with a TCP connect when the policy asks for no health check: a
# dead or cut-off endpoint leaves the pool before a request finds it (a quiet route would pay the
# first connect timeouts), and comes back within an interval of its recovery. Sidecars do not: a
# fleet of N sidecars would probe every endpoint N times (docs/failover.md).
DEFAULT_GATEWAY_HEALTH_CHECK = HealthCheck(HealthCheckType.TCP)
SLOW_START_AGGRESSION_KEY = "xdsfleet.slow_start.aggression"

_BALANCERS = {
    Balancer.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    Balancer.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    Balancer.RANDOM: cluster_pb2.Cluster.RANDOM,
}
_HASHES = {
    HashAlgorithm.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    HashAlgorithm.MAGLEV: cluster_pb2.Cluster.MAGLEV,
}


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The part of a service's policy that its clusters carry; pinned variants share it."""

    load_balancer: LoadBalancer | None = None
    hash_algorithm: HashAlgorithm | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    connection_pool: ConnectionPool | None = None
    retry_budget: RetryBudget | None = None
    panic_threshold: int | None = None
    # For a proxyless gRPC client: outlier detectors it implements (`for_proxyless`).
    proxyless: bool = False
    # The default health check applies (gateways): a policy's `healthCheck` still wins.
    probe: bool = False

    @classmethod
    def of(cls, spec: PolicySpec) -> ClusterSettings:
        session = spec.session_persistence
        hashed = session.consistent_hash if session is not None else None
        return cls(
            load_balancer=spec.load_balancer,
            hash_algorithm=hashed.algorithm if hashed is not None else None,
            outlier_detection=spec.outlier_detection,
            health_check=spec.health_check,
            connection_pool=spec.connection_pool,
            retry_budget=spec.retry.budget if spec.retry is not None else None,
            panic_threshold=spec.failover.panic_threshold if spec.failover is not None else None,
        )

    def for_gateway(self) -> ClusterSettings:
        """Gateways also probe endpoints when the policy sets no health check."""
        return replace(self, probe=True)

    def for_proxyless(self) -> ClusterSettings:
        """What gRPC's xDS client can use: it refuses Maglev and Random clusters, does no active
        health checks, its inline routes carry no hash key, so those stay with Envoys; and its
        outlier detection has other detectors."""
        balancer = self.load_balancer
        least = balancer is not None and balancer.type is Balancer.LEAST_REQUEST
        return replace(
            self,
            load_balancer=LoadBalancer(Balancer.LEAST_REQUEST) if least else None,
            hash_algorithm=None,
            health_check=None,
            proxyless=True,
        )


DEFAULT_SETTINGS = ClusterSettings()


@memoised
def cluster(name: str, http2: bool, settings: ClusterSettings = DEFAULT_SETTINGS) -> Message:
    """The cluster `name`, its endpoints fetched over ADS under the same name. `http2` speaks
    HTTP/2 without TLS to the pods (h2c, as gRPC backends expect)."""
    built = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_config_source(), service_name=name
        ),
        connect_timeout={"seconds": 1},
        # Always: gRPC's xDS client drops localities without weight (docs/architecture.md,
        # "Localities and tiers").
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig(),
            # Health changes apply at once. Envoy's default merges those that follow a first one
            # for 1 s: the second host of a hung member ejected a moment after the first kept
            # its traffic for that second (docs/failover.md).
            update_merge_window={},
        ),
        circuit_breakers=circuit_breaker_pb2.CircuitBreakers(
            thresholds=[_thresholds(settings.connection_pool, settings.retry_budget)]
        ),
    )
    _balance(built, settings)
    if settings.panic_threshold is not None:
        built.common_lb_config.healthy_panic_threshold.value = settings.panic_threshold
    outlier = settings.outlier_detection or DEFAULT_OUTLIER_DETECTION
    if outlier.enabled:
        detection = _grpc_outlier_detection if settings.proxyless else _outlier_detection
        built.outlier_detection.CopyFrom(detection(outlier))
    check = settings.health_check
    if check is None and settings.probe:
        check = DEFAULT_GATEWAY_HEALTH_CHECK
    if check is not None and check.enabled:
        built.health_checks.append(_health_check(check, http2))
        if outlier.enabled and check.type is HealthCheckType.TCP:
            # A hung host still accepts connections: a passing connect must not end its
            # ejection (Envoy's default), or it takes requests again at every probe.
            built.outlier_detection.successful_active_health_check_uneject_host.value = False
        # An endpoint the control plane removes (a drain, a scale-down) leaves at once: by
        # default Envoy keeps a removed endpoint while its health checks still pass.
        built.ignore_health_on_host_removal = True
    if http2:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        pack_into(built.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS], options)
    return built


def _balance(built: Message, settings: ClusterSettings) -> None:
    if settings.hash_algorithm is not None:
        # The request's hash picks the endpoint (session persistence): nothing else to tune.
        built.lb_policy = _HASHES[settings.hash_algorithm]
        return
    balancer = settings.load_balancer or LoadBalancer()
    kind = balancer.type or Balancer.ROUND_ROBIN
    built.lb_policy = _BALANCERS[kind]
    ramp = balancer.slow_start
    if ramp is None:
        return
    config = cluster_pb2.Cluster.SlowStartConfig(
        slow_start_window=duration(ramp.window_ms),
        aggression=base_pb2.RuntimeDouble(
            default_value=ramp.aggression, runtime_key=SLOW_START_AGGRESSION_KEY
        ),
    )
    config.min_weight_percent.value = ramp.min_weight_percent
    if kind is Balancer.LEAST_REQUEST:
        built.least_request_lb_config.slow_start_config.CopyFrom(config)
    else:
        built.round_robin_lb_config.slow_start_config.CopyFrom(config)


def _thresholds(pool: ConnectionPool | None, budget: RetryBudget | None) -> Message:
    budget = budget or DEFAULT_RETRY_BUDGET
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    thresholds.retry_budget.budget_percent.value = budget.percent
    if budget.min_concurrency is not None:
        thresholds.retry_budget.min_retry_concurrency.value = budget.min_concurrency
    if pool is not None:
        for field, value in (
            ("max_connections", pool.max_connections),
            ("max_pending_requests", pool.max_pending_requests),
            ("max_requests", pool.max_requests),
        ):
            if value is not None:
                getattr(thresholds, field).value = value
    return thresholds


def _outlier_detection(given: OutlierDetection) -> Message:
    default = DEFAULT_OUTLIER_DETECTION
    built = outlier_detection_pb2.OutlierDetection(
        interval=duration(_pick(given.interval_ms, default.interval_ms)),
        base_ejection_time=duration(
            _pick(given.base_ejection_time_ms, default.base_ejection_time_ms)
        ),
    )
    # By default local-origin failures (refused or timed-out connections, resets, per-try
    # timeouts) count as gateway errors (503, 504): a hung host is ejected after a few per-try
    # timeouts. Counted apart (`consecutiveLocalOriginFailures` given), every connection the
    # host's kernel accepts resets the count, and a hung host that accepts connections is never
    # ejected (docs/failover.md).
    split = given.consecutive_local_origin_failures is not None
    built.split_external_local_origin_errors = split
    built.max_ejection_percent.value = _pick(
        given.max_ejection_percent, default.max_ejection_percent
    )
    detectors = {
        "consecutive_5xx": _pick(given.consecutive_5xx, default.consecutive_5xx),
        "consecutive_gateway_failure": _pick(
            given.consecutive_gateway_errors, default.consecutive_gateway_errors
        ),
    }
    if split:
        detectors["consecutive_local_origin_failure"] = _pick(
            given.consecutive_local_origin_failures, 0
        )
    for detector, count in detectors.items():
        # A count of 0 turns the detector off.
        if count:
            getattr(built, detector).value = count
        getattr(built, f"enforcing_{detector}").value = 100 if count else 0
    return built


def _grpc_outlier_detection(given: OutlierDetection) -> Message:
    """Detection for a proxyless gRPC client (gRFC A50): the policy's interval, ejection time
    and cap; failure percentage on, success rate off, every field set."""
    default = DEFAULT_OUTLIER_DETECTION
    built = outlier_detection_pb2.OutlierDetection(
        interval=duration(_pick(given.interval_ms, default.interval_ms)),
        base_ejection_time=duration(
            _pick(given.base_ejection_time_ms, default.base_ejection_time_ms)
        ),
        max_ejection_time=duration(PROXYLESS_MAX_EJECTION_MS),
    )
    values = {
        "max_ejection_percent": _pick(given.max_ejection_percent, default.max_ejection_percent),
        "enforcing_success_rate": 0,
        **_SUCCESS_RATE_DEFAULTS,
        "enforcing_failure_percentage": 100,
        "failure_percentage_threshold": PROXYLESS_FAILURE_PERCENT,
        "failure_percentage_minimum_hosts": PROXYLESS_MINIMUM_HOSTS,
        "failure_percentage_request_volume": PROXYLESS_REQUEST_VOLUME,
    }
    for field, value in values.items():
        getattr(built, field).value = value
    return built


def _pick(given: int | None, default: int | None) -> int:
    return given if given is not None else (default or 0)


def _health_check(check: HealthCheck, http2: bool) -> Message:
    built = health_check_pb2.HealthCheck(
        interval=duration(check.interval_ms or HEALTH_CHECK_INTERVAL_MS),
        timeout=duration(check.timeout_ms or HEALTH_CHECK_TIMEOUT_MS),
    )
    built.healthy_threshold.value = check.healthy_threshold or 1
    built.unhealthy_threshold.value = check.unhealthy_threshold or 2
    match check.type:
        case HealthCheckType.HTTP:
            http = built.http_health_check
            http.path = check.path or "/"
            if check.host:
                http.host = check.host
            http.expected_statuses.extend(
                range_pb2.Int64Range(start=code, end=code + 1) for code in check.expected_statuses
            )
            if http2:
                http.codec_client_type = http_pb2.HTTP2
        case HealthCheckType.GRPC:
            built.grpc_health_check.service_name = check.grpc_service or ""
        case HealthCheckType.TCP:
            # An empty check only connects: a listening socket is healthy.
            built.tcp_health_check.SetInParent()
    return built
