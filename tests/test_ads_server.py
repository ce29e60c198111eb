"""Raw ADS over a real gRPC server and channel: the protocol rules as a client sees them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import struct_pb2
from snapshots import delta_request, request, snapshot
from waiting import eventually

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.model.node import ROLE_KEY, NodeProfile
from xdsfleet.server import listen
from xdsfleet.server.ads import AdsService, Limits
from xdsfleet.server.budget import WriteBudget

ONE = snapshot({"a": ("10.0.0.1",)})
TWO = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})
THREE = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",), "c": ("10.0.0.3",)})
READ_TIMEOUT = 10


@dataclass
class Fixture:
    cache: SnapshotCache
    service: AdsService
    port: int
    current: Snapshot
    # Every first build of a profile fails (the builder gives no snapshot) while this is set.
    failing: bool = False

    def publish(self, snap: Snapshot) -> None:
        self.current = snap
        for profile in self.cache.profiles():
            self.cache.set(profile, snap)

    def stub(self, *options: tuple[str, int]) -> Any:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)


async def start(
    initial: Snapshot,
    *,
    send_timeout: float = 30,
    limits: Limits | None = None,
    problem_of: Callable[[NodeProfile], str | None] | None = None,
) -> tuple[Fixture, grpc.aio.Server]:
    holder: dict[str, Fixture] = {}
    cache = SnapshotCache(lambda _profile: None if holder["f"].failing else holder["f"].current)
    service = AdsService(
        cache,
        send_timeout=send_timeout,
        limits=limits or Limits(),
        problem_of=problem_of or (lambda _profile: None),
    )
    server, port = await listen.start(service, port=0, host="127.0.0.1")
    holder["f"] = Fixture(cache, service, port, initial)
    return holder["f"], server


@contextlib.asynccontextmanager
async def serving(
    initial: Snapshot,
    *,
    send_timeout: float = 30,
    limits: Limits | None = None,
    problem_of: Callable[[NodeProfile], str | None] | None = None,
) -> AsyncIterator[Fixture]:
    """A server (`start`) for the length of the block, stopped however it ends."""
    fixture, server = await start(
        initial, send_timeout=send_timeout, limits=limits, problem_of=problem_of
    )
    try:
        yield fixture
    finally:
        await server.stop(0)


@pytest.fixture
async def ads() -> AsyncIterator[Fixture]:
    async with serving(ONE) as fixture:
        yield fixture


def with_node(req: Any, role: str = "sidecar") -> Any:
    req.node.id = "test-node"
    req.node.locality.CopyFrom(base_pb2.Locality(region="eu-west", zone="eu-west-1a"))
    req.node.metadata.CopyFrom(
        struct_pb2.Struct(fields={ROLE_KEY: struct_pb2.Value(string_value=role)})
    )
    return req


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), READ_TIMEOUT)


def cluster_names(response: Any) -> list[str]:
    out = []
    for packed in response.resources:
        msg = cluster_pb2.Cluster()
        packed.Unpack(msg)
        out.append(msg.name)
    return sorted(out)


async def test_sotw_client_gets_clusters_then_only_changes(ads: Fixture) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    first = await read(call)
    assert cluster_names(first) == ["a"]
    await call.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))
    ads.publish(TWO)
    second = await read(call)
    # Nothing was sent between the ACK and the change: the next message is the change.
    assert cluster_names(second) == ["a", "b"]
    assert second.version_info != first.version_info
    call.cancel()


async def test_sotw_nacked_config_is_not_resent(ads: Fixture) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    first = await read(call)
    await call.write(request(CLUSTER, nonce=first.nonce, version="", error="cluster a is bad"))
    await call.write(request(CLUSTER, nonce=first.nonce, version=""))  # a stale re-request
    ads.publish(TWO)
    second = await read(call)
    assert cluster_names(second) == ["a", "b"]
    info = next(iter(ads.service.streams.values()))
    assert info.machine.status()[CLUSTER].nack_message == "cluster a is bad"
    call.cancel()


async def test_sotw_unknown_endpoints_are_answered_empty(ads: Fixture) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(ENDPOINT, ["nope"])))
    response = await read(call)
    assert response.type_url == ENDPOINT
    assert len(response.resources) == 1
    call.cancel()


async def test_two_servers_serve_identical_versions() -> None:
    first, server_one = await start(snapshot({"a": ("10.0.0.1",)}))
    second, server_two = await start(snapshot({"a": ("10.0.0.1",)}))
    try:
        responses = []
        for fixture in (first, second):
            call = fixture.stub().StreamAggregatedResources()
            await call.write(with_node(request(CLUSTER)))
            responses.append(await read(call))
            call.cancel()
        assert responses[0].version_info == responses[1].version_info
        assert responses[0].resources == responses[1].resources
    finally:
        await server_one.stop(0)
        await server_two.stop(0)


async def test_delta_client_gets_changes_and_removals(ads: Fixture) -> None:
    ads.publish(TWO)
    call = ads.stub().DeltaAggregatedResources()
    await call.write(with_node(delta_request(CLUSTER)))
    first = await read(call)
    assert sorted(r.name for r in first.resources) == ["a", "b"]
    await call.write(delta_request(CLUSTER, nonce=first.nonce))
    ads.publish(ONE)
    second = await read(call)
    assert list(second.removed_resources) == ["b"]
    assert list(second.resources) == []
    call.cancel()


async def test_delta_reconnect_with_initial_versions_gets_only_what_is_new(ads: Fixture) -> None:
    call = ads.stub().DeltaAggregatedResources()
    await call.write(with_node(delta_request(CLUSTER)))
    first = await read(call)
    held = {r.name: r.version for r in first.resources}
    call.cancel()
    ads.publish(THREE)
    again = ads.stub().DeltaAggregatedResources()
    await again.write(with_node(delta_request(CLUSTER, initial=held)))
    response = await read(again)
    assert sorted(r.name for r in response.resources) == ["b", "c"]
    again.cancel()


async def test_node_with_an_unknown_role_is_refused(ads: Fixture) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER), role="mystery"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "mystery" in (caught.value.details() or "")


async def test_closed_stream_leaves_no_trace(ads: Fixture) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    await read(call)
    assert len(ads.service.streams) == 1
    await call.done_writing()
    await eventually(lambda: not ads.service.streams and not ads.cache.profiles())


def big(version: int, endpoints: int = 4000) -> Snapshot:
    """One assignment of about 100 kB (by default), larger than a connection's windows."""
    addresses = tuple(f"10.{version}.{i // 250}.{i % 250}" for i in range(endpoints))
    return snapshot({"a": addresses})


