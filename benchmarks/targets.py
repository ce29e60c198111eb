"""The two servers the clients are measured against: ours, and the floor.

Both run in the benchmark's own process and event loop, with the same gRPC options
(`listen.OPTIONS`), the same request deserializer and the same shape (a reader task and a writer
loop per stream, woken by an event), so that the difference between their figures is what our
serving path adds: the per-stream protocol state machine, snapshot lookups, metrics and the
translation of the new state.

`xdsfleet` is driven at `Publisher.publish`, not through the Store: the Store's coalescing delay
(up to 100 ms, none for removals) is a policy, not serving cost, and would only hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.fleet import HOT_CLUSTER, Plan
from xdsfleet.app.publisher import Publisher
from xdsfleet.cache import types, wire
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.server import listen
from xdsfleet.server.ads import SERVICE, AdsService

HOST = "127.0.0.1"


class Target(Protocol):
    port: int

    def apply(self, step: int) -> None:
        """Make change `step` of the plan; the clients' ACKs of it are the measurement."""

    def acked(self, version: str) -> int:
        """How many streams the server has seen ACK EDS `version`."""


@dataclass(slots=True)
class Ours:
    publisher: Publisher
    ads: AdsService
    plan: Plan
    port: int

    def apply(self, step: int) -> None:
        self.publisher.publish(self.plan.states[step])

    def acked(self, version: str) -> int:
        statuses = (info.machine.status().get(types.ENDPOINT) for info in self.ads.streams.values())
        return sum(1 for s in statuses if s is not None and s.acked_version == version)


@contextlib.asynccontextmanager
async def ours(plan: Plan) -> AsyncIterator[Ours]:
    publisher = Publisher(plan.states[0])
    ads = AdsService(publisher.cache)
    server, port = await listen.start(ads, port=0, host=HOST)
    try:
        yield Ours(publisher, ads, plan, port)
    finally:
        await server.stop(0)


def _response(snapshot: Snapshot, type_url: str, nonce: str, names: list[str]) -> bytes:
    """What our server sends for `names` of `type_url`, framed from the cache's encoded bytes."""
    resources = snapshot.of(type_url)
    return wire.sotw_response(
        version_info=snapshot.versions[type_url],
        type_url=type_url,
        nonce=nonce,
        entries=[resources[name].sotw_entry for name in names],
    )


# Identity equality: streams are kept in a set.
@dataclass(slots=True, eq=False)
class _Outbox:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[bytes] = field(default_factory=list)


class Floor:
    """A bare ADS server: it answers a stream's subscriptions from a fixed table, writes each
    change's response bytes, built once, to every stream, and counts ACKs. No protocol logic."""

    def __init__(self, plan: Plan) -> None:
        first = plan.snapshots[0]
        self._answers = {
            t: _response(first, t, "floor-0", sorted(first.of(t)))
            for t in (types.CLUSTER, types.ENDPOINT)
        }
        self._changes = [
            _response(snapshot, types.ENDPOINT, f"floor-{step}", [HOT_CLUSTER])
            for step, snapshot in enumerate(plan.snapshots)
        ]
        self._streams: set[_Outbox] = set()
        self._acks: Counter[str] = Counter()
        self.port = 0

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._stream, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
                )
            },
        )

    def apply(self, step: int) -> None:
        response = self._changes[step]
        for outbox in self._streams:
            outbox.pending.append(response)
            outbox.wake.set()

    def acked(self, version: str) -> int:
        return self._acks[version]

    async def _stream(self, requests: AsyncIterator[Any], context: Any) -> None:
        outbox = _Outbox()
        self._streams.add(outbox)
        reader = asyncio.create_task(self._read(requests, outbox), name="floor-reader")
        try:
            while not reader.done():
                await outbox.wake.wait()
                outbox.wake.clear()
                pending, outbox.pending = outbox.pending, []
                for response in pending:
                    await context.write(response)
        finally:
            self._streams.discard(outbox)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[Any], outbox: _Outbox) -> None:
        try:
            async for request in requests:
                if request.response_nonce:
                    self._acks[request.version_info] += 1
                else:
                    outbox.pending.append(self._answers[request.type_url])
                    outbox.wake.set()
        finally:
            outbox.wake.set()


@contextlib.asynccontextmanager
async def floor(plan: Plan) -> AsyncIterator[Floor]:
    target = Floor(plan)
    server = grpc.aio.server(options=listen.OPTIONS)
    server.add_generic_rpc_handlers((target.handler(),))
    target.port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    try:
        yield target
    finally:
        await server.stop(0)
