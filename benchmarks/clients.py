"""Simulated Envoys: N ADS streams, SotW and Delta, sidecars and gateways over six localities.

Run as `python -m benchmarks.clients --port P --clients N [...]`. The clients live in a process
of their own so that they never share the server's event loop or interpreter lock; it is
spawned, never forked, because gRPC does not survive a fork. Every stream follows one code path,
whatever its protocol (a `Dialect` only encodes requests and reads responses) and role, and
subscribes as Envoy does: node and wildcard CDS first; EDS for the clusters learned; wildcard LDS
once the clusters have their endpoints; RDS for the route configurations the listeners name; an
ACK for every response.

Client `i` sits in locality `i % 6`, is a sidecar or a gateway by `(i // 6) % 2` and speaks SotW or
Delta by `(i // 12) % 2` (unless `--protocol` picks one), so every N that is a multiple of 24
covers all 24 combinations equally.

A change reaches a stream when it has written its ACK of the hot assignment whose marker endpoint
encodes the change's step (`fleet.marker_address`); CLOCK_MONOTONIC is system-wide on Linux, so
the server's process can subtract its own start time from the ACK time. Step 0 is reached when
the stream is fully synced (CDS, EDS with marker 0, LDS, RDS all ACKed).

Report, on stdout: one JSON line per step once every measured client has reached it,
`{"step": K, "acked": [monotonic seconds, one per client]}`. `--stalled K` adds K streams that
subscribe to everything and then never read, each on a connection of its own, as a wedged Envoy
would; they are not measured. `--oversized K` adds K clients that each send an EDS request
naming 100,000 clusters that do not exist, on a new stream every 1.4 s; not measured either.
SIGTERM ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from benchmarks import fleet
from xdsfleet.cache import typeurls
from xdsfleet.model.node import GATEWAY_KEY, ROLE_KEY, NodeProfile, Role
from xdsfleet.server.ads import SERVICE
from xdsfleet.translate.names import cluster_name

SOTW_METHOD = f"/{SERVICE}/StreamAggregatedResources"
DELTA_METHOD = f"/{SERVICE}/DeltaAggregatedResources"
STREAMS_PER_CHANNEL = 50
CHANNEL_OPTIONS = [
    # Without a local subchannel pool, channels to one target share one connection; separate
    # connections are what separate Envoys would have.
    ("grpc.use_local_subchannel_pool", 1),
    # Envoy's receive limit is unbounded; gRPC's 4 MiB default is below a SotW EDS response of
    # a 100,000-endpoint fleet (rule 25).
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]
OPEN_ATTEMPTS = 5
RECONNECT_ATTEMPTS = 60  # when reconnecting after the server ended a stream: Envoy keeps trying
RETRY_SECONDS = 0.2  # times the attempt number: a linear backoff, as a start-up storm needs
MAX_RETRY_SECONDS = 3.0
# A marker-carrying assignment starts with its `cluster_name` field (deterministic serialization
# writes fields in number order), so a SotW client spots it without decoding every resource.
HOT_PREFIX = endpoint_pb2.ClusterLoadAssignment(cluster_name=fleet.HOT_CLUSTER).SerializeToString()
PROTOCOLS = ("mixed", "sotw", "delta")
# Renewals of a stalled stream's EDS subscription: ~10 MB of responses for the default fleet.
STALL_RENEWALS = 200
STALL_PACE_SECONDS = 0.005
# An oversized client names this many clusters that do not exist, on a new stream every
# OVERSIZED_PACE_SECONDS: as measured for issue 8, answering it took the loop about a second.
OVERSIZED_NAMES = 100_000
OVERSIZED_PACE_SECONDS = 1.4


def profile_of_client(index: int) -> NodeProfile:
    region, zone = fleet.LOCALITIES[index % len(fleet.LOCALITIES)]
    if (index // len(fleet.LOCALITIES)) % 2:
        return NodeProfile(role=Role.GATEWAY, gateway=fleet.GATEWAY_REF, region=region, zone=zone)
    return NodeProfile(role=Role.SIDECAR, region=region, zone=zone)


def delta_client(index: int, protocol: str) -> bool:
    if protocol != "mixed":
        return protocol == "delta"
    return bool((index // (2 * len(fleet.LOCALITIES))) % 2)


def node_of(index: int, profile: NodeProfile) -> Any:
    metadata = {ROLE_KEY: struct_pb2.Value(string_value=profile.role.value)}
    if profile.gateway:
        metadata[GATEWAY_KEY] = struct_pb2.Value(string_value=profile.gateway)
    request = discovery_pb2.DiscoveryRequest()
    node = request.node
    node.id = f"bench-{profile.role.value}-{index}"
    node.cluster = "bench"
    node.locality.region = profile.region
    node.locality.zone = profile.zone
    node.metadata.CopyFrom(struct_pb2.Struct(fields=metadata))
    return node


@dataclass(frozen=True, slots=True)
class Converged:
    """Every measured client's ACK time (time.monotonic()) of one step."""

    step: int
    acked: list[float]

    def line(self) -> str:
        return json.dumps({"step": self.step, "acked": self.acked})

    @classmethod
    def parse(cls, line: str) -> Converged:
        data = json.loads(line)
        return cls(step=int(data["step"]), acked=[float(t) for t in data["acked"]])


