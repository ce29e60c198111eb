"""OpenTelemetry tracing of a gateway listener by TrafficPolicy: the listener's connection
manager exports spans over gRPC to the collector Service's cluster, which joins the gateway's
snapshot; a collector that is not there (or speaks no gRPC) leaves the listener untraced and
is reported; Envoy accepts what is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.trace.v3 import opentelemetry_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from states import AT_GATEWAY, EAST, NS, fleet, policy, serving
from test_envoy_validate import assert_envoy_accepts

from xdsfleet.cache.typeurls import CLUSTER, LISTENER
from xdsfleet.documents.manifests import Place, parse_file
from xdsfleet.documents.references import reference_problems
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.fleet import FleetState, Service, ServicePort
from xdsfleet.model.policy import PolicyTarget, TargetKind, Tracing
from xdsfleet.translate import translate

WEB = Service(NS, "web", (ServicePort("http", 80),))
COLLECTOR = Service(NS, "otel", (ServicePort("otlp", 4317, app_protocol="grpc"),))
PLAIN = Service(NS, "otel", (ServicePort("otlp", 4317),))


def traced(*services: Service, percent: float = 5.0) -> FleetState:
    tracing = Tracing("otel", NS, 4317, percent)
    on_gateway = policy("traces", PolicyTarget(TargetKind.GATEWAY, "gw"), tracing=tracing)
    return fleet(serving(EAST, *services), policies=(on_gateway,))


def manager(state: FleetState) -> Any:
    [listener] = translate(state, AT_GATEWAY)[LISTENER].values()
    found = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(found)
    return found


def test_a_traced_listener_exports_to_the_collector_cluster() -> None:
    state = traced(WEB, COLLECTOR)
    tracing = manager(state).tracing
    config = opentelemetry_pb2.OpenTelemetryConfig()
    assert tracing.provider.typed_config.Unpack(config)
    assert config.grpc_service.envoy_grpc.cluster_name == "ns/otel:4317"
    assert config.service_name == "ns/gw"
    assert tracing.random_sampling.value == 5.0
    assert "ns/otel:4317" in translate(state, AT_GATEWAY)[CLUSTER]


def test_a_collector_without_grpc_or_not_exported_traces_nothing() -> None:
    assert not manager(traced(WEB, PLAIN)).HasField("tracing")
    missing = traced(WEB)
    assert not manager(missing).HasField("tracing")
    [problem] = [p for p in reference_problems(missing, {}) if p.field == "spec.tracing.collector"]
    assert "not defined by any member" in problem.message


def test_without_a_policy_nothing_is_traced() -> None:
    assert not manager(fleet(serving(EAST, WEB, COLLECTOR))).HasField("tracing")


def test_envoy_accepts_a_traced_listener(tmp_path: Path) -> None:
    assert_envoy_accepts(translate(traced(WEB, COLLECTOR), AT_GATEWAY), tmp_path)


def test_the_policy_document_reads_and_names_its_mistakes() -> None:
    document: dict[str, Any] = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "traces", "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "tracing": {"collector": {"name": "otel", "port": 4317}, "samplingPercent": 2.5},
        },
    }
    [parsed] = parse_file(yaml.safe_dump(document), "p.yaml", Place.ROUTES).policies
    assert parsed.spec.tracing == Tracing("otel", "default", 4317, 2.5)
    document["spec"]["tracing"] = {"collector": {"name": "otel"}, "samplingPercent": 101}
    with pytest.raises(InvalidInput) as error:
        parse_file(yaml.safe_dump(document), "p.yaml", Place.ROUTES)
    fields = sorted(p.field for p in error.value.problems)
    assert fields == ["spec.tracing.collector.port", "spec.tracing.samplingPercent"]
