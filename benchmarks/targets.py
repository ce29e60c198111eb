"""The servers the clients are measured against: ours, and the floor.

Both run in the benchmark's own process and event loop, with the same gRPC options
(`listen.OPTIONS`), the same request deserializers and the same shape (a reader task and a writer
loop per stream, woken by an event), so that the difference between their figures is what our
serving path adds: translation of the new state for every active profile, the per-stream
protocol state machines, snapshot lookups and metrics.

`xdsfleet` is driven at `Publisher.publish`, not through the debouncer: its coalescing delay
(up to 100 ms, none for removals) is a policy, not serving cost, and would only hide it. The
churn measure, which is about sustaining a rate, goes through the debouncer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.fleet import HOT_CLUSTER
from benchmarks.iterations import Iterations
from benchmarks.plan import Plan
from xdsfleet.cache import typeurls, wire
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.model.fleet import FleetState
from xdsfleet.pipeline import grpcwake, heap
from xdsfleet.pipeline.fanout import FanOut
from xdsfleet.pipeline.loophold import HoldWatch
from xdsfleet.pipeline.looplag import LoopLag
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.server import listen
from xdsfleet.server.ads import SERVICE, AdsService
from xdsfleet.server.nodes import profile_of

HOST = "127.0.0.1"


class Target(Protocol):
    port: int

    def apply(self, step: int) -> None:
        """Make change `step` of the plan; the clients' ACKs of it are the measurement."""

    def acked(self, step: int) -> int:
        """How many streams the server has seen ACK step `step` (0: fully synced)."""

    async def settled(self) -> None:
        """Once the change is measured: wait for what the server does before the next."""


@dataclass(frozen=True, slots=True)
class Serving:
    """Our serving path, as `xdsfleet serve` assembles it."""

    publisher: Publisher
    ads: AdsService
    port: int
    lag: LoopLag  # the event loop's lag (wall time) and what held it, as `serve` watches them
    fanout: FanOut  # publish pacing and convergence, as in `serve`
    # The loop's iterations in thread CPU, and each lag sample's wait attributed (the
    # benchmarks' own look).
    iterations: Iterations

    def in_sync(self) -> int:
        """Streams whose every subscribed type has ACKed the version of their profile's latest
        snapshot: the server's own view of convergence."""
        cache = self.publisher.cache
        count = 0
        for info in self.ads.streams.values():
            versions = cache.get(info.profile).versions
            statuses = info.machine.status()
            if statuses and all(s.acked_version == versions.get(t) for t, s in statuses.items()):
                count += 1
        return count


@contextlib.asynccontextmanager
async def serving(state: FleetState) -> AsyncIterator[Serving]:
    heap.keep_freed()  # as `serve` does (process-wide: the floor's writes reuse memory too)
    publisher = Publisher(state)
    ads = AdsService(publisher.cache, prepare=publisher.prepare)
    server, port = await listen.start(ads, port=0, host=HOST)
    grpcwake.install()
    iterations = Iterations()
    lag = LoopLag(probe=iterations.sample, watch=HoldWatch())
    undo = iterations.install(asyncio.get_running_loop())
    fanout = FanOut(publisher.cache, ads.streams.values, pacer=ads.pacer)
    background = [
        asyncio.create_task(ads.watchdog(), name="ads-watchdog"),
        asyncio.create_task(lag.run(), name="loop-lag"),
        asyncio.create_task(fanout.run(), name="convergence"),
        asyncio.create_task(fanout.collector.run(), name="collector"),
    ]
    try:
        yield Serving(publisher, ads, port, lag, fanout, iterations)
    finally:
        undo()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await server.stop(0)


@dataclass(slots=True)
class Ours:
    serving: Serving
    plan: Plan
    port: int

    settling: asyncio.Task[None] | None = None

    def apply(self, step: int) -> None:
        # As `serve`'s Debouncer does: publish, then settle the fan-out (its pacing, the
        # collector's terms while it runs and its quiet moment once out) before the next.
        self.serving.publisher.publish(self.plan.states[step])
        fanout = self.serving.fanout
        self.settling = asyncio.create_task(fanout.settle(asyncio.get_running_loop().time()))

    async def settled(self) -> None:
        if self.settling is not None:
            await self.settling

    def acked(self, step: int) -> int:
        # Between changes the cache holds the snapshot of the latest step.
        return self.serving.in_sync()


