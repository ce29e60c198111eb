"""The gRPC side of ADS: one reader and one writer per stream around a protocol state machine.

The writer computes responses when woken, from the latest snapshot, so a client that reads
slowly only delays itself and skips generations instead of queueing them (rule 23). Responses
are joined from bytes the cache encoded once (rule 21); nothing is serialized per stream.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import structlog
from envoy.service.discovery.v3 import discovery_pb2

from xdsfleet.cache import typeurls, wire
from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.model.node import NodeProfile, ProfileError
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.nodes import profile_of
from xdsfleet.server.protocol import Outcome, RequestResult, Response, TypeStatus
from xdsfleet.server.sotw import SotwStream
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

# Label children resolved once: `labels()` on every response showed in profiles.
_RESPONSES = {t: metrics.RESPONSES.labels(short) for t, short in typeurls.SHORT_NAMES.items()}
_RESOURCES_SENT = {t: metrics.RESOURCES_SENT.labels(s) for t, s in typeurls.SHORT_NAMES.items()}
_ACKS = {t: metrics.ACKS.labels(short) for t, short in typeurls.SHORT_NAMES.items()}


class Machine(Protocol):
    def on_request(self, request: Any) -> RequestResult: ...
    def next_responses(self, snapshot: Any) -> list[Response]: ...
    def status(self) -> dict[str, TypeStatus]: ...


@dataclass(slots=True)
class StreamInfo:
    """A connected client, as `status` and the logs describe it."""

    stream_id: int
    protocol: str
    node_id: str
    node_cluster: str
    peer: str
    profile: NodeProfile
    machine: Machine
    started: float = field(default_factory=time.time)
    # Set while a write is under way (loop time), for the watchdog; the task it would cancel.
    writing_since: float | None = None
    task: asyncio.Task[Any] | None = None
    timed_out: bool = False


def _sotw_bytes(response: Response) -> bytes:
    return wire.sotw_response(
        version_info=response.version,
        type_url=response.type_url,
        nonce=response.nonce,
        entries=[r.sotw_entry for r in response.resources],
    )


def _delta_bytes(response: Response) -> bytes:
    return wire.delta_response(
        system_version_info=response.version,
        type_url=response.type_url,
        nonce=response.nonce,
        entries=[r.delta_entry for r in response.resources],
        removed=response.removed,
    )


class AdsService:
    """Serves SotW and Delta ADS from a snapshot cache."""

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        send_timeout: float = 30.0,
        prepare: Callable[[NodeProfile], Awaitable[None]] | None = None,
    ) -> None:
        self._cache = cache
        self.send_timeout = send_timeout
        # Builds a new profile's first snapshot without holding the loop (the publisher's);
        # without it, the cache builds it when the stream first reads it.
        self._prepare = prepare
        self._ids = itertools.count(1)
        self.streams: dict[int, StreamInfo] = {}

    def handler(self) -> grpc.GenericRpcHandler:
        # No response serializer: the writer hands gRPC finished bytes.
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._delta,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                ),
            },
        )

    async def _sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve("sotw", SotwStream(), _sotw_bytes, requests, context)

    async def _delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve("delta", DeltaStream(), _delta_bytes, requests, context)

    async def _serve(
        self,
        protocol: str,
        machine: Machine,
        to_bytes: Callable[[Response], bytes],
        requests: AsyncIterator[Any],
        context: Any,
    ) -> None:
        first = await anext(aiter(requests), None)
        if first is None:
            return
        # Rule 1: only the first request is sure to carry the node.
        try:
            profile = profile_of(first.node)
        except ProfileError as err:
            log.warning("stream_refused", node_id=first.node.id, error=str(err))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            return
        info = StreamInfo(
            stream_id=next(self._ids),
            protocol=protocol,
            node_id=first.node.id,
            node_cluster=first.node.cluster,
            peer=context.peer(),
            profile=profile,
            machine=machine,
        )
        with structlog.contextvars.bound_contextvars(
            stream_id=info.stream_id, node_id=info.node_id
        ):
            await self._run(info, first, to_bytes, requests, context)

    async def _run(
        self,
        info: StreamInfo,
        first: Any,
        to_bytes: Callable[[Response], bytes],
        requests: AsyncIterator[Any],
        context: Any,
    ) -> None:
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        info.task = asyncio.current_task()
        self.streams[info.stream_id] = info
        cancel_watch = self._cache.watch(info.profile, wake.set)
        metrics.STREAMS.labels(info.protocol).inc()
        metrics.PROFILES.set(len(self._cache.profiles()))
        log.info(
            "stream_opened", protocol=info.protocol, peer=info.peer, profile=info.profile.describe()
        )
        self._on_request(info, first)
        wake.set()
        reader = asyncio.create_task(
            self._read(info, requests, wake), name=f"ads-reader-{info.stream_id}"
        )
        reason = "client_closed"
        try:
            if self._prepare is not None:
                await self._prepare(info.profile)
            while True:
                await wake.wait()
                wake.clear()
                if reader.done():
                    break
                snapshot = self._cache.take(info.profile, wake.set)
                for response in info.machine.next_responses(snapshot):
                    # No timer per write (it showed in profiles): the watchdog checks this.
                    info.writing_since = loop.time()
                    await context.write(to_bytes(response))
                    info.writing_since = None
                    _RESPONSES[response.type_url].inc()
                    _RESOURCES_SENT[response.type_url].inc(len(response.resources))
        except asyncio.CancelledError:
            if not info.timed_out:
                raise
            # Rule 23: a client that stopped reading is cut loose; it reconnects when it can.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            reason = "send_timeout"
            metrics.SEND_TIMEOUTS.inc()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            cancel_watch()
            del self.streams[info.stream_id]
            metrics.STREAMS.labels(info.protocol).dec()
            metrics.PROFILES.set(len(self._cache.profiles()))
            log.info("stream_closed", reason=reason)

    async def watchdog(self, *, interval: float = 1.0) -> None:
        """Close streams whose current write has waited longer than `send_timeout`: a client
        that stopped reading must not hold buffers and a writer forever. Runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            deadline = loop.time() - self.send_timeout
            for info in list(self.streams.values()):
                since = info.writing_since
                if since is not None and since < deadline and info.task and not info.timed_out:
                    info.timed_out = True
                    info.task.cancel()

    async def _read(
        self, info: StreamInfo, requests: AsyncIterator[Any], wake: asyncio.Event
    ) -> None:
        try:
            async for request in requests:
                self._on_request(info, request)
                wake.set()
        finally:
            wake.set()

    def _on_request(self, info: StreamInfo, request: Any) -> None:
        result = info.machine.on_request(request)
        short = typeurls.SHORT_NAMES.get(result.type_url, result.type_url)
        if result.outcome is Outcome.ACK:
            _ACKS[result.type_url].inc()
        elif result.outcome is Outcome.NACK:
            metrics.NACKS.labels(short).inc()
            log.warning(
                "nack_received",
                type=short,
                version=result.version,
                error=result.message,
                profile=info.profile.describe(),
            )
        elif result.outcome is Outcome.UNSUPPORTED:
            log.warning("unsupported_type", type=result.type_url)
