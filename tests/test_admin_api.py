"""The admin API over a real gRPC server and channel, beside a real ADS server with raw ADS
clients: each client's state per type as `xdsfleet status` shows it (SYNCED, PENDING, STALE,
NACKED with the message), what it holds, and the bearer token that guards it all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from snapshots import request, snapshot
from test_ads_server import Fixture, read, start, with_node
from waiting import eventually

from harness.certs import Authority
from xdsfleet.admin.client import AdminClient, Connection
from xdsfleet.admin.service import AdminService
from xdsfleet.admin.v1 import admin_pb2
from xdsfleet.cache.typeurls import CLUSTER
from xdsfleet.pipeline import adminport
from xdsfleet.server.tls import TlsFiles
from xdsfleet.status.reports import MemberReport

TOKEN = "let-me-in"
STALE = MemberReport("west", "kubeconfig west", True, True, "", {"nodes": "down"}, 2, 5, 1000.0)


@dataclass
class Admin:
    ads: Fixture
    port: int

    def client(self, token: str | None = TOKEN) -> AdminClient:
        return AdminClient(Connection(f"127.0.0.1:{self.port}", token=token))

    async def ask(self, method: str, *args: Any, token: str | None = TOKEN) -> Any:
        client = self.client(token)
        try:
            # The client blocks; the servers run on this loop.
            return await asyncio.to_thread(getattr(client, method), *args)
        finally:
            client.close()


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    fixture, xds = await start(snapshot({"a": ("10.0.0.1",)}))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server, _, port = await adminport.start(
        adminport.AdminSettings("127.0.0.1", 0, token_file=token_file),
        fixture.service,
        snapshot_of=fixture.cache.get,
        members=lambda: [STALE],
    )
    try:
        yield Admin(fixture, port)
    finally:
        await asyncio.gather(server.stop(0), xds.stop(0))


def service(admin: Admin, *, clock: float = 0.0) -> AdminService:
    """The servicer itself, with a clock `clock` seconds ahead (for STALE)."""
    return AdminService(
        admin.ads.service,
        snapshot_of=admin.ads.cache.get,
        members=list,
        clock=lambda: time.time() + clock,
    )


def cds(client: admin_pb2.Client) -> Any:
    [found] = [t for t in client.types if t.short_name == "CDS"]
    return found


async def test_a_client_that_acked_the_latest_is_synced(admin: Admin) -> None:
    call = admin.ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    first = await read(call)
    [client] = (await admin.ask("list_clients")).clients
    assert (client.node_id, cds(client).state) == ("test-node", admin_pb2.PENDING)
    await call.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))
    await wait_state(admin, admin_pb2.SYNCED)
    [client] = (await admin.ask("list_clients")).clients
    assert cds(client).acked_version == cds(client).served_version == first.version_info
    assert client.state == admin_pb2.SYNCED
    call.cancel()


async def test_an_unanswered_response_is_stale_after_five_seconds(admin: Admin) -> None:
    call = admin.ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    await read(call)
    [now] = service(admin).list_clients().clients
    [later] = service(admin, clock=5.5).list_clients().clients
    assert (cds(now).state, cds(later).state) == (admin_pb2.PENDING, admin_pb2.STALE)
    assert later.state == admin_pb2.STALE
    call.cancel()


async def test_a_rejected_latest_is_nacked_with_the_message(admin: Admin) -> None:
    call = admin.ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    first = await read(call)
    await call.write(request(CLUSTER, nonce=first.nonce, version="", error="cluster a is bad"))
    await wait_state(admin, admin_pb2.NACKED)
    [client] = (await admin.ask("list_clients")).clients
    assert cds(client).nack_message == "cluster a is bad"
    assert cds(client).nacked_version == first.version_info
    call.cancel()


async def test_a_clients_config_is_what_it_acked(admin: Admin) -> None:
    call = admin.ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    first = await read(call)
    await call.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))
    await wait_state(admin, admin_pb2.SYNCED)
    [config] = (await admin.ask("client_config", "test-node")).configs
    [resource] = config.resources
    assert (resource.type_url, resource.name, resource.current) == (CLUSTER, "a", True)
    assert resource.resource.type_url == CLUSTER
    assert not (await admin.ask("client_config", "nobody")).configs
    call.cancel()


async def test_members_show_since_when_they_are_stale(admin: Admin) -> None:
    [member] = (await admin.ask("list_members")).members
    assert (member.name, member.stale, member.stale_since) == ("west", True, 1000.0)
    assert member.message == "nodes: down"


async def test_without_the_token_the_admin_api_answers_nothing(admin: Admin) -> None:
    for token in (None, "guess"):
        with pytest.raises(grpc.RpcError) as error:
            await admin.ask("list_clients", token=token)
        assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_health_needs_no_token(admin: Admin) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{admin.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def wait_state(admin: Admin, state: int) -> None:
    def reached() -> bool:
        clients = service(admin).list_clients().clients
        return bool(clients) and clients[0].state == state

    await eventually(reached)


async def test_behind_mtls_the_admin_api_answers_clients_with_a_certificate(
    tmp_path: Path,
) -> None:
    ca = Authority(tmp_path)
    served, sre = ca.issue("admin", server=True), ca.issue("sre", common_name="sre")
    fixture, xds = await start(snapshot({"a": ("10.0.0.1",)}))
    tls = TlsFiles(served.cert, served.key, ca.ca)
    server, _, port = await adminport.start(
        adminport.AdminSettings("127.0.0.1", 0, tls=tls),
        fixture.service,
        snapshot_of=fixture.cache.get,
        members=list,
    )
    address = f"127.0.0.1:{port}"
    try:
        with_cert = AdminClient(Connection(address, ca=ca.ca, cert=sre.cert, key=sre.key))
        without = AdminClient(Connection(address, ca=ca.ca))
        try:
            answer = await asyncio.to_thread(with_cert.list_clients)
            assert list(answer.clients) == []
            with pytest.raises(grpc.RpcError) as error:
                await asyncio.to_thread(without.list_clients)
            assert error.value.code() is grpc.StatusCode.UNAVAILABLE
        finally:
            with_cert.close()
            without.close()
    finally:
        await asyncio.gather(server.stop(0), xds.stop(0))