@contextlib.asynccontextmanager
async def ours(plan: Plan) -> AsyncIterator[Ours]:
    async with serving(plan.states[0]) as served:
        yield Ours(served, plan, served.port)


# --- The floor -------------------------------------------------------------------------------


def _initial_nonce(type_url: str) -> str:
    return f"i{typeurls.SHORT_NAMES[type_url]}"


def _change_nonce(step: int) -> str:
    return f"c{step}"


@dataclass(frozen=True, slots=True)
class _Tables:
    """Everything the floor writes to one profile's streams of one protocol, built once."""

    answers: Mapping[str, bytes]  # type URL -> the complete initial answer
    changes: tuple[bytes, ...]  # step -> the response of the assignments it changed


def _tables(snapshots: list[Snapshot], *, delta: bool) -> _Tables:
    first = snapshots[0]

    def response(snapshot: Snapshot, type_url: str, nonce: str, names: list[str]) -> bytes:
        resources = snapshot.of(type_url)
        version = snapshot.versions[type_url]
        if delta:
            entries = [resources[n].delta_entry for n in names]
            return wire.delta_response(
                system_version_info=version,
                type_url=type_url,
                nonce=nonce,
                entries=entries,
                removed=(),
            )
        entries = [resources[n].sotw_entry for n in names]
        return wire.sotw_response(
            version_info=version, type_url=type_url, nonce=nonce, entries=entries
        )

    return _Tables(
        answers={
            t: response(first, t, _initial_nonce(t), sorted(first.of(t)))
            for t in typeurls.ORDER
            if first.of(t)
        },
        changes=tuple(
            response(
                s,
                typeurls.ENDPOINT,
                _change_nonce(step),
                _changed(snapshots[step - 1], s) if step else [HOT_CLUSTER],
            )
            for step, s in enumerate(snapshots)
        ),
    )


def _changed(before: Snapshot, after: Snapshot) -> list[str]:
    """The assignments a change sends, as our server does: those whose version changed (the hot
    one for a marker move; every one for a member lost)."""
    old = before.of(typeurls.ENDPOINT)
    return sorted(
        name
        for name, res in after.of(typeurls.ENDPOINT).items()
        if name not in old or old[name].version != res.version
    )


# Identity equality: streams are kept in a set.
@dataclass(slots=True, eq=False)
class _Outbox:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[bytes] = field(default_factory=list)
    tables: _Tables | None = None


class Floor:
    """A bare ADS server: it answers each subscription with its profile's complete set of the
    type, writes each change's response bytes, built once, to every stream, and counts ACKs by
    nonce. No protocol logic, no translation, no per-stream state beyond an outbox."""

    def __init__(self, plan: Plan) -> None:
        self._tables = {
            (profile, delta): _tables([s[profile] for s in plan.snapshots], delta=delta)
            for profile in plan.snapshots[0]
            for delta in (False, True)
        }
        self._streams: set[_Outbox] = set()
        self._acks: Counter[str] = Counter()
        self.port = 0

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString
                ),
            },
        )

    def apply(self, step: int) -> None:
        for outbox in self._streams:
            if outbox.tables is not None:
                outbox.pending.append(outbox.tables.changes[step])
                outbox.wake.set()

    def connected(self) -> int:
        return len(self._streams)

    async def settled(self) -> None:
        """Nothing: the floor does nothing between changes."""

    def acked(self, step: int) -> int:
        # Every stream's last initial ACK is of its route configurations.
        return self._acks[_change_nonce(step) if step else _initial_nonce(typeurls.ROUTE)]

    async def _sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._stream(requests, context, delta=False)

    async def _delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._stream(requests, context, delta=True)

    async def _stream(self, requests: AsyncIterator[Any], context: Any, *, delta: bool) -> None:
        outbox = _Outbox()
        self._streams.add(outbox)
        reader = asyncio.create_task(self._read(requests, outbox, delta), name="floor-reader")
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

    async def _read(self, requests: AsyncIterator[Any], outbox: _Outbox, delta: bool) -> None:
        try:
            async for request in requests:
                if outbox.tables is None:
                    outbox.tables = self._tables[profile_of(request.node), delta]
                if request.response_nonce:
                    self._acks[request.response_nonce] += 1
                elif (answer := outbox.tables.answers.get(request.type_url)) is not None:
                    outbox.pending.append(answer)
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