class Tally:
    """Collects ACK times by step and reports a step as soon as every client has it."""

    def __init__(self, clients: int) -> None:
        self._clients = clients
        self._times: dict[int, list[float]] = {}

    def record(self, step: int, acked_at: float) -> None:
        times = self._times.setdefault(step, [])
        times.append(acked_at)
        if len(times) == self._clients:
            print(Converged(step, times).line(), flush=True)
            del self._times[step]


class Decoder:
    """What a client needs from resources, decoded once per distinct resource in the process:
    a thousand clients of one profile receive the very same bytes, and decoding them a thousand
    times would make the clients, not the server, the bottleneck."""

    def __init__(self) -> None:
        self._eds: dict[bytes, str | None] = {}
        self._routes: dict[bytes, tuple[str, ...]] = {}
        self._steps: dict[bytes, int | None] = {}

    def eds_name(self, value: bytes) -> str | None:
        if value not in self._eds:
            cluster = cluster_pb2.Cluster.FromString(value)
            eds = cluster.type == cluster_pb2.Cluster.EDS
            self._eds[value] = (
                (cluster.eds_cluster_config.service_name or cluster.name) if eds else None
            )
        return self._eds[value]

    def route_names(self, value: bytes) -> tuple[str, ...]:
        if value not in self._routes:
            listener = listener_pb2.Listener.FromString(value)
            names = []
            for chain in listener.filter_chains:
                for flt in chain.filters:
                    manager = hcm_pb2.HttpConnectionManager()
                    if flt.typed_config.Unpack(manager) and manager.HasField("rds"):
                        names.append(manager.rds.route_config_name)
            self._routes[value] = tuple(names)
        return self._routes[value]

    def marker_step(self, value: bytes) -> int | None:
        if value not in self._steps:
            assignment = endpoint_pb2.ClusterLoadAssignment.FromString(value)
            steps = (
                fleet.marker_step(lb.endpoint.address.socket_address.address)
                for locality in assignment.endpoints
                for lb in locality.lb_endpoints
            )
            self._steps[value] = next((s for s in steps if s is not None), None)
        return self._steps[value]


# --- Protocols: how requests are written and responses read; nothing else differs -----------


@dataclass(frozen=True, slots=True)
class Entry:
    name: str | None  # Delta names its resources; SotW does not
    value: bytes  # the resource message, serialized


class Dialect(Protocol):
    method: str

    def deserialize(self, data: bytes) -> Any: ...
    def first(self, node: Any, type_url: str) -> bytes: ...
    def subscribe(
        self, type_url: str, names: tuple[str, ...], before: tuple[str, ...]
    ) -> bytes: ...
    def ack(self, response: Any, names: tuple[str, ...]) -> bytes: ...
    def entries(self, response: Any) -> Iterator[Entry]: ...


