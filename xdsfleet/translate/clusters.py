"""Clusters: one EDS cluster per multi-cluster service port.

A cluster says how to talk to a service port, never where its endpoints are: those come in the
ClusterLoadAssignment of the same name, so endpoint churn never touches CDS (which would send
the cluster warming again).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from xdsfleet.translate.memo import memoised
from xdsfleet.translate.proto import Message, ads_config_source, pack_into

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@memoised
def cluster(name: str, http2: bool) -> Message:
    """The cluster `name`, its endpoints fetched over ADS under the same name. `http2` speaks
    HTTP/2 without TLS to the pods (h2c, as gRPC backends expect)."""
    built = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_config_source(), service_name=name
        ),
        connect_timeout={"seconds": 1},
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        # Always: gRPC's xDS client drops localities without weight (DESIGN.md).
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            locality_weighted_lb_config=cluster_pb2.Cluster.CommonLbConfig.LocalityWeightedLbConfig()
        ),
    )
    if http2:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        pack_into(built.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS], options)
    return built
