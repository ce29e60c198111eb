"""The gRPC side of ADS: one reader and one writer per stream around a protocol state machine.

The writer computes responses when woken, from the latest snapshot, so a client that reads
slowly only delays itself and skips generations instead of queueing them (rule 23). It is woken
by a new snapshot and by a request that may let something go (`RequestResult.wakes`), not by
every ACK: the ACKs of a fan-out find nothing to send, and waking every writer for them was a
task switch per stream and fan-out for nothing, in the loop iterations that serve everyone.
Responses are joined from bytes the cache encoded once (rule 21); nothing is serialized per
stream. SotW requests come as bytes, and an unchanged list of names (every ACK's) is told from
them without decoding it (`server/requests.py`). The bytes being written at once, across
streams, are bounded (`budget.WriteBudget`), and a writer lets go of a response's bytes as soon
as gRPC has taken them: an idle stream holds none. Every reader and writer step shares one
budget per loop turn (`pacer.Pacer`): after a fan-out, hundreds of them are ready at once, and
past the budget they wait for later turns so that timers and sockets are not held behind all of
them.

Every stream ends with a status that says why, and leaves nothing behind: gRPC cancels a
handler at its next `await` when the connection goes, including one inside its cleanup, so the
bookkeeping of a closing stream is synchronous and comes before anything awaited. A stream
whose node has no good configuration yet is refused `UNAVAILABLE` (Envoy keeps what it has and
retries) rather than served an empty one, which would delete everything it holds.
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
from google.protobuf.message import DecodeError

from xdsfleet.cache import typeurls, wire
from xdsfleet.cache.cache import NoSnapshot, SnapshotCache
from xdsfleet.model.node import NodeProfile, ProfileError
from xdsfleet.server.admission import Admission
from xdsfleet.server.budget import WriteBudget
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.nodes import clip, profile_of
from xdsfleet.server.pacer import Pacer
from xdsfleet.server.protocol import Outcome, RequestResult, Response, TypeStatus
from xdsfleet.server.requests import Runs, SotwRequests, read_delta
from xdsfleet.server.sotw import SotwStream
from xdsfleet.server.tls import peer_identity
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

# Label children resolved once: `labels()` on every response showed in profiles.
_RESPONSES = {t: metrics.RESPONSES.labels(short) for t, short in typeurls.SHORT_NAMES.items()}
_RESOURCES_SENT = {t: metrics.RESOURCES_SENT.labels(s) for t, s in typeurls.SHORT_NAMES.items()}
_ACKS = {t: metrics.ACKS.labels(short) for t, short in typeurls.SHORT_NAMES.items()}

# Unknown type URLs a stream is warned about by name; past that they are only counted.
_UNSUPPORTED_NAMED = 8


class Machine(Protocol):
    def on_request(self, request: Any, same_names: bool = False) -> RequestResult: ...
    def next_responses(self, snapshot: Any) -> list[Response]: ...
    def status(self) -> dict[str, TypeStatus]: ...
    def subscribed(self, type_url: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What one stream may cost the loop that serves everyone.

    A request naming 100,000 unknown clusters took a second of the loop to answer with
    placeholder assignments (rule 15), and every other client waited. Names a fleet serves are
    far fewer than `names_per_request`; names it does not serve are transient (a cluster on its
    way out), far fewer than `unknown_names`. Past either, the stream is refused
    `RESOURCE_EXHAUSTED`; a real Envoy never gets there.
    """

    # Names in one request: SotW `resource_names`; Delta subscribe, unsubscribe and initial
    # versions together. A SotW request replaces the subscription, so it bounds the stream too;
    # the names a Delta stream subscribes to over its requests are bounded by it as well.
    names_per_request: int = 50_000
    # Names of one request that the node's snapshot does not hold (each costs a placeholder).
    unknown_names: int = 10_000
    # A connection that opens a stream and never says who it is holds a handler for nothing.
    first_request_seconds: float = 15.0

    @property
    def unread_names(self) -> int:
        """The longest lists of names a SotW stream may take as unchanged by their bytes: a
        request read so passes `_check_size` as its predecessor did, without the names."""
        return min(self.names_per_request, self.unknown_names)


