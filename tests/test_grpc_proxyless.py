"""gRPC's own xDS client (proxyless, `xds:///` target) calls backends through our config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleets import FleetFiles, MemberSpec, Pod

from harness.local import Server, free_port, wait_for
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.tools.bootstrap import Target, grpc_bootstrap

CLIENT = Path(__file__).with_name("grpc_xds_client.py")
GRPCJS = Path(__file__).with_name("grpcjs")
# Calls the grpc-js client makes (one every 50 ms) after its first answer before it is taken
# to have survived our config: it crashed about one second in, on its first ejection interval.
SURVIVE_CALLS = 100


def who_server(member: str, address: str, port: int) -> grpc.Server:
    """A gRPC backend whose one method answers with its member's name."""

    def ask(_request: bytes, _context: Any) -> bytes:
        return member.encode()

    return ask_server(ask, address, port)


def ask_server(ask: Callable[[bytes, Any], bytes], address: str, port: int) -> grpc.Server:
    """A started gRPC backend serving `xdsfleet.test.Who/Ask` with `ask`."""
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


def ask_who(
    path: Path,
    boot: dict[str, Any],
    calls: int,
    client: Path = CLIENT,
    until: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Call who.default `calls` times through gRPC's own xDS client (`client`), bootstrapped
    from `boot` written at `path`, in a process of its own (the bootstrap is process-wide); with
    `until`, stop once each of those members has answered."""
    path.write_text(json.dumps(boot))
    extra = [",".join(until)] if until else []
    return subprocess.run(
        [sys.executable, str(client), "xds:///who.default:80", str(calls), *extra],
        env=os.environ | {"GRPC_XDS_BOOTSTRAP": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def two_members(root: Path, port: int) -> FleetFiles:
    files = FleetFiles(
        root=root,
        members=[
            MemberSpec("east", "eu-west", "eu-west-1a", {"who": [Pod("127.0.21.1")]}),
            MemberSpec("west", "eu-west", "eu-west-1b", {"who": [Pod("127.0.22.1")]}),
        ],
        target_port=port,
        listener_port=free_port(),
        app_protocol="grpc",
    )
    files.write()
    return files


def test_grpc_xds_client_reaches_every_member(tmp_path: Path, backends: int) -> None:
    files = two_members(tmp_path / "fleet", backends)
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
        done = ask_who(bootstrap, boot, 200, until=("east", "west"))
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout)
        assert set(answers) == {"east", "west"}
        opened = server.events("stream_opened")
        assert [(e["node_id"], e["profile"]) for e in opened] == [
            ("proxyless-test", "proxyless eu-west")
        ]


class NodeClient:
    """tests/grpcjs/who_client.js in its own process, its answers collected as they come."""

    def __init__(self, target: str, bootstrap: Path) -> None:
        if not (GRPCJS / "node_modules" / ".installed").exists():
            pytest.fail("grpc-js-xds is not installed: run `make install`")
        self.answers: list[dict[str, str]] = []
        self.process = subprocess.Popen(
            ["node", str(GRPCJS / "who_client.js"), target],
            env=os.environ | {"GRPC_XDS_BOOTSTRAP": str(bootstrap)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.append(json.loads(line))

    def members(self, since: int = 0) -> list[str]:
        return [a["member"] for a in self.answers[since:] if "member" in a]

    def alive(self) -> bool:
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            raise AssertionError(f"grpc-js client exited: {self.process.stderr.read()[-3000:]}")
        return True

    def stop(self) -> tuple[int, str]:
        """Close its input (it exits 0 then) and return its exit code and error output."""
        process = self.process
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdin.close()
        try:
            code = process.wait(timeout=20)
        finally:
            process.kill()
            self._reader.join(timeout=5)
            errors = process.stderr.read()
            process.stdout.close()
            process.stderr.close()
        return code, errors


def test_grpc_js_xds_follows_a_member_going_unready_and_survives_our_config(
    tmp_path: Path, backends: int
) -> None:
    files = two_members(tmp_path / "fleet", backends)
    with Server(files.fleet) as server:
        server.start()
        bootstrap = tmp_path / "grpc-bootstrap.json"
        made = subprocess.run(
            [
                *(sys.executable, "-m", "xdsfleet", "bootstrap", "--role", "proxyless"),
                *("--node-id", "grpc-js-test", "--region", "eu-west", "--output", "json"),
                *("--xds-address", f"127.0.0.1:{server.xds_port}"),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        bootstrap.write_text(made.stdout)
        client = NodeClient("xds:///who.default:80", bootstrap)
        try:
            wait_for(
                lambda: client.alive() and set(client.members()) == {"east", "west"},
                timeout=60,
                what="grpc-js answers from both members",
            )
            west = files.member("west")
            west.services["who"] = [Pod("127.0.22.1", ready=False)]
            files.write_member(west)
            changed = len(client.answers)
            # Once it follows, only east answers: the last twenty answers all come from it.
            wait_for(
                lambda: client.alive() and client.members(changed)[-20:] == ["east"] * 20,
                timeout=60,
                what="grpc-js following west going unready",
            )
            wait_for(
                lambda: client.alive() and len(client.members()) >= SURVIVE_CALLS,
                timeout=60,
                what=f"{SURVIVE_CALLS} answers",
            )
        finally:
            code, errors = client.stop()
        assert code == 0, errors[-3000:]
        assert "TypeError" not in errors
        assert server.events("nack_received") == []
        opened = server.events("stream_opened")
        assert [(e["node_id"], e["profile"]) for e in opened] == [
            ("grpc-js-test", "proxyless eu-west")
        ]