async def test_a_client_that_stops_reading_is_cut_loose_and_delays_no_one() -> None:
    # About 1 MB: more than gRPC buffers for a connection that does not read, so that the one
    # response it is sent (rule 26: nothing more until it answers) is never written out.
    fixture, server = await start(big(0, endpoints=40_000), send_timeout=0.5)
    watchdog = asyncio.create_task(fixture.service.watchdog(interval=0.05))
    try:
        # A connection of its own whose windows never grow.
        own = (("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0))
        stalled = fixture.stub(*own).StreamAggregatedResources()
        await stalled.write(with_node(request(ENDPOINT, ["a"])))
        reader = fixture.stub().StreamAggregatedResources()
        await reader.write(with_node(request(ENDPOINT, ["a"])))
        await eventually(lambda: len(fixture.service.streams) == 2)
        received = [await read(reader)]
        for version in range(1, 40):
            await reader.write(request(ENDPOINT, ["a"], nonce=received[-1].nonce))
            fixture.publish(big(version))
            received.append(await read(reader))
            if len(fixture.service.streams) == 1:
                break
        # The reader got every change while the other stalled, and the stalled one was closed.
        await eventually(lambda: len(fixture.service.streams) == 1)
        assert len({r.version_info for r in received}) == len(received)
        stalled.cancel()
        reader.cancel()
    finally:
        watchdog.cancel()
        await server.stop(0)


async def test_streams_are_served_in_turn_when_the_write_budget_is_smaller_than_a_response(
    ads: Fixture,
) -> None:
    ads.service.budget = WriteBudget(1)  # every response is larger: each goes alone
    calls = [ads.stub().StreamAggregatedResources() for _ in range(5)]
    for call in calls:
        await call.write(with_node(request(CLUSTER)))
    firsts = [await read(call) for call in calls]
    assert [cluster_names(first) for first in firsts] == [["a"]] * 5
    for call, first in zip(calls, firsts, strict=True):
        await call.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))
    ads.publish(TWO)
    assert [cluster_names(await read(call)) for call in calls] == [["a", "b"]] * 5
    assert ads.service.budget.in_flight == 0
    for call in calls:
        call.cancel()