class Refused(Exception):
    """A request the stream cannot serve: it ends with `code`, logged as `reason`."""

    def __init__(self, code: grpc.StatusCode, reason: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.reason = reason
        self.details = details


@dataclass(slots=True)
class Waiting:
    """A stream opened whose first request (the one naming the node) has not come yet."""

    stream_id: int
    protocol: str
    peer: str
    started: float = field(default_factory=time.time)


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
    identity: str | None = None  # from the client certificate, over mTLS
    started: float = field(default_factory=time.time)
    # Why the node's configuration may not be what its operator expects (an unknown gateway).
    problem: str | None = None
    # Set while a write is under way (loop time), for the watchdog; the task it would cancel.
    writing_since: float | None = None
    task: asyncio.Task[Any] | None = None
    timed_out: bool = False
    revoked: str | None = None  # why its identity may no longer claim its profile
    # Per type: when (Unix seconds) the last response was written, for `status` (STALE).
    sent_at: dict[str, float] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Ending:
    """How a stream ends: the reason logged, and the status the client gets (None: OK)."""

    reason: str = "client_closed"
    code: grpc.StatusCode | None = None
    details: str = ""


def _size(response: Response) -> int:
    """About the bytes of the response, before it is joined: what it takes from the budget."""
    return sum(len(r.body) for r in response.resources) + 64 * len(response.resources) + 256


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


# A request as gRPC hands it to what the stream reads: the request, and whether it changes no
# subscription (`same_names`: SotW's names what the last request of its type named, undecoded;
# Delta's subscribes and unsubscribes nothing; `server/requests.py`).
Reader = Callable[[Any], tuple[Any, bool]]


def _light(request: Any, same_names: bool) -> bool:
    """A step the pacer may run in a light iteration (server/pacer.py): a request that changes
    no subscription (`same_names`, as the reader told it). Not a NACK: rare, and its
    bookkeeping is per resource."""
    return same_names and not request.HasField("error_detail")


def _no_problem(_: NodeProfile) -> str | None:
    return None


# Why a client may not claim a profile (None: it may), given its identity (None: no client
# certificate). The pipeline answers from the Fleet's identity rules (model/identity.py).
Authorizer = Callable[[str | None, NodeProfile], str | None]


def _anyone(_: str | None, __: NodeProfile) -> str | None:
    return None


class AdsService:
    """Serves SotW and Delta ADS from a snapshot cache.

    `problem_of` says what is wrong with a profile's configuration that its clients cannot see
    (a gateway the fleet does not have): logged once per stream and shown in `/debug/clients`.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        *,
        send_timeout: float = 30.0,
        limits: Limits = Limits(),
        problem_of: Callable[[NodeProfile], str | None] = _no_problem,
        authorize: Authorizer = _anyone,
        admission: Admission | None = None,
        prepare: Callable[[NodeProfile], Awaitable[None]] | None = None,
        budget: WriteBudget | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._cache = cache
        self.send_timeout = send_timeout
        self.limits = limits
        self._problem_of = problem_of
        self._authorize = authorize
        # New streams wait their turn (a reconnect storm); None: admitted at once.
        self.admission = admission or Admission(rate=0, burst=1)
        # Builds a new profile's first snapshot without holding the loop (the publisher's);
        # without it, the cache builds it when the stream first reads it.
        self._prepare = prepare
        self.budget = budget or WriteBudget()
        # Every stream's reader and writer steps share one budget per loop turn (server/pacer.py).
        self.pacer = pacer or Pacer()
        # Read when scraped: the budget itself only counts (the server has one servicer).
        metrics.WRITE_BUDGET_BYTES.set_function(lambda: self.budget.in_flight)
        metrics.WRITE_BUDGET_WAITING.set_function(lambda: self.budget.waiting)
        self._ids = itertools.count(1)
        # SotW streams' last lists of names, as bytes, shared between streams.
        self._runs = Runs()
        self.streams: dict[int, StreamInfo] = {}
        self.waiting: dict[int, Waiting] = {}

    def handler(self) -> grpc.GenericRpcHandler:
        # No response serializer: the writer hands gRPC finished bytes. No SotW request
        # deserializer: the stream reads the bytes (`server/requests.py`).
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(self._sotw),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._delta,
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                ),
            },
        )

    async def _sotw(self, requests: AsyncIterator[Any], context: Any) -> None:
        read = SotwRequests(self._runs, self.limits.unread_names).read
        await self._serve("sotw", SotwStream(), _sotw_bytes, read, requests, context)

    async def _delta(self, requests: AsyncIterator[Any], context: Any) -> None:
        await self._serve("delta", DeltaStream(), _delta_bytes, read_delta, requests, context)

    async def _serve(
        self,
        protocol: str,
        machine: Machine,
        to_bytes: Callable[[Response], bytes],
        read: Reader,
        requests: AsyncIterator[Any],
        context: Any,
    ) -> None:
        # One id for the stream's life, from waiting for its first request on.
        stream_id = next(self._ids)
        first = await self._first_request(stream_id, protocol, read, requests, context)
        if first is None:
            return
        # Rule 1: only the first request is sure to carry the node.
        try:
            profile = profile_of(first.node)
        except ProfileError as err:
            error = clip(str(err))
            log.warning(
                "stream_refused", reason="invalid_node", node_id=clip(first.node.id), error=error
            )
            metrics.STREAMS_REFUSED.labels("invalid_node").inc()
            _finish(context, _Ending("invalid_node", grpc.StatusCode.INVALID_ARGUMENT, error))
            return
        identity = peer_identity(context)
        refused = self._authorize(identity, profile)
        if refused is not None:
            # A node claiming a gateway, member or role its certificate does not allow: it
            # would be served what that profile holds, TLS private keys included.
            log.warning(
                "stream_refused",
                reason="permission_denied",
                node_id=clip(first.node.id),
                identity=identity,
                profile=profile.describe(),
                error=refused,
            )
            metrics.STREAMS_REFUSED.labels("permission_denied").inc()
            _finish(
                context, _Ending("permission_denied", grpc.StatusCode.PERMISSION_DENIED, refused)
            )
            return
        await self.admission.admit()
        info = StreamInfo(
            stream_id=stream_id,
            protocol=protocol,
            node_id=first.node.id,
            node_cluster=first.node.cluster,
            peer=context.peer(),
            profile=profile,
            machine=machine,
            identity=identity,
        )
        with structlog.contextvars.bound_contextvars(
            stream_id=info.stream_id, node_id=clip(info.node_id)
        ):
            await self._run(info, first, to_bytes, read, requests, context)

    async def _first_request(
        self,
        stream_id: int,
        protocol: str,
        read: Reader,
        requests: AsyncIterator[Any],
        context: Any,
    ) -> Any | None:
        """The first request, or None when the stream ended (with a status) before it."""
        waiting = Waiting(stream_id=stream_id, protocol=protocol, peer=context.peer())
        self.waiting[waiting.stream_id] = waiting
        ending: _Ending | None = None
        try:
            async with asyncio.timeout(self.limits.first_request_seconds):
                data = await anext(aiter(requests), None)
            # The first request names no list kept yet: it is decoded whole.
            return None if data is None else read(data)[0]
        except TimeoutError:
            ending = _Ending(
                "no_first_request",
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no request within {self.limits.first_request_seconds:g} s of opening the stream",
            )
        except DecodeError as err:
            ending = _Ending("malformed_request", grpc.StatusCode.INVALID_ARGUMENT, str(err))
        finally:
            del self.waiting[waiting.stream_id]
            if ending is not None:
                metrics.STREAMS_REFUSED.labels(ending.reason).inc()
                log.warning(
                    "stream_refused",
                    reason=ending.reason,
                    peer=clip(waiting.peer),
                    error=ending.details,
                )
                _finish(context, ending)
        return None

    async def _run(
        self,
        info: StreamInfo,
        first: Any,
        to_bytes: Callable[[Response], bytes],
        read: Reader,
        requests: AsyncIterator[Any],
        context: Any,
    ) -> None:
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        pacer = self.pacer
        # Watch before building, so that the profile is translated on every publish from now.
        cancel_watch = self._cache.watch(info.profile, wake.set)
        try:
            if self._prepare is not None:
                await self._prepare(info.profile)
            self._cache.get(info.profile)
        except NoSnapshot as err:
            cancel_watch()
            metrics.STREAMS_REFUSED.labels("no_snapshot").inc()
            log.warning("stream_refused", reason="no_snapshot", profile=info.profile.describe())
            _finish(context, _Ending("no_snapshot", grpc.StatusCode.UNAVAILABLE, str(err)))
            return
        except BaseException:
            cancel_watch()
            raise
        info.task = asyncio.current_task()
        self.streams[info.stream_id] = info
        metrics.STREAMS.labels(info.protocol).inc()
        metrics.PROFILES.set(len(self._cache.profiles()))
        log.info(
            "stream_opened",
            protocol=info.protocol,
            peer=clip(info.peer),
            profile=info.profile.describe(),
            identity=info.identity,
        )
        reader: asyncio.Task[None] | None = None
        ending = _Ending()
        # From here every way out goes through `finally`, with no await before the bookkeeping.
        try:
            info.problem = self._problem_of(info.profile)
            if info.problem is not None:
                metrics.STREAMS_MISCONFIGURED.inc()
                log.warning("node_misconfigured", problem=info.problem)
            self._on_request(info, first)
            # Response headers on their own, before any response: a status that ends the call
            # must not wait behind a first write still holding them (a client stalled on its
            # first response would then never see it).
            await context.send_initial_metadata(())
            wake.set()
            reader = asyncio.create_task(
                self._read(info, read, requests, wake), name=f"ads-reader-{info.stream_id}"
            )
            while True:
                await wake.wait()
                if pacer.full():
                    await pacer.next_turn()
                # Cleared after its turn came: wakes meanwhile are this step's.
                wake.clear()
                if reader.done():
                    ending = _reader_ending(reader, context)
                    break
                snapshot = self._cache.take(info.profile, wake.set)
                responses = info.machine.next_responses(snapshot)
                del snapshot  # an idle stream keeps no snapshot alive
                if responses:
                    failed = await self._send(info, responses, to_bytes, context, loop)
                    if failed is not None:
                        ending = failed
                        return
        except asyncio.CancelledError:
            if info.revoked is not None:
                # Its identity may no longer claim its profile: it reconnects and is refused.
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                ending = _Ending(
                    "permission_revoked", grpc.StatusCode.PERMISSION_DENIED, info.revoked
                )
                return
            if not info.timed_out:
                ending = _Ending("cancelled")  # the client went, or the server is stopping
                raise
            # Rule 23: a client that stopped reading is cut loose, and told so: the status goes
            # out behind the data it has not read, and it reconnects when it reads again.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            ending = _Ending(
                "send_timeout",
                grpc.StatusCode.UNAVAILABLE,
                f"the client read nothing for {self.send_timeout:g} s; reconnect",
            )
            metrics.SEND_TIMEOUTS.inc()
        except Refused as err:
            ending = _refusal(err)
        except Exception as err:
            ending = _Ending("stream_failed", grpc.StatusCode.INTERNAL, "internal error")
            log.error("stream_failed", exc_info=err)
        finally:
            if reader is not None:
                reader.cancel()
            cancel_watch()
            del self.streams[info.stream_id]
            metrics.STREAMS.labels(info.protocol).dec()
            metrics.PROFILES.set(len(self._cache.profiles()))
            log.info(
                "stream_closed",
                reason=ending.reason,
                code=ending.code.name if ending.code else "OK",
                detail=ending.details or None,
            )
            _finish(context, ending)
            if reader is not None:
                # Shielded: if this task is cancelled here, the reader still finishes.
                await asyncio.shield(asyncio.gather(reader, return_exceptions=True))

    async def _send(
        self,
        info: StreamInfo,
        responses: list[Response],
        to_bytes: Callable[[Response], bytes],
        context: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> _Ending | None:
        """Write the responses in order; how the stream ends if a write fails. Its own frame,
        so that the bytes written are let go of when it returns."""
        paced = True  # the writer's step asked the pacer before this
        while responses:
            response = responses.pop(0)
            type_url, count, size = response.type_url, len(response.resources), _size(response)
            share = self.budget.try_take(size, loop.time())
            if share is None:
                share = await self.budget.take(size)
                paced = False
            try:
                # After a wait (the budget's, or the last write's), this is a step of its own:
                # joining a member loss's response costs 12-25 ms, and the budget lets several
                # writers go in one iteration.
                if not paced and self.pacer.full():
                    await self.pacer.next_turn()
                paced = False
                data = to_bytes(response)
                # Only its bytes wait for the write: during a fan-out every stream's response
                # objects would otherwise be there for the collector's young passes to walk.
                del response
                # No timer per write (it showed in profiles): the watchdog checks this.
                info.writing_since = loop.time()
                try:
                    await context.write(data)
                except Exception as err:
                    # The call is over: the client went. gRPC says so by raising here, with a
                    # class of its private module (cygrpc.ExecuteBatchError): not our bug.
                    return _Ending("write_failed", details=type(err).__name__)
            finally:
                self.budget.give(share)
            del data
            info.writing_since = None
            info.sent_at[type_url] = time.time()
            _RESPONSES[type_url].inc()
            _RESOURCES_SENT[type_url].inc(count)
        return None

    def revoke(self) -> int:
        """Close every stream whose identity may no longer claim its profile (the identity
        rules changed); returns how many were closed."""
        closed = 0
        for info in list(self.streams.values()):
            if info.task is None or info.revoked is not None or info.timed_out:
                continue
            refused = self._authorize(info.identity, info.profile)
            if refused is None:
                continue
            info.revoked = refused
            metrics.STREAMS_REFUSED.labels("permission_revoked").inc()
            log.warning(
                "stream_revoked",
                stream_id=info.stream_id,
                node_id=clip(info.node_id),
                identity=info.identity,
                profile=info.profile.describe(),
                error=refused,
            )
            info.task.cancel()
            closed += 1
        return closed

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
        self, info: StreamInfo, read: Reader, requests: AsyncIterator[Any], wake: asyncio.Event
    ) -> None:
        pacer = self.pacer
        try:
            async for data in requests:
                # Read before asking: an ACK that changes no subscription is a light step.
                request, same_names = read(data)
                # Not kept while the next is awaited: a SotW EDS request names every cluster.
                del data
                if pacer.full(light=_light(request, same_names)):
                    await pacer.next_turn()
                wakes = self._on_request(info, request, same_names).wakes
                del request
                if wakes:
                    wake.set()
        finally:
            wake.set()

    def _on_request(
        self, info: StreamInfo, request: Any, same_names: bool = False
    ) -> RequestResult:
        if not same_names:
            # Names the last request of the type named passed these checks: the reader tells
            # only lists no longer than the limits let through without reading them (a Delta
            # request told so names none).
            self._check_size(info, request)
        result = info.machine.on_request(request, same_names)
        subscribes = (
            not same_names and info.protocol != "sotw" and bool(request.resource_names_subscribe)
        )
        if subscribes and result.outcome is not Outcome.UNSUPPORTED:
            # Delta subscriptions add up over requests: the same bound holds for their sum
            # (a SotW request names them all, so `_check_size` has bounded it already; a Delta
            # request that subscribes nothing adds nothing). Counted by the machine (it keeps
            # the names anyway), before anything is built.
            subscribed = info.machine.subscribed(result.type_url)
            if subscribed > self.limits.names_per_request:
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too_many_names",
                    f"{subscribed} resource names subscribed on this stream (at most "
                    f"{self.limits.names_per_request})",
                )
        if result.outcome is Outcome.ACK:
            _ACKS[result.type_url].inc()
            return result
        short = typeurls.SHORT_NAMES.get(result.type_url, result.type_url)
        if result.outcome is Outcome.NACK:
            metrics.NACKS.labels(short).inc()
            log.warning(
                "nack_received",
                type=short,
                version=result.version,
                error=result.message,
                profile=info.profile.describe(),
            )
        elif result.outcome is Outcome.UNSUPPORTED:
            metrics.UNSUPPORTED_REQUESTS.inc()
            # Once per type and stream: a client asks again on every response it gets.
            if result.type_url not in info.unsupported and (
                len(info.unsupported) < _UNSUPPORTED_NAMED
            ):
                info.unsupported.add(result.type_url)
                log.warning("unsupported_type", type=clip(result.type_url))
        return result

    def _check_size(self, info: StreamInfo, request: Any) -> None:
        """Refuse a request that would cost more than `limits` allow (before any of it does)."""
        if info.protocol == "sotw":
            names = request.resource_names
            count = len(names)
        else:
            names = request.resource_names_subscribe
            count = (
                len(names)
                + len(request.resource_names_unsubscribe)
                + len(request.initial_resource_versions)
            )
        if count > self.limits.names_per_request:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too_many_names",
                f"{count} resource names in one request (at most {self.limits.names_per_request})",
            )
        if len(names) <= self.limits.unknown_names:
            return
        held = self._cache.get(info.profile).of(request.type_url)
        unknown = sum(1 for name in names if name not in held)
        if unknown > self.limits.unknown_names:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "too_many_unknown_names",
                f"{unknown} names this server does not serve in one request (at most "
                f"{self.limits.unknown_names})",
            )


def _reader_ending(reader: asyncio.Task[None], context: Any) -> _Ending:
    """How the stream ends once its reader has: the client half-closed or went, or what went
    wrong."""
    err = None if reader.cancelled() else reader.exception()
    if err is None:
        # A reset connection can end the requests as a half-close does.
        return _Ending("cancelled") if context.cancelled() else _Ending()
    if isinstance(err, Refused):
        return _refusal(err)
    if isinstance(err, DecodeError):
        log.warning("request_malformed", error=str(err))
        metrics.STREAMS_REFUSED.labels("malformed_request").inc()
        return _Ending(
            "malformed_request", grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {err}"
        )
    log.error("stream_reader_failed", exc_info=err)
    return _Ending("reader_failed", grpc.StatusCode.INTERNAL, "internal error")


def _refusal(err: Refused) -> _Ending:
    metrics.STREAMS_REFUSED.labels(err.reason).inc()
    log.warning("request_refused", reason=err.reason, error=err.details)
    return _Ending(err.reason, err.code, err.details)


def _finish(context: Any, ending: _Ending) -> None:
    """Set the status the call ends with (synchronous: nothing can cancel it halfway)."""
    if ending.code is not None:
        context.set_code(ending.code)
        context.set_details(ending.details)
