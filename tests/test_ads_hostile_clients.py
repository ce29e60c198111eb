"""Clients that misbehave over the wire: each stream ends with a status that says why, leaves
nothing on the books, and costs others nothing.

A real gRPC server throughout; the clients are real gRPC channels or, where a client library
cannot be made to misbehave, raw HTTP/2 (tests/raw_http2.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from raw_http2 import read_part_and_vanish
from samples import sample
from snapshots import delta_request, request, snapshot
from structlog.testing import capture_logs
from test_ads_server import ONE, TWO, Fixture, read, serving, with_node
from waiting import eventually

from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.model.node import GATEWAY_KEY, ROLE_KEY, NodeProfile
from xdsfleet.pipeline.httpapi import clients
from xdsfleet.server.ads import Limits
from xdsfleet.server.sotw import SotwStream

# A stalled client has a connection of its own whose windows stay at 1 MB (BDP probing would
# grow them as data comes): the first response, about 2.5 MB, blocks the server's write, whether
# or not the server would send more before an ACK.
STALLING = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1_000_000),
)


def huge(version: int) -> Snapshot:
    addresses = tuple(f"10.{version}.{i // 250 % 250}.{i % 250}" for i in range(100_000))
    return snapshot({"a": addresses})


def closed(
    logs: list[MutableMapping[str, Any]], reason: str | None = None
) -> list[MutableMapping[str, Any]]:
    return [
        e
        for e in logs
        if e["event"] == "stream_closed" and (reason is None or e["reason"] == reason)
    ]


async def status_of(call: Any) -> grpc.StatusCode:
    """Read until the call ends; its status code."""
    try:
        while True:
            if await read(call) is grpc.aio.EOF:
                break
    except grpc.aio.AioRpcError as err:
        return err.code()
    code: grpc.StatusCode = await call.code()
    return code


@pytest.mark.parametrize(
    ("endpoints", "read_bytes"),
    # About 2.5 MB of endpoints, of which each client reads 40 kB: it goes mid-response, the
    # case that leaked. Or a small response (one DATA frame) read whole: it goes while the
    # stream is idle.
    [(100_000, 40_000), (10, 1)],
    ids=["mid-response", "idle"],
)
async def test_connections_dropped_leave_nothing_behind(endpoints: int, read_bytes: int) -> None:
    addresses = tuple(f"10.{i // 62500}.{i // 250 % 250}.{i % 250}" for i in range(endpoints))
    async with serving(snapshot({"a": addresses})) as fixture:
        connections = 60
        first = with_node(request(ENDPOINT, ["a"])).SerializeToString()
        before = sample("xdsfleet_streams", protocol="sotw")
        with capture_logs() as logs:
            await asyncio.gather(
                *(
                    read_part_and_vanish(fixture.port, first, read=read_bytes, reset=i % 2 == 0)
                    for i in range(connections)
                )
            )
            service = fixture.service
            await eventually(lambda: len(closed(logs)) == connections)
        assert not service.streams
        assert not service.waiting
        assert not fixture.cache.profiles()
        assert sample("xdsfleet_streams", protocol="sotw") == before
        # Each was served, and each close was logged as the client going, not as our failure.
        assert len([e for e in logs if e["event"] == "stream_opened"]) == connections
        assert {e["reason"] for e in closed(logs)} <= {"write_failed", "cancelled", "client_closed"}
        assert not [e for e in logs if e["log_level"] == "error"]


async def test_a_client_that_stopped_reading_is_told_and_reconnects() -> None:
    async with serving(huge(0), send_timeout=0.3) as fixture:
        watchdog = asyncio.create_task(fixture.service.watchdog(interval=0.05))
        try:
            with capture_logs() as logs:
                stalled = fixture.stub(*STALLING).StreamAggregatedResources()
                await stalled.write(with_node(request(ENDPOINT, ["a"])))
                await eventually(lambda: bool(closed(logs)))
            assert [(e["reason"], e["code"]) for e in closed(logs)] == [
                ("send_timeout", "UNAVAILABLE")
            ]
            # It reads again: what was under way, then the status that makes it reconnect.
            fixture.publish(huge(1))
            assert await status_of(stalled) == grpc.StatusCode.UNAVAILABLE
            again = fixture.stub().StreamAggregatedResources()
            await again.write(with_node(request(ENDPOINT, ["a"])))
            response = await read(again)
            assert response.version_info == fixture.current.versions[ENDPOINT]
            again.cancel()
        finally:
            watchdog.cancel()


def raw_stub(fixture: Fixture) -> Any:
    """A SotW call whose requests are bytes, so that a test can send what no client would."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{fixture.port}")
    return channel.stream_stream(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )()


async def test_garbage_after_a_valid_request_ends_the_stream_with_an_error() -> None:
    async with serving(ONE) as fixture:
        call = raw_stub(fixture)
        with capture_logs() as logs:
            await call.write(with_node(request(CLUSTER)).SerializeToString())
            assert await read(call)
            await call.write(b"\xff\xff\xff\xff not a protobuf")
            assert await status_of(call) == grpc.StatusCode.INVALID_ARGUMENT
            await eventually(lambda: bool(closed(logs)))
        assert [e["reason"] for e in closed(logs)] == ["malformed_request"]
        assert any(e["event"] == "request_malformed" for e in logs)


