"""OpenTelemetry tracing of a gateway listener: Envoy starts (or continues) a trace for each
request it samples and exports the spans over OTLP/gRPC to a collector Service of the fleet,
as the listener's TrafficPolicy `tracing` says (docs/policy.md).

The collector is a multi-cluster service like any backend: its cluster is added to the
gateway's snapshot. It must speak gRPC (its Service port `appProtocol: grpc` or
`kubernetes.io/h2c`); a collector no member exports (reported as an unresolved reference by
`validate` and while serving), or one without HTTP/2, leaves the listener untraced.

Pure: it decides and builds the connection manager's `tracing`, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xdsfleet.model.policy import Tracing
from xdsfleet.translate.proto import Message, pack_into
from xdsfleet.translate.rules import Destination, Planner
from xdsfleet.translate.services import ServicePortKey

OPENTELEMETRY = "envoy.tracers.opentelemetry"
EXPORT_TIMEOUT_MS = 250


@dataclass(frozen=True, slots=True)
class Trace:
    """What a traced connection manager needs (hashable: listener builders are memoised)."""

    cluster: str  # the collector's cluster
    service_name: str  # how the gateway names itself in its spans
    sampling_percent: float


def plan_trace(
    settings: Iterable[Tracing | None], planner: Planner, service_name: str
) -> Trace | None:
    """The trace of one Envoy listener, from the `tracing` policies of the Gateway listeners
    on its port (the first one set decides); None when untraced or the collector cannot be
    reached over gRPC. Marks the collector's cluster used."""
    tracing = next((t for t in settings if t is not None), None)
    if tracing is None:
        return None
    key = ServicePortKey(tracing.namespace, tracing.collector, tracing.port)
    backends = planner.services.get(key)
    if backends is None or not backends.http2:
        return None
    planner.used.add(Destination(key))
    return Trace(key.cluster, service_name, tracing.sampling_percent)


def http_tracing(trace: Trace) -> Message:
    config = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=trace.cluster)
        ),
        service_name=trace.service_name,
    )
    config.grpc_service.timeout.FromMilliseconds(EXPORT_TIMEOUT_MS)
    provider = http_tracer_pb2.Tracing.Http(name=OPENTELEMETRY)
    pack_into(provider.typed_config, config)
    tracing = hcm_pb2.HttpConnectionManager.Tracing(provider=provider)
    tracing.random_sampling.value = trace.sampling_percent
    return tracing
