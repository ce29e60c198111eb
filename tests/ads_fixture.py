"""A real ADS server on a free port around a hand-fed snapshot cache, and the client side of
its tests: over real gRPC channels, nothing of the servicer replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import struct_pb2
from snapshots import snapshot

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.model.node import ROLE_KEY, NodeProfile
from xdsfleet.server import listen
from xdsfleet.server.ads import AdsService, Limits

ONE = snapshot({"a": ("10.0.0.1",)})
TWO = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})
THREE = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",), "c": ("10.0.0.3",)})
READ_TIMEOUT = 10


@dataclass
class Fixture:
    cache: SnapshotCache
    service: AdsService
    port: int
    current: Snapshot | None

    def publish(self, snap: Snapshot) -> None:
        self.current = snap
        for profile in self.cache.profiles():
            self.cache.set(profile, snap)

    def stub(self, *options: tuple[str, int]) -> Any:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        return ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)


async def start(
    initial: Snapshot | None,
    *,
    send_timeout: float = 30,
    limits: Limits | None = None,
    problem_of: Callable[[NodeProfile], str | None] | None = None,
) -> tuple[Fixture, grpc.aio.Server]:
    """`initial` None: every first build fails, until `publish` gives a snapshot."""
    holder: dict[str, Fixture] = {}
    cache = SnapshotCache(lambda _profile: holder["f"].current)
    service = AdsService(
        cache,
        send_timeout=send_timeout,
        limits=limits or Limits(),
        problem_of=problem_of or (lambda _profile: None),
    )
    server, port = await listen.start(service, port=0, host="127.0.0.1")
    holder["f"] = Fixture(cache, service, port, initial)
    return holder["f"], server


def big(version: int) -> Snapshot:
    """One assignment of about 100 kB, so that a client that does not read fills its windows."""
    addresses = tuple(f"10.{version}.{i // 250}.{i % 250}" for i in range(4000))
    return snapshot({"a": addresses})


def with_node(req: Any, role: str = "sidecar") -> Any:
    req.node.id = "test-node"
    req.node.locality.CopyFrom(base_pb2.Locality(region="eu-west", zone="eu-west-1a"))
    req.node.metadata.CopyFrom(
        struct_pb2.Struct(fields={ROLE_KEY: struct_pb2.Value(string_value=role)})
    )
    return req


async def read(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), READ_TIMEOUT)
