"""Simulated Envoy sidecars: N SotW ADS streams in one process of their own.

Run as `python -m benchmarks.clients --port P --clients N`. The clients live outside the server's
process so that they never share its event loop or interpreter lock, and the process is spawned,
never forked, because gRPC does not survive a fork. Each stream does what Envoy does: a first
request with its node and wildcard CDS, an ACK for every response, then EDS for the clusters it
learned. The moment a stream has written its ACK of a hot assignment is the moment a change
reached it; CLOCK_MONOTONIC is system-wide on Linux, so the server's process can subtract its
own start time from it.

Report, on stdout: one JSON line per hot-assignment version once every client has ACKed it,
`{"version": V, "acked": [monotonic seconds, one per client]}`. SIGTERM ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from benchmarks.fleet import HOT_CLUSTER, PROFILE
from xdsfleet.cache import types
from xdsfleet.model.node import ROLE_KEY
from xdsfleet.server.ads import SERVICE

METHOD = f"/{SERVICE}/StreamAggregatedResources"
STREAMS_PER_CHANNEL = 50
# Without a local subchannel pool, channels to one target share one connection; separate
# connections are what separate Envoys would have.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
OPEN_ATTEMPTS = 5
RETRY_SECONDS = 0.2  # times the attempt number: a linear backoff, as a start-up storm needs


@dataclass(frozen=True, slots=True)
class Converged:
    """Every client's ACK time (time.monotonic()) of one hot-assignment version."""

    version: str
    acked: list[float]

    def line(self) -> str:
        return json.dumps({"version": self.version, "acked": self.acked})

    @classmethod
    def parse(cls, line: str) -> Converged:
        data = json.loads(line)
        return cls(version=str(data["version"]), acked=[float(t) for t in data["acked"]])


class Tally:
    """Collects ACK times by version and reports a version as soon as every client has it."""

    def __init__(self, clients: int) -> None:
        self._clients = clients
        self._times: dict[str, list[float]] = {}

    def record(self, version: str, acked_at: float) -> None:
        times = self._times.setdefault(version, [])
        times.append(acked_at)
        if len(times) == self._clients:
            print(Converged(version, times).line(), flush=True)
            del self._times[version]


def _first_request(index: int) -> Any:
    request = discovery_pb2.DiscoveryRequest(type_url=types.CLUSTER)
    request.node.id = f"bench-sidecar-{index}"
    request.node.cluster = "bench"
    request.node.locality.region = PROFILE.region
    request.node.locality.zone = PROFILE.zone
    request.node.metadata.CopyFrom(
        struct_pb2.Struct(fields={ROLE_KEY: struct_pb2.Value(string_value=PROFILE.role.value)})
    )
    return request


def _ack(response: Any, names: list[str]) -> Any:
    # SotW: every request restates the subscription, ACKs included.
    return discovery_pb2.DiscoveryRequest(
        type_url=response.type_url,
        version_info=response.version_info,
        response_nonce=response.nonce,
        resource_names=names,
    )


def _eds_names(response: Any) -> list[str]:
    names = []
    for packed in response.resources:
        cluster = cluster_pb2.Cluster()
        packed.Unpack(cluster)
        if cluster.type == cluster_pb2.Cluster.EDS:
            names.append(cluster.eds_cluster_config.service_name or cluster.name)
    return sorted(names)


def _carries_hot(response: Any) -> bool:
    for packed in response.resources:
        assignment = endpoint_pb2.ClusterLoadAssignment()
        packed.Unpack(assignment)
        if assignment.cluster_name == HOT_CLUSTER:
            return True
    return False


@dataclass(slots=True)
class Opens:
    """Stream opens that failed before a first response and were retried, over all clients."""

    retried: int = 0


async def _open(channel: grpc.aio.Channel, index: int, opens: Opens) -> tuple[Any, Any]:
    """Open the stream and return it with its first response.

    gRPC core cancels calls beyond its queue of calls the server has not yet picked up
    (`grpc.server.max_pending_requests`, 1,000 by default), which a thousand streams opened at
    once can reach; the first write then fails as CANCELLED or INTERNAL. Envoy would retry, and
    so does this, but only before the first response: a stream that fails later ends the run.
    """
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        call = channel.stream_stream(
            METHOD,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )()
        try:
            await call.write(_first_request(index))
            return call, await call.read()
        except grpc.aio.AioRpcError:
            if attempt == OPEN_ATTEMPTS:
                raise
        opens.retried += 1
        await asyncio.sleep(RETRY_SECONDS * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def sidecar(channel: grpc.aio.Channel, index: int, tally: Tally, opens: Opens) -> None:
    """One Envoy's ADS stream, until the server or the process ends it."""
    call, response = await _open(channel, index, opens)
    eds: list[str] = []
    while response is not grpc.aio.EOF:
        endpoints = response.type_url == types.ENDPOINT
        await call.write(_ack(response, eds if endpoints else []))
        acked_at = time.monotonic()
        if endpoints and _carries_hot(response):
            tally.record(response.version_info, acked_at)
        elif response.type_url == types.CLUSTER and (learned := _eds_names(response)) != eds:
            eds = learned
            await call.write(
                discovery_pb2.DiscoveryRequest(type_url=types.ENDPOINT, resource_names=eds)
            )
        response = await call.read()


async def run(port: int, clients: int) -> None:
    """Run the clients until SIGTERM; a stream that fails ends the process with its error."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tally = Tally(clients)
    opens = Opens()
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        for _ in range(0, clients, STREAMS_PER_CHANNEL)
    ]
    tasks = [
        asyncio.create_task(
            sidecar(channels[i // STREAMS_PER_CHANNEL], i, tally, opens), name=f"sidecar-{i}"
        )
        for i in range(clients)
    ]
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            failed = done.pop()
            why = failed.exception() or "the server ended the stream"
            raise RuntimeError(f"{failed.get_name()} ended early: {why!r}")
    finally:
        for task in [stopping, *tasks]:
            task.cancel()
        await asyncio.gather(stopping, *tasks, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in channels))
        if opens.retried:
            print(
                f"benchmark clients: {opens.retried} stream opens failed early, retried",
                file=sys.stderr,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run(args.port, args.clients))
    except RuntimeError as err:
        sys.exit(f"benchmark clients: {err}")


if __name__ == "__main__":
    main()
