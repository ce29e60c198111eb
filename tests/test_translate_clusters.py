"""Clusters: one EDS cluster per multi-cluster service port, fetched over ADS."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Member,
    MemberState,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate
from xdsfleet.translate.clusters import HTTP_PROTOCOL_OPTIONS


def web_cluster(
    *,
    service_app_protocol: str | None = None,
    slice_app_protocol: str | None = None,
    role: Role = Role.SIDECAR,
) -> Any:
    member = MemberState(
        Member("a", "r1", "z1"),
        services=(
            Service("ns", "web", (ServicePort("http", 80, app_protocol=service_app_protocol),)),
        ),
        endpoint_slices=(
            EndpointSlice(
                "ns",
                "web-1",
                "web",
                (EndpointPort("http", 8080, app_protocol=slice_app_protocol),),
                (Endpoint(("10.0.0.1",)),),
            ),
        ),
        exports=(("ns", "web"),),
    )
    resources = translate(FleetState("f", (member,)), NodeProfile(role=role))
    return resources[typeurls.CLUSTER]["ns/web:80"]


def test_a_cluster_is_named_namespace_service_port() -> None:
    assert web_cluster().name == "ns/web:80"


def test_a_cluster_fetches_its_endpoints_over_ads_under_its_own_name() -> None:
    cluster = web_cluster()

    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == "ns/web:80"
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3


def test_a_cluster_balances_round_robin_over_weighted_localities() -> None:
    cluster = web_cluster()

    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster.common_lb_config.HasField("locality_weighted_lb_config")
    assert cluster.connect_timeout.seconds == 1


def test_a_plain_port_gets_no_protocol_options() -> None:
    assert dict(web_cluster().typed_extension_protocol_options) == {}


@pytest.mark.parametrize("app_protocol", ["kubernetes.io/h2c", "grpc", "h2c", "http2"])
def test_an_h2_app_protocol_on_the_service_port_speaks_http2_upstream(app_protocol: str) -> None:
    cluster = web_cluster(service_app_protocol=app_protocol)

    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_an_h2_app_protocol_on_the_slice_port_speaks_http2_upstream() -> None:
    cluster = web_cluster(slice_app_protocol="kubernetes.io/h2c")

    assert HTTP_PROTOCOL_OPTIONS in cluster.typed_extension_protocol_options


def test_other_app_protocols_stay_on_http1() -> None:
    cluster = web_cluster(service_app_protocol="kubernetes.io/ws")

    assert dict(cluster.typed_extension_protocol_options) == {}


def test_proxyless_clients_get_outlier_detectors_grpc_implements_with_every_field_set() -> None:
    # gRFC A50: gRPC implements success rate and failure percentage only; grpc-js-xds read an
    # unset success-rate block as zeros and crashed (tests/test_grpc_proxyless.py runs it).
    outlier = web_cluster(role=Role.PROXYLESS).outlier_detection
    assert outlier.enforcing_success_rate.value == 0
    assert outlier.enforcing_failure_percentage.value == 100
    for field in (
        "interval",
        "base_ejection_time",
        "max_ejection_time",
        "max_ejection_percent",
        "success_rate_minimum_hosts",
        "success_rate_request_volume",
        "success_rate_stdev_factor",
        "failure_percentage_threshold",
        "failure_percentage_minimum_hosts",
        "failure_percentage_request_volume",
    ):
        assert outlier.HasField(field), field
    # The consecutive-error detectors mean nothing to gRPC: not sent to it.
    assert not outlier.HasField("consecutive_5xx")
    assert not outlier.HasField("consecutive_gateway_failure")
    # Envoys keep theirs.
    assert web_cluster().outlier_detection.HasField("consecutive_gateway_failure")
