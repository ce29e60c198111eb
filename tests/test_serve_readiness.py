"""`/healthz` and `/readyz` of `xdsfleet serve` during a long start, over real HTTP.

A Kubernetes liveness probe must get an answer while a big fleet is still being listed (else it
kills a replica that is only slow), and the readiness probe must keep traffic away until every
member has been listed once, so that a replica never serves a partial fleet. The member here is
an API emulator whose lists are held until the test lets them through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kube_api import ApiEmulator
from kube_helpers import endpoint_slice, service, service_export

from harness.local import Server, get, wait_for
from xdsfleet.sources.kube import resources


@pytest.fixture
def member() -> Iterator[ApiEmulator]:
    api = ApiEmulator().start()
    try:
        api.apply(resources.SERVICES, service("shop"))
        api.apply(resources.SERVICE_EXPORTS, service_export("shop"))
        api.apply(resources.ENDPOINT_SLICES, endpoint_slice("shop", "127.0.41.1"))
        yield api
    finally:
        api.release_lists()  # a list still held would keep its handler waiting
        api.stop()


def fleet_file(root: Path, api: ApiEmulator) -> Path:
    api.kubeconfig(root / "east.kubeconfig", context="east")
    member = {
        "name": "east",
        "region": "eu-west",
        "zone": "east-1",
        "source": {"kubeconfig": "east.kubeconfig", "context": "east"},
    }
    fleet = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": "slow"},
        "spec": {"members": [member]},
    }
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    return root / "fleet.yaml"


def test_liveness_answers_and_readiness_waits_for_every_member_to_be_listed(
    tmp_path: Path, member: ApiEmulator
) -> None:
    member.hold_lists()
    with Server(fleet_file(tmp_path, member)) as server:
        server.start(wait_ready=False)  # returns once /healthz answers
        status, body = get(server.metrics_port, "/readyz")
        assert status == 503
        assert "listing members: 1 of 1 not listed (east)" in body.decode()
        assert get(server.metrics_port, "/debug/clients") == (200, b"[]")
        member.release_lists()
        wait_for(lambda: get(server.metrics_port, "/readyz")[0] == 200, timeout=20, what="ready")
        status, body = get(server.metrics_port, "/debug/members")
        assert status == 200
        assert [(m["name"], m["settled"], m["endpoints"]) for m in json.loads(body)] == [
            ("east", True, 1)
        ]


def test_a_replica_stopped_while_it_starts_exits_cleanly(
    tmp_path: Path, member: ApiEmulator
) -> None:
    member.hold_lists()
    with Server(fleet_file(tmp_path, member)) as server:
        server.start(wait_ready=False)
        assert get(server.metrics_port, "/readyz")[0] == 503
        assert server.terminate(timeout=60) == 0
        assert [e["event"] for e in server.events("start_refused", "crashed")] == []