async def test_garbage_after_an_unchanged_list_of_names_ends_the_stream_with_an_error() -> None:
    """An unchanged list of names is told by its bytes and only the rest of the request is
    decoded (`server/requests.py`): garbage in the rest is still a malformed request."""
    async with serving(TWO) as fixture:
        call = raw_stub(fixture)
        with capture_logs() as logs:
            await call.write(with_node(request(ENDPOINT, ["a", "b"])).SerializeToString())
            sent = discovery_pb2.DiscoveryResponse.FromString(await read(call))
            ack = request(ENDPOINT, ["a", "b"], nonce=sent.nonce, version=sent.version_info)
            await call.write(ack.SerializeToString())
            await call.write(ack.SerializeToString() + b"\xff\xff\xff\xff")
            assert await status_of(call) == grpc.StatusCode.INVALID_ARGUMENT
            await eventually(lambda: bool(closed(logs)))
        assert [e["reason"] for e in closed(logs)] == ["malformed_request"]


async def test_garbage_as_the_first_request_is_refused() -> None:
    async with serving(ONE) as fixture:
        call = raw_stub(fixture)
        with capture_logs() as logs:
            await call.write(b"\xff\xff\xff\xff not a protobuf")
            assert await status_of(call) == grpc.StatusCode.INVALID_ARGUMENT
        refused = [e for e in logs if e["event"] == "stream_refused"]
        assert [e["reason"] for e in refused] == ["malformed_request"]
        assert not fixture.service.waiting
        assert not fixture.service.streams


async def test_a_failing_reader_ends_the_stream_internal_with_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = SotwStream.on_request

    def failing(self: SotwStream, req: Any, same_names: bool = False) -> Any:
        if req.type_url == "type.googleapis.com/fault.Injected":
            raise RuntimeError("injected fault")
        return real(self, req, same_names)

    monkeypatch.setattr(SotwStream, "on_request", failing)
    async with serving(ONE) as fixture:
        call = fixture.stub().StreamAggregatedResources()
        with capture_logs() as logs:
            await call.write(with_node(request(CLUSTER)))
            await read(call)
            await call.write(request("type.googleapis.com/fault.Injected"))
            assert await status_of(call) == grpc.StatusCode.INTERNAL
            await eventually(lambda: bool(closed(logs)))
        assert [e["reason"] for e in closed(logs)] == ["reader_failed"]
        failed = [e for e in logs if e["event"] == "stream_reader_failed"]
        assert isinstance(failed[0]["exc_info"], RuntimeError)


async def test_an_oversized_request_is_refused_and_others_are_still_served() -> None:
    async with serving(ONE, limits=Limits(names_per_request=1000, unknown_names=100)) as fixture:
        other = fixture.stub().StreamAggregatedResources()
        await other.write(with_node(request(CLUSTER)))
        first = await read(other)
        await other.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))
        refused_before = sample("xdsfleet_streams_refused_total", reason="too_many_names")
        with capture_logs() as logs:
            huge = fixture.stub().StreamAggregatedResources()
            await huge.write(with_node(request(ENDPOINT, [f"c{i}" for i in range(5000)])))
            assert await status_of(huge) == grpc.StatusCode.RESOURCE_EXHAUSTED
            unknown = fixture.stub().StreamAggregatedResources()
            await unknown.write(with_node(request(ENDPOINT, [f"u{i}" for i in range(101)])))
            assert await status_of(unknown) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert {e["reason"] for e in logs if e["event"] == "request_refused"} == {
            "too_many_names",
            "too_many_unknown_names",
        }
        assert sample("xdsfleet_streams_refused_total", reason="too_many_names") == (
            refused_before + 1
        )
        # Within the limits, unknown names are answered (with placeholders), and the other
        # client keeps getting changes.
        small = fixture.stub().StreamAggregatedResources()
        await small.write(with_node(request(ENDPOINT, ["a", *(f"u{i}" for i in range(100))])))
        assert len((await read(small)).resources) == 101
        fixture.publish(TWO)
        assert len((await read(other)).resources) == 2
        for call in (other, small):
            call.cancel()


async def test_a_stream_that_never_names_its_node_is_listed_then_timed_out() -> None:
    async with serving(ONE, limits=Limits(first_request_seconds=0.5)) as fixture:
        silent = fixture.stub().StreamAggregatedResources()
        await eventually(lambda: bool(fixture.service.waiting))
        assert [c["problem"] for c in clients(fixture.service)] == [
            "no first request yet (it names the node)"
        ]
        assert await status_of(silent) == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: not fixture.service.waiting)


