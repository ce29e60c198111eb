"""A proxyless gRPC client retries what gRPC can retry (docs/failover.md, "Proxyless gRPC
clients"): calls a member refuses with UNAVAILABLE are tried again, and its balancer picks again.

gRPC has no "another host" predicate, so a retry may meet the refusing member again: with two
members, a call fails only if all of its tries land there. Over CALLS calls, without retries
about half fail (more than a quarter with a probability above 99.9 %); with the policy's 4
retries a call fails with probability 1/32, so more than a quarter fail with a probability
below one in a million. The test asserts at most a quarter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleets import FleetFiles, MemberSpec, Pod
from test_grpc_proxyless import ask_server, ask_who, who_server

from harness.local import Server, free_port
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.tools.bootstrap import Target, grpc_bootstrap

CLIENT = Path(__file__).with_name("grpc_xds_tally.py")
CALLS = 40
# gRPC caps a call at 5 attempts.
RETRIES = {
    "targetRefs": [{"group": "", "kind": "Service", "name": "who"}],
    "retry": {"attempts": 4},
}


def unavailable_server(address: str, port: int) -> grpc.Server:
    """A backend that refuses every call as a pod shutting down does."""

    def ask(_request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        return b""

    return ask_server(ask, address, port)


@pytest.fixture
def backends() -> Iterator[int]:
    port = free_port()
    servers = [who_server("east", "127.0.23.1", port), unavailable_server("127.0.24.1", port)]
    try:
        yield port
    finally:
        for server in servers:
            server.stop(None)


def test_calls_refused_with_unavailable_are_retried_on_the_other_member(
    tmp_path: Path, backends: int
) -> None:
    files = FleetFiles(
        root=tmp_path / "fleet",
        members=[
            MemberSpec("east", "eu-west", "eu-west-1a", {"who": [Pod("127.0.23.1")]}),
            MemberSpec("west", "eu-west", "eu-west-1b", {"who": [Pod("127.0.24.1")]}),
        ],
        target_port=backends,
        listener_port=free_port(),
        app_protocol="grpc",
    )
    files.policies = {"who": RETRIES}
    files.write()
    with Server(files.fleet) as server:
        server.start()
        boot = grpc_bootstrap(
            node_id="proxyless-retry",
            cluster="test",
            profile=NodeProfile(role=Role.PROXYLESS, region="eu-west"),
            target=Target(port=server.xds_port),
        )
        done = ask_who(tmp_path / "grpc-bootstrap.json", boot, CALLS, CLIENT)

    assert done.returncode == 0, done.stderr[-3000:]
    tally = json.loads(done.stdout)
    assert set(tally) <= {"east", "status:UNAVAILABLE"}
    assert tally.get("status:UNAVAILABLE", 0) <= CALLS // 4
