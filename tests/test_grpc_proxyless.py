"""gRPC's own xDS client (proxyless, `xds:///` target) calls backends through our config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleets import FleetFiles, MemberSpec, Pod

from harness.local import Server, free_port
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.tools.bootstrap import Target, grpc_bootstrap

CLIENT = Path(__file__).with_name("grpc_xds_client.py")


def who_server(member: str, address: str, port: int) -> grpc.Server:
    """A gRPC backend whose one method answers with its member's name."""

    def ask(_request: bytes, _context: Any) -> bytes:
        return member.encode()

    handler = grpc.method_handlers_generic_handler(
        "xdsfleet.test.Who", {"Ask": grpc.unary_unary_rpc_method_handler(ask)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)]
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{address}:{port}")
    server.start()
    return server


@pytest.fixture
def backends() -> Iterator[int]:
    port = free_port()
    servers = [who_server("east", "127.0.21.1", port), who_server("west", "127.0.22.1", port)]
    try:
        yield port
    finally:
        for server in servers:
            server.stop(None)


def test_grpc_xds_client_reaches_every_member(tmp_path: Path, backends: int) -> None:
    files = FleetFiles(
        root=tmp_path / "fleet",
        members=[
            MemberSpec("east", "eu-west", "eu-west-1a", {"who": [Pod("127.0.21.1")]}),
            MemberSpec("west", "eu-west", "eu-west-1b", {"who": [Pod("127.0.22.1")]}),
        ],
        target_port=backends,
        listener_port=free_port(),
        app_protocol="grpc",
    )
    files.write()
    with Server(files.fleet) as server:
        server.start()
        bootstrap = tmp_path / "grpc-bootstrap.json"
        profile = NodeProfile(role=Role.PROXYLESS, region="eu-west")
        boot = grpc_bootstrap(
            node_id="proxyless-test",
            cluster="test",
            profile=profile,
            target=Target(port=server.xds_port),
        )
        bootstrap.write_text(json.dumps(boot))
        env = os.environ | {"GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        done = subprocess.run(
            [sys.executable, str(CLIENT), "xds:///who.default:80", "20"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout)
        assert set(answers) == {"east", "west"}
        opened = server.events("stream_opened")
        assert [(e["node_id"], e["profile"]) for e in opened] == [
            ("proxyless-test", "proxyless eu-west")
        ]
