"""Gateway access logs: one JSON object per request on Envoy's stdout by default, Envoy's text
line or nothing as a listener's TrafficPolicy `accessLog.format` says; sidecars log nothing.
A real Envoy writes the JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from fleets import FleetFiles, MemberSpec, Pod
from gateways import served_envoy
from states import AT_GATEWAY, EAST, fleet, policy, running

from harness.local import Backend, free_port, get, wait_for
from xdsfleet.cache.typeurls import LISTENER
from xdsfleet.documents.manifests import Place, parse_file
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.model.policy import AccessLog, AccessLogFormat, PolicyTarget, TargetKind
from xdsfleet.translate import translate


def manager_of(listener: Any) -> Any:
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def stdout_log(manager: Any) -> Any:
    [entry] = manager.access_log
    logger = stream_pb2.StdoutAccessLog()
    assert entry.typed_config.Unpack(logger)
    return logger


def gateway_manager(*policies: Any) -> Any:
    state = fleet(running(EAST, "10.0.0.1"), policies=policies)
    [listener] = translate(state, AT_GATEWAY)[LISTENER].values()
    return manager_of(listener)


def on_listener(log_format: AccessLogFormat) -> Any:
    target = PolicyTarget(TargetKind.GATEWAY, "gw", "http")
    return policy("logs", target, access_log=AccessLog(log_format))


def test_a_gateway_listener_logs_json_by_default() -> None:
    fields = stdout_log(gateway_manager()).log_format.json_format.fields
    assert fields["response_code"].string_value == "%RESPONSE_CODE%"
    assert fields["upstream_host"].string_value == "%UPSTREAM_HOST%"


def test_a_policy_chooses_text_or_no_log() -> None:
    text = stdout_log(gateway_manager(on_listener(AccessLogFormat.TEXT)))
    assert not text.HasField("log_format")  # Envoy's default line
    assert not gateway_manager(on_listener(AccessLogFormat.OFF)).access_log


def test_sidecar_listeners_log_nothing() -> None:
    state = fleet(running(EAST, "10.0.0.1"))
    listeners = translate(state, NodeProfile(role=Role.SIDECAR, region="r1"))[LISTENER]
    assert listeners
    assert all(not manager_of(listener).access_log for listener in listeners.values())


@pytest.fixture
def backend() -> Iterator[Backend]:
    started = Backend(member="east", address="127.0.24.1", port=free_port()).start()
    try:
        yield started
    finally:
        started.stop()


def test_envoy_writes_a_json_line_per_request(tmp_path: Path, backend: Backend) -> None:
    files = FleetFiles(
        root=tmp_path,
        members=[MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod("127.0.24.1")]})],
        target_port=backend.port,
        listener_port=free_port(),
    )
    files.write()
    profile = NodeProfile(gateway="default/gw", region="eu-west")
    with served_envoy(files.fleet, "gateway-logs", profile) as (_, envoy):
        wait_for(
            lambda: get(files.listener_port, "/logged", host="shop.example.com")[0] == 200,
            timeout=30,
            what="traffic through Envoy",
        )

        def logged() -> list[dict[str, Any]]:
            lines = [line for line in envoy.log().splitlines() if line.startswith("{")]
            return [entry for entry in map(json.loads, lines) if entry["path"] == "/logged"]

        wait_for(lambda: bool(logged()), timeout=30, what="an access log line")
        entry = logged()[-1]
    assert (entry["method"], entry["response_code"]) == ("GET", 200)
    assert entry["authority"] == "shop.example.com"
    assert entry["upstream_host"] == f"127.0.24.1:{backend.port}"
    assert entry["upstream_cluster"] == "default/shop:80"


def parse_policy(spec: dict[str, Any]) -> list[Any]:
    document = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "logs", "namespace": "default"},
        "spec": spec,
    }
    try:
        parse_file(yaml.safe_dump(document), "logs.yaml", Place.ROUTES)
    except InvalidInput as invalid:
        return [(p.obj, p.field, p.message) for p in invalid.problems]
    return []


GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}


def test_a_bad_format_or_target_is_named_by_file_object_and_field() -> None:
    [(obj, field, message)] = parse_policy(
        {"targetRefs": [GATEWAY_REF], "accessLog": {"format": "YAML"}}
    )
    assert (obj, field) == ("TrafficPolicy default/logs", "spec.accessLog.format")
    assert "JSON, Text, Off" in message
    problems = parse_policy(
        {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}], "accessLog": {}}
    )
    assert [field for _, field, _ in problems] == ["spec.accessLog"]
