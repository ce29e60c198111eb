"""A reconnect storm is admitted at a bounded rate, first come first served, and the streams
already established keep getting their pushes while it lasts."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from snapshots import request, snapshot
from test_ads_server import read, with_node
from waiting import eventually

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import CLUSTER
from xdsfleet.server import listen
from xdsfleet.server.admission import Admission
from xdsfleet.server.ads import AdsService

STORM = 300


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_is_admitted_at_once_then_one_per_token_in_arrival_order() -> None:
    clock = Clock()
    admission = Admission(rate=1000, burst=3, clock=clock)
    admitted: list[int] = []

    async def stream(i: int) -> None:
        await admission.admit()
        admitted.append(i)

    tasks = [asyncio.create_task(stream(i)) for i in range(6)]
    await eventually(lambda: len(admitted) == 3 and admission.waiting == 3)
    clock.now += 0.001  # one token
    await eventually(lambda: len(admitted) == 4)
    clock.now += 0.002  # two more
    await eventually(lambda: len(admitted) == 6)
    assert admitted == list(range(6))
    await asyncio.gather(*tasks)


async def test_without_a_rate_every_stream_is_admitted_at_once() -> None:
    admission = Admission(rate=0, burst=1, clock=lambda: 0.0)
    await asyncio.wait_for(asyncio.gather(*(admission.admit() for _ in range(50))), 5)


async def test_established_streams_get_their_pushes_while_a_storm_waits() -> None:
    current: dict[str, Snapshot] = {"s": snapshot({"a": ("10.0.0.1",)})}
    cache = SnapshotCache(lambda _: current["s"])
    # The storm takes ~4.7 s to admit: the push must come within it even on a loaded machine
    # (at 200/s, 1.4 s, a busy `make test` once saw the storm admitted first).
    ads = AdsService(cache, admission=Admission(rate=60, burst=20))
    server, port = await listen.start(ads, port=0, host="127.0.0.1")
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(4)]
    try:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channels[0])
        established = stub.StreamAggregatedResources()
        await established.write(with_node(request(CLUSTER)))
        first = await read(established)
        await established.write(request(CLUSTER, nonce=first.nonce, version=first.version_info))

        answered = 0

        async def storming(channel: Any) -> None:
            nonlocal answered
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            await call.write(with_node(request(CLUSTER)))
            await read(call)
            answered += 1
            await asyncio.Event().wait()  # stay connected, as an Envoy does

        storm = [asyncio.create_task(storming(channels[i % 4])) for i in range(STORM)]
        await eventually(lambda: ads.admission.waiting > 0)

        current["s"] = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})
        for profile in cache.profiles():
            cache.set(profile, current["s"])
        pushed = await read(established)
        waiting_when_pushed = ads.admission.waiting

        await eventually(lambda: answered == STORM, timeout=30)
        assert pushed.version_info != first.version_info
        assert waiting_when_pushed > 0  # the push did not wait for the storm to be admitted
        for task in storm:
            task.cancel()
        await asyncio.gather(*storm, return_exceptions=True)
        established.cancel()
    finally:
        for channel in channels:
            await channel.close()
        await server.stop(0)
