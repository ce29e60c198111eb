"""Clusters under a policy: the failover defaults, and each setting a service policy overrides."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from states import AT_GATEWAY, EAST, WEST, fleet, policy, running

from xdsfleet.cache import typeurls
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.model.policy import (
    Balancer,
    ConnectionPool,
    ConsistentHash,
    Failover,
    HashAlgorithm,
    HealthCheck,
    HealthCheckType,
    LoadBalancer,
    OutlierDetection,
    Retry,
    RetryBudget,
    SessionPersistence,
    SlowStart,
)
from xdsfleet.translate import translate

CLUSTER = "ns/web:80"


def web_cluster(*policies: Any, app_protocol: str | None = None) -> Any:
    members = (running(EAST, "10.0.0.1", app_protocol=app_protocol), running(WEST, "10.1.0.1"))
    state = fleet(*members, policies=policies)
    return translate(state, AT_GATEWAY)[typeurls.CLUSTER][CLUSTER]


def test_by_default_outlier_detection_ejects_whole_members_on_gateway_and_local_errors() -> None:
    outlier = web_cluster().outlier_detection

    assert outlier.consecutive_gateway_failure.value == 3
    assert outlier.enforcing_consecutive_gateway_failure.value == 100
    # Refused connections and (per-try) timeouts count as gateway errors: counted apart, every
    # connection a hung host's kernel accepts would reset the count (docs/failover.md).
    assert not outlier.split_external_local_origin_errors
    assert not outlier.HasField("consecutive_local_origin_failure")
    assert outlier.consecutive_5xx.value == 5
    # Envoy's default (10 %) would keep a dead member's last hosts in the pool.
    assert outlier.max_ejection_percent.value == 100
    assert outlier.base_ejection_time.seconds == 5
    # The TCP probe passes on a hung host: it must not end the host's ejection.
    assert not outlier.successful_active_health_check_uneject_host.value


def test_health_changes_apply_at_once() -> None:
    # Envoy merges health changes for 1 s after a first one by default: the second host of a
    # hung member would keep its traffic that long.
    config = web_cluster().common_lb_config
    assert config.HasField("update_merge_window")
    assert config.update_merge_window.ToMilliseconds() == 0


def test_local_origin_failures_are_counted_apart_when_a_policy_asks() -> None:
    given = OutlierDetection(consecutive_local_origin_failures=4)
    outlier = web_cluster(policy("p", outlier_detection=given)).outlier_detection
    assert outlier.split_external_local_origin_errors
    assert outlier.consecutive_local_origin_failure.value == 4
    assert outlier.enforcing_consecutive_local_origin_failure.value == 100


def test_a_policy_overrides_outlier_detection_field_by_field() -> None:
    given = OutlierDetection(consecutive_gateway_errors=7, base_ejection_time_ms=5000)
    outlier = web_cluster(policy("p", outlier_detection=given)).outlier_detection

    assert outlier.consecutive_gateway_failure.value == 7
    assert outlier.base_ejection_time.seconds == 5
    assert outlier.consecutive_5xx.value == 5


def test_a_detector_set_to_zero_is_not_enforced() -> None:
    given = OutlierDetection(consecutive_5xx=0)
    outlier = web_cluster(policy("p", outlier_detection=given)).outlier_detection
    assert outlier.enforcing_consecutive_5xx.value == 0


def test_outlier_detection_can_be_turned_off() -> None:
    cluster = web_cluster(policy("p", outlier_detection=OutlierDetection(enabled=False)))
    assert not cluster.HasField("outlier_detection")


def test_every_cluster_has_a_retry_budget_instead_of_three_concurrent_retries() -> None:
    [thresholds] = web_cluster().circuit_breakers.thresholds

    assert thresholds.retry_budget.budget_percent.value == 20
    # A cut-off host's waiting requests all retry at once when it is ejected: the floor is high.
    assert thresholds.retry_budget.min_retry_concurrency.value == 1024


def test_a_policy_sets_the_retry_budget_and_connection_limits() -> None:
    given = policy(
        "p",
        retry=Retry(budget=RetryBudget(35, 4)),
        connection_pool=ConnectionPool(max_connections=10, max_requests=20),
    )
    [thresholds] = web_cluster(given).circuit_breakers.thresholds

    assert thresholds.retry_budget.budget_percent.value == 35
    assert thresholds.retry_budget.min_retry_concurrency.value == 4
    assert (thresholds.max_connections.value, thresholds.max_requests.value) == (10, 20)
    assert not thresholds.HasField("max_pending_requests")


def test_locality_weights_are_always_on_and_the_panic_threshold_is_a_policy_setting() -> None:
    assert web_cluster().common_lb_config.HasField("locality_weighted_lb_config")
    assert not web_cluster().common_lb_config.HasField("healthy_panic_threshold")

    cluster = web_cluster(policy("p", failover=Failover(panic_threshold=25)))

    assert cluster.common_lb_config.healthy_panic_threshold.value == 25
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")


def test_least_request_with_slow_start() -> None:
    ramp = SlowStart(window_ms=30_000, aggression=1.5, min_weight_percent=20)
    balancer = LoadBalancer(Balancer.LEAST_REQUEST, ramp)
    cluster = web_cluster(policy("p", load_balancer=balancer))

    assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    config = cluster.least_request_lb_config.slow_start_config
    assert config.slow_start_window.seconds == 30
    assert config.aggression.default_value == 1.5
    assert config.min_weight_percent.value == 20


def test_round_robin_slow_start_is_the_default_balancers() -> None:
    cluster = web_cluster(policy("p", load_balancer=LoadBalancer(slow_start=SlowStart(5000))))
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster.round_robin_lb_config.slow_start_config.slow_start_window.seconds == 5


def test_a_consistent_hash_picks_ring_hash_or_maglev() -> None:
    for algorithm, expected in (
        (HashAlgorithm.RING_HASH, cluster_pb2.Cluster.RING_HASH),
        (HashAlgorithm.MAGLEV, cluster_pb2.Cluster.MAGLEV),
    ):
        hashed = ConsistentHash(header="x-user", algorithm=algorithm)
        session = SessionPersistence(consistent_hash=hashed)
        assert web_cluster(policy("p", session_persistence=session)).lb_policy == expected


def test_an_http_health_check_speaks_http2_to_an_h2c_service() -> None:
    check = HealthCheck(HealthCheckType.HTTP, path="/ready", expected_statuses=(200, 204))
    cluster = web_cluster(policy("p", health_check=check), app_protocol="kubernetes.io/h2c")

    [health] = cluster.health_checks
    assert health.http_health_check.path == "/ready"
    assert [(r.start, r.end) for r in health.http_health_check.expected_statuses] == [
        (200, 201),
        (204, 205),
    ]
    assert health.http_health_check.codec_client_type == 1  # HTTP2
    assert (health.interval.seconds, health.timeout.seconds) == (5, 1)
    assert (health.healthy_threshold.value, health.unhealthy_threshold.value) == (1, 2)


def test_grpc_and_tcp_health_checks() -> None:
    grpc = HealthCheck(HealthCheckType.GRPC, grpc_service="shop.Cart")
    [health] = web_cluster(policy("p", health_check=grpc)).health_checks
    assert health.grpc_health_check.service_name == "shop.Cart"

    [health] = web_cluster(policy("p", health_check=HealthCheck(HealthCheckType.TCP))).health_checks
    assert health.HasField("tcp_health_check")


def test_gateways_probe_with_tcp_by_default_and_sidecars_do_not() -> None:
    [health] = web_cluster().health_checks
    assert health.HasField("tcp_health_check")
    assert (health.interval.seconds, health.timeout.seconds) == (5, 1)
    # What the control plane removes leaves at once, whatever the probe says.
    assert web_cluster().ignore_health_on_host_removal

    members = (running(EAST, "10.0.0.1"), running(WEST, "10.1.0.1"))
    sidecar = NodeProfile(role=Role.SIDECAR, region="r1")
    assert list(translate(fleet(*members), sidecar)[typeurls.CLUSTER][CLUSTER].health_checks) == []


def test_a_policy_turns_the_default_probe_off() -> None:
    off = HealthCheck(HealthCheckType.TCP, enabled=False)
    cluster = web_cluster(policy("p", health_check=off))
    assert list(cluster.health_checks) == []
    assert not cluster.ignore_health_on_host_removal


def test_the_upstream_speaks_http2_when_the_port_says_grpc_or_h2c() -> None:
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    assert options in web_cluster(app_protocol="grpc").typed_extension_protocol_options
    assert options in web_cluster(app_protocol="kubernetes.io/h2c").typed_extension_protocol_options
    assert options not in web_cluster(app_protocol="http").typed_extension_protocol_options


def test_a_proxyless_client_gets_only_what_grpc_understands() -> None:
    hashed = SessionPersistence(
        consistent_hash=ConsistentHash(header="x", algorithm=HashAlgorithm.MAGLEV)
    )
    check = HealthCheck(HealthCheckType.TCP)
    state = fleet(
        running(EAST, "10.0.0.1"),
        policies=(policy("p", session_persistence=hashed, health_check=check),),
    )

    cluster = translate(state, NodeProfile(role=Role.PROXYLESS))[typeurls.CLUSTER][CLUSTER]

    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert list(cluster.health_checks) == []
    assert cluster.HasField("outlier_detection")


def test_a_proxyless_route_retries_only_on_the_grpc_statuses_a_policy_names() -> None:
    members = (running(EAST, "10.0.0.1"), running(WEST, "10.1.0.1"))
    proxyless = NodeProfile(role=Role.PROXYLESS)

    def route(*policies: Any) -> Any:
        [listener] = translate(fleet(*members, policies=policies), proxyless)[
            typeurls.LISTENER
        ].values()
        manager = hcm_pb2.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(manager)
        return manager.route_config.virtual_hosts[0].routes[0].route

    given = Retry(attempts=3, retry_on=("connect-failure", "unavailable", "internal"))
    retry = route(policy("p", retry=given)).retry_policy
    assert (retry.retry_on, retry.num_retries.value) == ("unavailable,internal", 3)
    assert not route(policy("p", retry=Retry(attempts=0))).HasField("retry_policy")
    only_envoy = Retry(retry_on=("connect-failure",))
    assert not route(policy("p", retry=only_envoy)).HasField("retry_policy")