class Sotw:
    """State of the world: every request restates the subscription, ACKs included."""

    method = SOTW_METHOD
    deserialize = staticmethod(discovery_pb2.DiscoveryResponse.FromString)

    def __init__(self) -> None:
        # The names part of a request, encoded once per subscription: an EDS ACK of a large
        # fleet restates a thousand names, and building them per ACK would load the clients.
        self._names: dict[tuple[str, ...], bytes] = {}

    def first(self, node: Any, type_url: str) -> bytes:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url)
        request.node.CopyFrom(node)
        return bytes(request.SerializeToString())

    def subscribe(self, type_url: str, names: tuple[str, ...], before: tuple[str, ...]) -> bytes:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url)
        return self._names_part(names) + bytes(request.SerializeToString())

    def ack(self, response: Any, names: tuple[str, ...]) -> bytes:
        request = discovery_pb2.DiscoveryRequest(
            type_url=response.type_url,
            version_info=response.version_info,
            response_nonce=response.nonce,
        )
        # Serialized messages concatenate into their merge: the names, then the rest.
        return self._names_part(names) + bytes(request.SerializeToString())

    def entries(self, response: Any) -> Iterator[Entry]:
        for packed in response.resources:
            yield Entry(None, packed.value)

    def _names_part(self, names: tuple[str, ...]) -> bytes:
        part = self._names.get(names)
        if part is None:
            part = self._names[names] = bytes(
                discovery_pb2.DiscoveryRequest(resource_names=names).SerializeToString()
            )
        return part


class Delta:
    """Incremental: subscriptions change by difference, ACKs carry only the nonce."""

    method = DELTA_METHOD
    deserialize = staticmethod(discovery_pb2.DeltaDiscoveryResponse.FromString)

    def first(self, node: Any, type_url: str) -> bytes:
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
        request.node.CopyFrom(node)
        return bytes(request.SerializeToString())

    def subscribe(self, type_url: str, names: tuple[str, ...], before: tuple[str, ...]) -> bytes:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=sorted(set(names) - set(before)),
            resource_names_unsubscribe=sorted(set(before) - set(names)),
        )
        return bytes(request.SerializeToString())

    def ack(self, response: Any, names: tuple[str, ...]) -> bytes:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=response.type_url, response_nonce=response.nonce
        )
        return bytes(request.SerializeToString())

    def entries(self, response: Any) -> Iterator[Entry]:
        for resource in response.resources:
            yield Entry(resource.name, resource.resource.value)


# --- One Envoy --------------------------------------------------------------------------------


@dataclass(slots=True)
class Shared:
    """What every stream of the process shares."""

    tally: Tally
    decoder: Decoder = field(default_factory=Decoder)
    retried: int = 0  # stream opens that failed before a first response and were retried
    opening: asyncio.Semaphore | None = None  # at most this many streams syncing at once
    # Open a stream again when the server ends it, as Envoy does; otherwise that ends the run.
    reconnect: bool = False
    reconnected: int = 0


