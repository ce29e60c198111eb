"""mTLS on the xDS port, over a real gRPC server and client with certificates made here: a
client's certificate identity decides which node profiles it may claim; the server's
certificate is reloaded when its files change."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import struct_pb2
from samples import sample
from snapshots import request, snapshot
from structlog.testing import capture_logs

from harness.certs import Authority, Pair
from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.typeurls import CLUSTER
from xdsfleet.model.fleet import FleetState, TLSSecret
from xdsfleet.model.identity import IdentityRule
from xdsfleet.model.node import GATEWAY_KEY, ROLE_KEY, Role
from xdsfleet.pipeline.security import Security
from xdsfleet.server import listen
from xdsfleet.server.ads import AdsService
from xdsfleet.server.tls import TlsFiles

EDGE = "spiffe://prod.example/ns/infra/sa/edge"
RULES = (
    IdentityRule(EDGE, (Role.GATEWAY,), gateways=("infra/edge",)),
    IdentityRule("sidecar-*", (Role.SIDECAR,), members=("*",)),
)


@dataclass
class Server:
    directory: Path
    ca: Authority
    port: int
    ads: AdsService
    fleet: dict[str, FleetState]  # "state": what the authorizer reads the rules from

    def channel(self, client: Pair | None, ca: Path | None = None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            (ca or self.ca.ca).read_bytes(),
            client.key.read_bytes() if client else None,
            client.cert.read_bytes() if client else None,
        )
        return grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    ca = Authority(tmp_path)
    files = ca.issue("server", server=True)
    cache = SnapshotCache(lambda _: snapshot({"a": ("10.0.0.1",)}))
    security = Security(tls=True, mutual=True, host="127.0.0.1")
    fleet = {"state": FleetState("f", (), identities=RULES)}
    ads = AdsService(cache, authorize=security.authorizer(lambda: fleet["state"]))
    tls = TlsFiles(files.cert, files.key, ca.ca)
    grpc_server, port = await listen.start(ads, port=0, host="127.0.0.1", tls=tls)
    try:
        yield Server(tmp_path, ca, port, ads, fleet)
    finally:
        await grpc_server.stop(0)


def claiming(role: str, gateway: str | None = None) -> Any:
    req = request(CLUSTER)
    req.node.id = f"{role}-node"
    fields = {ROLE_KEY: struct_pb2.Value(string_value=role)}
    if gateway:
        fields[GATEWAY_KEY] = struct_pb2.Value(string_value=gateway)
    req.node.metadata.CopyFrom(struct_pb2.Struct(fields=fields))
    return req


async def first_response(channel: grpc.aio.Channel, req: Any) -> Any:
    async with channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(req)
        try:
            return await asyncio.wait_for(call.read(), 10)
        finally:
            call.cancel()


async def test_a_spiffe_identity_may_claim_the_gateway_it_is_allowed(server: Server) -> None:
    edge = server.ca.issue("edge", spiffe=EDGE)
    response = await first_response(server.channel(edge), claiming("gateway", "infra/edge"))
    assert response.type_url == CLUSTER


async def test_a_node_claiming_another_gateway_is_refused_logged_and_counted(
    server: Server,
) -> None:
    edge = server.ca.issue("edge", spiffe=EDGE)
    before = sample("xdsfleet_streams_refused_total", reason="permission_denied")
    with capture_logs() as events, pytest.raises(grpc.aio.AioRpcError) as error:
        await first_response(server.channel(edge), claiming("gateway", "infra/payments"))
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "may not claim" in str(error.value.details())
    [event] = [e for e in events if e["event"] == "stream_refused"]
    assert (event["identity"], event["node_id"]) == (EDGE, "gateway-node")
    assert sample("xdsfleet_streams_refused_total", reason="permission_denied") == before + 1


async def test_a_node_claiming_another_role_is_refused(server: Server) -> None:
    edge = server.ca.issue("edge", spiffe=EDGE)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await first_response(server.channel(edge), claiming("sidecar"))
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_stream_the_new_rules_no_longer_allow_is_closed_and_refused_again(
    server: Server,
) -> None:
    edge = server.ca.issue("edge", spiffe=EDGE)
    sidecar = server.ca.issue("sidecar", common_name="sidecar-web-1")
    channel = server.channel(edge)
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(claiming("gateway", "infra/edge"))
    assert (await asyncio.wait_for(call.read(), 10)).type_url == CLUSTER
    other = server.channel(sidecar)
    kept = await first_stream(other, claiming("sidecar"))

    server.fleet["state"] = FleetState("f", (), identities=RULES[1:])  # edge is no longer listed
    with capture_logs() as events:
        assert server.ads.revoke() == 1

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(call.read(), 10)
    assert ended.value.code() is grpc.StatusCode.PERMISSION_DENIED
    [revoked] = [e for e in events if e["event"] == "stream_revoked"]
    assert revoked["identity"] == EDGE
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await first_response(server.channel(edge), claiming("gateway", "infra/edge"))
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert [info.identity for info in server.ads.streams.values()] == ["sidecar-web-1"]
    kept.cancel()
    await asyncio.gather(channel.close(), other.close())


async def first_stream(channel: grpc.aio.Channel, req: Any) -> Any:
    """An open stream that has had its first response."""
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    await call.write(req)
    await asyncio.wait_for(call.read(), 10)
    return call


async def test_without_a_spiffe_id_the_common_name_is_the_identity(server: Server) -> None:
    sidecar = server.ca.issue("sidecar", common_name="sidecar-web-7f9")
    response = await first_response(server.channel(sidecar), claiming("sidecar"))
    assert response.type_url == CLUSTER
    unknown = server.ca.issue("other", common_name="batch-job")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await first_response(server.channel(unknown), claiming("sidecar"))
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "not listed" in str(error.value.details())


async def test_a_client_without_a_certificate_cannot_connect(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await first_response(server.channel(None), claiming("sidecar"))
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_signed_by_another_ca_cannot_connect(server: Server) -> None:
    stranger = Authority(server.directory / "..", name="stranger-ca").issue("x", spiffe=EDGE)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await first_response(server.channel(stranger), claiming("gateway", "infra/edge"))
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_rotated_server_certificate_is_used_by_the_next_connection(
    server: Server,
) -> None:
    edge = server.ca.issue("edge", spiffe=EDGE)
    # Rotate to a certificate of a new CA: only a client trusting the new CA can connect now.
    rotated = Authority(server.directory, name="rotated-ca")
    new = rotated.issue("server-next", server=True)
    os.replace(new.key, server.directory / "server.key")
    os.replace(new.cert, server.directory / "server.pem")
    with capture_logs() as events:
        response = await first_response(
            server.channel(edge, ca=rotated.ca), claiming("gateway", "infra/edge")
        )
    assert response.type_url == CLUSTER
    assert "tls_reloaded" in [e["event"] for e in events]


def test_plaintext_withholds_secrets_except_on_loopback_or_when_told() -> None:
    state = FleetState("f", (), secrets=(TLSSecret("infra", "tls", "CERT", "KEY"),))
    exposed = Security(tls=False, mutual=False, host="0.0.0.0")
    assert exposed.prepare(state).secrets == ()
    assert Security(tls=True, mutual=False, host="10.1.2.3").prepare(state).secrets == ()
    for kept in (
        Security(tls=False, mutual=False, host="127.0.0.1"),
        Security(tls=False, mutual=False, host="::1"),
        Security(tls=False, mutual=False, host="0.0.0.0", insecure_secrets=True),
        Security(tls=True, mutual=True, host="0.0.0.0"),
    ):
        assert kept.prepare(state) is state
    with capture_logs() as events:
        exposed.announce(state)
    assert [e["event"] for e in events] == ["secrets_withheld"]