async def test_a_profile_without_a_good_snapshot_is_refused_unavailable_until_it_has_one() -> None:
    async with serving(ONE) as fixture:
        fixture.failing = True
        for stub in (fixture.stub(), fixture.stub()):
            sotw = stub.StreamAggregatedResources()
            await sotw.write(with_node(request(CLUSTER)))
            assert await status_of(sotw) == grpc.StatusCode.UNAVAILABLE
            delta = stub.DeltaAggregatedResources()
            await delta.write(with_node(delta_request(CLUSTER, initial={"a": "v"})))
            assert await status_of(delta) == grpc.StatusCode.UNAVAILABLE
        assert not fixture.service.streams
        assert not fixture.cache.profiles()
        # A later build succeeds: the client's retry is served.
        fixture.failing = False
        call = fixture.stub().StreamAggregatedResources()
        await call.write(with_node(request(CLUSTER)))
        assert len((await read(call)).resources) == 1
        call.cancel()


@pytest.mark.parametrize(
    "value",
    [struct_pb2.Value(number_value=1), struct_pb2.Value(list_value=struct_pb2.ListValue())],
)
async def test_a_role_that_is_not_a_string_is_refused_naming_the_field(value: Any) -> None:
    async with serving(ONE) as fixture:
        req = with_node(request(CLUSTER))
        req.node.metadata.fields[ROLE_KEY].CopyFrom(value)
        call = fixture.stub().StreamAggregatedResources()
        await call.write(req)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read(call)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ROLE_KEY in (caught.value.details() or "")


async def test_a_node_naming_an_unknown_gateway_is_logged_once_and_listed() -> None:
    def problem_of(profile: NodeProfile) -> str | None:
        return f"gateway {profile.gateway} is not in the fleet" if profile.gateway else None

    async with serving(ONE, problem_of=problem_of) as fixture:
        req = with_node(request(CLUSTER), role="gateway")
        req.node.metadata.fields[GATEWAY_KEY].string_value = "infra/nope"
        call = fixture.stub().StreamAggregatedResources()
        with capture_logs() as logs:
            await call.write(req)
            first = await read(call)
            await call.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))
            fixture.publish(TWO)
            await read(call)
        assert [e["problem"] for e in logs if e["event"] == "node_misconfigured"] == [
            "gateway infra/nope is not in the fleet"
        ]
        assert [c["problem"] for c in clients(fixture.service)] == [
            "gateway infra/nope is not in the fleet"
        ]
        call.cancel()


async def test_huge_node_fields_are_clipped_in_logs_and_listings() -> None:
    async with serving(ONE) as fixture:
        req = with_node(request(CLUSTER))
        req.node.id = "n" * 1_000_000
        req.node.locality.region = "r" * 1_000_000
        call = fixture.stub(
            ("grpc.max_send_message_length", 8 * 1024 * 1024)
        ).StreamAggregatedResources()
        with capture_logs() as logs:
            await call.write(req)
            await read(call)
        opened = next(e for e in logs if e["event"] == "stream_opened")
        assert len(opened["profile"]) < 200
        listed = clients(fixture.service)[0]
        assert len(listed["node"]) < 300
        assert len(listed["profile"]) < 200
        call.cancel()


async def test_unknown_types_are_counted_and_logged_once_per_stream() -> None:
    async with serving(ONE) as fixture:
        before = sample("xdsfleet_unsupported_requests_total")
        call = fixture.stub().StreamAggregatedResources()
        with capture_logs() as logs:
            await call.write(with_node(request(CLUSTER)))
            await read(call)
            for _ in range(5):
                await call.write(request("type.googleapis.com/unknown.Thing"))
            await eventually(lambda: sample("xdsfleet_unsupported_requests_total") == before + 5)
        assert len([e for e in logs if e["event"] == "unsupported_type"]) == 1
        call.cancel()


async def test_delta_subscriptions_are_bounded_over_requests_too() -> None:
    async with serving(ONE, limits=Limits(names_per_request=1000, unknown_names=1000)) as fixture:

        async def subscribe_600_drop_300_add(more: int) -> Any:
            call = fixture.stub().DeltaAggregatedResources()
            await call.write(with_node(delta_request(ENDPOINT, [f"u{i}" for i in range(600)])))
            first = await read(call)
            unsubscribe = [f"u{i}" for i in range(300)]
            await call.write(delta_request(ENDPOINT, [], unsubscribe, nonce=first.nonce))
            await call.write(delta_request(ENDPOINT, [f"v{i}" for i in range(more)]))
            return call

        # Each request is within the bound; together they subscribe 600 - 300 + 800 = 1,100.
        call = await subscribe_600_drop_300_add(800)
        assert await status_of(call) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Unsubscribing made room: 600 - 300 + 700 = 1,000 fits, and is answered.
        ok = await subscribe_600_drop_300_add(700)
        assert len((await read(ok)).removed_resources) == 700
        ok.cancel()


async def test_a_half_closed_stream_ends_ok_as_client_closed() -> None:
    async with serving(ONE) as fixture:
        call = fixture.stub().StreamAggregatedResources()
        with capture_logs() as logs:
            await call.write(with_node(request(CLUSTER)))
            await read(call)
            await call.done_writing()
            assert await status_of(call) == grpc.StatusCode.OK
            await eventually(lambda: bool(closed(logs)))
        assert [(e["reason"], e["code"]) for e in closed(logs)] == [("client_closed", "OK")]