@dataclass(slots=True)
class Envoy:
    """One ADS stream's subscriptions and progress."""

    index: int
    dialect: Dialect
    shared: Shared
    eds: tuple[str, ...] = ()
    rds: tuple[str, ...] = ()
    lds_requested: bool = False
    hot_step: int = -1  # the last marker step ACKed
    synced: bool = False

    async def run(self, channel: grpc.aio.Channel, on_synced: Callable[[], None]) -> None:
        """The stream, until the process ends it, or the server does and this does not
        reconnect."""
        while True:
            call, response = await self._open(channel)
            try:
                while response is not grpc.aio.EOF:
                    for request in self._answer(response):
                        await call.write(request)
                    acked_at = time.monotonic()
                    self._progress(response, acked_at, on_synced)
                    response = await call.read()
            except grpc.aio.AioRpcError:
                if not self.shared.reconnect:
                    raise
            if not self.shared.reconnect:
                return
            # A new stream subscribes from scratch; what was reported stays reported.
            self.shared.reconnected += 1
            self.eds, self.rds, self.lds_requested = (), (), False

    def _answer(self, response: Any) -> list[bytes]:
        """The ACK of `response`, then the subscriptions it makes necessary."""
        type_url = response.type_url
        decoder = self.shared.decoder
        if type_url == typeurls.CLUSTER:
            ack = self.dialect.ack(response, ())
            learned = {
                n for e in self.dialect.entries(response) if (n := decoder.eds_name(e.value))
            }
            # SotW CDS is the complete set; Delta CDS adds to what the stream holds.
            names = tuple(
                sorted(learned if self.dialect.method == SOTW_METHOD else {*self.eds, *learned})
            )
            if names == self.eds:
                return [ack]
            before, self.eds = self.eds, names
            return [ack, self.dialect.subscribe(typeurls.ENDPOINT, names, before)]
        if type_url == typeurls.ENDPOINT:
            requests = [self.dialect.ack(response, self.eds)]
            if not self.lds_requested:
                self.lds_requested = True
                requests.append(self.dialect.subscribe(typeurls.LISTENER, (), ()))
            return requests
        if type_url == typeurls.LISTENER:
            ack = self.dialect.ack(response, ())
            names = tuple(
                sorted(
                    {
                        n
                        for e in self.dialect.entries(response)
                        for n in decoder.route_names(e.value)
                    }
                )
            )
            if not names or names == self.rds:
                return [ack]
            before, self.rds = self.rds, names
            return [ack, self.dialect.subscribe(typeurls.ROUTE, names, before)]
        return [self.dialect.ack(response, self.rds)]

    def _progress(self, response: Any, acked_at: float, on_synced: Callable[[], None]) -> None:
        type_url = response.type_url
        if type_url == typeurls.ENDPOINT:
            for entry in self.dialect.entries(response):
                hot = entry.name == fleet.HOT_CLUSTER or (
                    entry.name is None and entry.value.startswith(HOT_PREFIX)
                )
                step = self.shared.decoder.marker_step(entry.value) if hot else None
                if step is not None and step != self.hot_step:
                    self.hot_step = step
                    if self.synced:
                        self.shared.tally.record(step, acked_at)
        elif type_url == typeurls.ROUTE and not self.synced and self.hot_step == 0:
            self.synced = True
            self.shared.tally.record(0, acked_at)
            on_synced()

    async def _open(self, channel: grpc.aio.Channel) -> tuple[Any, Any]:
        """Open the stream and return it with its first response.

        gRPC core cancels calls beyond its queue of calls the server has not yet picked up
        (`grpc.server.max_pending_requests`), which a storm of opens can reach; the first write
        then fails as CANCELLED or INTERNAL. Envoy would retry, and so does this, but only before
        the first response: a stream that fails later ends the run.
        """
        node = node_of(self.index, profile_of_client(self.index))
        attempts = RECONNECT_ATTEMPTS if self.shared.reconnect else OPEN_ATTEMPTS
        for attempt in range(1, attempts + 1):
            call = channel.stream_stream(
                self.dialect.method,
                request_serializer=None,
                response_deserializer=self.dialect.deserialize,
            )()
            try:
                await call.write(self.dialect.first(node, typeurls.CLUSTER))
                return call, await call.read()
            except grpc.aio.AioRpcError:
                if attempt == attempts:
                    raise
            self.shared.retried += 1
            await asyncio.sleep(min(MAX_RETRY_SECONDS, RETRY_SECONDS * attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")


async def stalled(
    channel: grpc.aio.Channel, index: int, services: int, stop: asyncio.Event
) -> None:
    """An Envoy that subscribes to everything and never reads.

    gRPC buffers about 4 MB per stream before flow control stops the server's writes, which a
    wedged Envoy filled over minutes. To be stalled for the whole measurement at once, this one
    drops and renews its EDS subscription again and again: each renewal used to make the server
    send every assignment anew (rule 8), until its writer to this stream blocked. Since rule 26
    (one unanswered response per type) the server sends it one response per type and nothing
    more, however often it renews."""
    dialect = Sotw()
    clusters = tuple(
        sorted(
            cluster_name(fleet.NAMESPACE, fleet.service_name(s), fleet.PORT)
            for s in range(services)
        )
    )
    call = channel.stream_stream(
        dialect.method, request_serializer=None, response_deserializer=None
    )()
    await call.write(dialect.first(node_of(index, profile_of_client(index)), typeurls.CLUSTER))
    await call.write(dialect.subscribe(typeurls.LISTENER, (), ()))
    for _ in range(STALL_RENEWALS):
        await call.write(dialect.subscribe(typeurls.ENDPOINT, ("-",), ()))
        await call.write(dialect.subscribe(typeurls.ENDPOINT, clusters, ()))
        # Paced, so that the server answers each renewal rather than only the last.
        await asyncio.sleep(STALL_PACE_SECONDS)
    await stop.wait()
    call.cancel()


async def oversized(channel: grpc.aio.Channel, index: int, stop: asyncio.Event) -> None:
    """A broken or hostile client: an EDS request naming `OVERSIZED_NAMES` clusters that do not
    exist, again and again on a new stream, whether it is answered or refused."""
    dialect = Sotw()
    names = tuple(f"no-such-cluster-{i}" for i in range(OVERSIZED_NAMES))
    node = node_of(index, profile_of_client(index))
    request = dialect.subscribe(typeurls.ENDPOINT, names, ()) + dialect.first(
        node, typeurls.ENDPOINT
    )
    while not stop.is_set():
        call = channel.stream_stream(
            dialect.method, request_serializer=None, response_deserializer=None
        )()
        await call.write(request)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call.read()  # the answer, or the refusal
        call.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OVERSIZED_PACE_SECONDS):
                await stop.wait()


@dataclass(frozen=True, slots=True)
class Options:
    port: int
    clients: int
    protocol: str = "mixed"
    stalled: int = 0
    oversized: int = 0
    services: int = 0  # what stalled streams subscribe to
    open_limit: int = 0  # 0: every stream opens at once, as after a control-plane restart
    reconnect: bool = False


async def run(options: Options) -> None:
    """Run the clients until SIGTERM; a stream that fails ends the process with its error."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    shared = Shared(Tally(options.clients), reconnect=options.reconnect)
    if options.open_limit:
        shared.opening = asyncio.Semaphore(options.open_limit)
    target = f"127.0.0.1:{options.port}"
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        for _ in range(0, options.clients, STREAMS_PER_CHANNEL)
    ]
    stalled_channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(options.stalled)
    ]
    tasks = [
        asyncio.create_task(
            _envoy(channels[i // STREAMS_PER_CHANNEL], i, options, shared), name=f"envoy-{i}"
        )
        for i in range(options.clients)
    ]
    tasks += [
        asyncio.create_task(
            stalled(channel, options.clients + k, options.services, stop), name=f"stalled-{k}"
        )
        for k, channel in enumerate(stalled_channels)
    ]
    oversized_channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(options.oversized)
    ]
    tasks += [
        asyncio.create_task(
            oversized(channel, options.clients + options.stalled + k, stop),
            name=f"oversized-{k}",
        )
        for k, channel in enumerate(oversized_channels)
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
        extra = [*stalled_channels, *oversized_channels]
        await asyncio.gather(*(c.close() for c in [*channels, *extra]))
        if shared.retried:
            print(
                f"benchmark clients: {shared.retried} stream opens failed early, retried",
                file=sys.stderr,
            )
        if shared.reconnected:
            print(
                f"benchmark clients: {shared.reconnected} streams ended by the server, reopened",
                file=sys.stderr,
            )


async def _envoy(channel: grpc.aio.Channel, index: int, options: Options, shared: Shared) -> None:
    dialect: Dialect = Delta() if delta_client(index, options.protocol) else Sotw()
    envoy = Envoy(index, dialect, shared)
    if shared.opening is None:
        await envoy.run(channel, lambda: None)
        return
    await shared.opening.acquire()
    released = False

    def release() -> None:
        nonlocal released
        if not released and shared.opening is not None:
            released = True
            shared.opening.release()

    try:
        await envoy.run(channel, release)
    finally:
        release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="mixed")
    parser.add_argument("--stalled", type=int, default=0)
    parser.add_argument("--oversized", type=int, default=0)
    parser.add_argument("--services", type=int, default=0)
    parser.add_argument("--open-limit", type=int, default=0)
    parser.add_argument("--reconnect", action="store_true")
    args = parser.parse_args()
    options = Options(
        port=args.port,
        clients=args.clients,
        protocol=args.protocol,
        stalled=args.stalled,
        oversized=args.oversized,
        services=args.services,
        open_limit=args.open_limit,
        reconnect=args.reconnect,
    )
    try:
        asyncio.run(run(options))
    except RuntimeError as err:
        sys.exit(f"benchmark clients: {err}")


if __name__ == "__main__":
    main()
