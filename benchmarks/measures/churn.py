"""Sustained churn: 5 % of the endpoints changing per minute, through the real Debouncer.

Churn events (`benchmarks.churn`) are made in a process of their own at a steady rate, as a
fleet's API servers make them; the serving process applies each to its copy of the fleet, as a
source applies a watch event, and hands the debouncer the new state; it coalesces additions and
publishes removals at once (rule 24). A member is lost a third of the way through and restored
at two thirds.

Figures. CPU: the serving process's CPU time over the window (gRPC threads included), as a
fraction of one core, without this measure's own bookkeeping. Lag: before each publish, every
stream's ACKed EDS version is mapped to the generation that produced it; a stream's lag is how
many generations behind the newest it is right after that publish (1 when it had ACKed the
previous one). Only publishes make the newest generation move, so the largest lag seen there is
the largest lag there ever was. Member loss: from the loss applied to the last stream's ACK of a
state with it, beside the floor (bare grpc.aio, `targets.Floor`) pushing the same response bytes
to as many streams of the same clients, in the same run once ours has stopped. Loop lag: the
wall time of `serve`'s own monitor (the target), and what each sample over 50 ms waited for
(`benchmarks/iterations.py`: the loop thread's own CPU after the timer was due, time queued for
a core, time blocked), beside the machine's busy cores: on a machine shared with the client
fleet (`--nice` lowers its priority, `--cpus` gives it CPUs of its own) or with other work,
the server's loop waits for a core too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from prometheus_client import REGISTRY

from benchmarks import plan, proc, run, targets
from benchmarks.churn import Replica
from benchmarks.fleet import FULL_SCALE, Fleet, Shape
from benchmarks.iterations import KEEP_OVER, Attribution
from benchmarks.report import Section, Verdict, mean, ms
from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.pipeline import fanout
from xdsfleet.pipeline.debounce import Debouncer
from xdsfleet.pipeline.loophold import Hold
from xdsfleet.server.ads import StreamInfo

TARGET_CORES = 1.0
TARGET_LAG = 2  # the issue-10 target: no stream more than 2 versions behind
TARGET_LOOP_LAG = 0.05
TARGET_LOSS_RATIO = 1.3
READ_BYTES = 1 << 20
READY_SECONDS = 600.0
DRAIN_SECONDS = 120.0
# After the churn stops, a server that kept up is at most one publish and one fan-out behind.
CATCH_UP_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = 1_000
    shape: Shape = FULL_SCALE
    seconds: float = 60.0
    warmup: float = 5.0
    per_minute: float = 0.05  # of the endpoints
    open_limit: int = 100
    lose_member: bool = True
    protocol: str = "mixed"
    floor: bool = True  # measure the member loss's floor too (a second client fleet)


class ClientAcks:
    """The EDS version each stream's client last ACKed.

    The server's status keeps the last ACK whose nonce was the latest one sent: an older nonce
    is stale (rule 3), and under churn a SotW client's ACK often arrives after the next response
    went out, so the status falls behind what the client holds. A SotW ACK's `version_info`
    says what the client holds all the same, so this watches SotW streams' requests (wrapping
    the machine's `on_request` on the instance: it observes, it changes nothing). Delta ACKs are
    matched by nonce, stale or not, and the status is exact."""

    def __init__(self) -> None:
        self._acked: dict[int, str] = {}
        self._watched: set[int] = set()

    def client(self, stream_id: int, info: StreamInfo) -> str | None:
        if stream_id not in self._watched:
            self._watch(stream_id, info)
        return self._acked.get(stream_id) or self.server(info)

    @staticmethod
    def server(info: StreamInfo) -> str | None:
        status = info.machine.status().get(typeurls.ENDPOINT)
        return status.acked_version if status is not None else None

    def _watch(self, stream_id: int, info: StreamInfo) -> None:
        self._watched.add(stream_id)
        if info.protocol != "sotw":
            return
        on_request = info.machine.on_request

        def observed(request: Any, same_names: bool = False) -> Any:
            acked = request.response_nonce and not request.HasField("error_detail")
            if acked and request.type_url == typeurls.ENDPOINT:
                self._acked[stream_id] = request.version_info
            return on_request(request, same_names)

        # setattr: mypy refuses assigning to a method, which is the point here.
        setattr(info.machine, "on_request", observed)  # noqa: B010


@dataclass(slots=True)
class Lags:
    """Generations published and how far behind them the streams were."""

    serving: targets.Serving
    generation: int = 0
    largest: int = 0  # by what the clients ACKed
    largest_in_status: int = 0  # by the server's per-stream status
    behind: set[int] = field(default_factory=set)  # streams ever more than TARGET_LAG behind
    # Per publish, the largest lag of any stream: how many publishes had a stream N behind.
    histogram: Counter[int] = field(default_factory=Counter)
    publish_cpu: float = 0.0  # inside Publisher.publish
    publishes: int = 0
    bookkeeping: float = 0.0  # this measure's own CPU, to leave out
    measuring: bool = False
    acks: ClientAcks = field(default_factory=ClientAcks)
    loss_generation: int | None = None  # the first publish with the member lost
    loss_published: tuple[float, float] | None = None  # its start and end, time.monotonic()
    _unconfirmed: dict[int, StreamInfo] | None = None  # for `at_least`
    _generations: dict[NodeProfile, dict[str, int]] = field(default_factory=dict)

    def record(self) -> None:
        """Map each profile's current EDS version to the current generation."""
        cache = self.serving.publisher.cache
        for profile in cache.profiles():
            version = cache.get(profile).versions.get(typeurls.ENDPOINT, "")
            self._generations.setdefault(profile, {})[version] = self.generation

    async def publish(self, state: FleetState) -> None:
        """The Debouncer's publish, as `serve` does it (in slices): check the lags, publish,
        note the new versions."""
        started = time.thread_time()
        if self.measuring:
            self._check()
        self.bookkeeping += time.thread_time() - started
        publish_started = time.monotonic()
        await self.serving.publisher.publish_in_slices(state)
        started = time.thread_time()
        self.generation += 1
        self.record()
        if self.loss_generation is None and any(m.stale for m in state.members):
            self.loss_generation = self.generation
            self.loss_published = (publish_started, time.monotonic())
        if self.measuring:
            # The publisher's own CPU: the thread's over the publish would include what the loop
            # ran between the slices.
            self.publish_cpu += self.serving.publisher.last_cpu
            self.publishes += 1
        self.bookkeeping += time.thread_time() - started

    def at_least(self, generation: int) -> bool:
        """Whether every stream subscribed to EDS has ACKed generation `generation` or a later
        one (by what its client ACKed). Streams found there are not looked at again: polled
        every 25 ms, this must cost the streams still behind, not all of them."""
        started = time.thread_time()
        streams = self.serving.ads.streams
        if self._unconfirmed is None:
            self._unconfirmed = dict(streams)
        try:
            for stream_id, info in list(self._unconfirmed.items()):
                client = self.acks.client(stream_id, info) if stream_id in streams else None
                generations = self._generations.get(info.profile, {})
                if client is not None and generations.get(client, 0) < generation:
                    return False
                del self._unconfirmed[stream_id]
            return True
        finally:
            self.bookkeeping += time.thread_time() - started

    def _check(self) -> None:
        upcoming = self.generation + 1
        largest = None
        for stream_id, info in self.serving.ads.streams.items():
            generations = self._generations.get(info.profile, {})
            client, server = self.acks.client(stream_id, info), self.acks.server(info)
            if client is None or server is None:
                continue  # not subscribed to EDS yet
            lag = upcoming - generations.get(client, 0)
            in_status = upcoming - generations.get(server, 0)
            largest = lag if largest is None else max(largest, lag)
            self.largest_in_status = max(self.largest_in_status, in_status)
            if lag > TARGET_LAG:
                self.behind.add(stream_id)
        if largest is not None:  # None: no stream had subscribed (all cut and reconnecting)
            self.histogram[largest] += 1
            self.largest = max(self.largest, largest)


class _Generator:
    """The churn generator's process (`benchmarks.churn`) and the replica its lines keep.

    Each read takes every line the pipe holds; they are applied, then handed to the debouncer as
    one state, as a source delivers a backlog of watch events. Applying is the sources' work in
    a real deployment, so it runs in the server's loop and counts as the server's."""

    def __init__(self, process: asyncio.subprocess.Process, replica: Replica) -> None:
        self._process = process
        self.replica = replica
        self._buffer = b""

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, shape: Shape) -> AsyncIterator[_Generator]:
        async with run.fleet_process("benchmarks.churn", shape, load=True) as process:
            generator = cls(process, Replica(Fleet(shape)))
            assert process.stdout is not None
            if not await process.stdout.readline():
                raise run.BenchError("the churn generator exited before it was ready")
            yield generator

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def events(self) -> int:
        return self.replica.events

    async def run(self, store: Debouncer, seconds: float, rate: float, lose: int | None) -> None:
        """One window of `rate` events per second for `seconds`, the member `lose` (if any) lost
        at a third and restored at two thirds; returns when the generator says it is over."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        window = {"seconds": seconds, "rate": rate, "lose": lose}
        self._process.stdin.write(json.dumps(window).encode() + b"\n")
        await self._process.stdin.drain()
        going = True
        while going:
            chunk = await self._process.stdout.read(READ_BYTES)
            if not chunk:
                raise run.BenchError("the churn generator exited")
            *lines, self._buffer = (self._buffer + chunk).split(b"\n")
            for line in lines:
                going = self.replica.apply(line.decode()) and going
            if lines:
                store.update(self.replica.fleet.state())


@dataclass(slots=True)
class _Figures:
    """What our serving process did over the measured window."""

    wall: float
    server_cpu: float
    clients_cpu: float
    generator_cpu: float
    machine_cpu: float  # every core's busy time, whoever used it
    events: int
    loop_lag: float  # wall time
    loop_lag_own: float  # the loop thread's CPU from a timer's due time to its run, largest
    lag_samples: int
    lag_attributed: int  # samples whose wait was attributed (`Iterations.sample`)
    lag_over: dict[float, int]  # samples lagging more than each limit, wall
    lag_over_own: dict[float, int]  # ... own CPU
    lag_worst: list[tuple[float, float | None, float]]  # (lag, own, seconds into the window)
    lag_kept: list[Attribution]  # every sample lagging more than KEEP_OVER, attributed
    loss_at: float | None  # seconds into the window the member was lost, restored
    restore_at: float | None
    iteration: float  # the longest loop iteration, thread CPU
    iterations_over: dict[float, int]  # how many took longer than each limit
    iterations: int
    converged_sum: float
    converged_count: float
    loss_seconds: float | None  # the member lost -> every stream ACKed a state without it
    # ... of which: waiting for the publish under way and its settling, then publishing.
    loss_waited: float | None
    loss_publishing: float | None
    gc_largest: dict[str, float]
    gc_full_passes: int
    holds: int  # times the loop was held past the hold watch's threshold (`event_loop_held`)
    hold_longest: Hold | None  # ... the longest of those logged
    drain: float | None
    cut: float


async def _ours(options: Options, lags_out: list[Lags]) -> _Figures:
    rate = options.shape.endpoints * options.per_minute / 60
    async with _Generator.started(options.shape) as generator:
        fleet = generator.replica.fleet
        async with targets.serving(fleet.state()) as served:
            lags = Lags(served)
            lags_out.append(lags)
            store = Debouncer(lags.publish, current=fleet.state(), settle=served.fanout.settle)
            # Streams the server cuts come back, as Envoys would: the run goes on and says so.
            clients = run.Clients(
                options.clients,
                protocol=options.protocol,
                open_limit=options.open_limit,
                reconnect=True,
            )
            async with run.client_process(served.port, clients) as process:
                async with asyncio.timeout(READY_SECONDS):
                    await process.converged()
                    await run.until(lambda: served.in_sync() >= options.clients)
                lags.record()
                await generator.run(store, options.warmup, rate, None)
                lags.measuring = True
                pid = process.process.pid
                cpu0, clients0, wall0 = time.process_time(), proc.cpu_seconds(pid), time.monotonic()
                generator0, machine0 = proc.cpu_seconds(generator.pid), proc.machine_busy_seconds()
                spent0, events0 = lags.bookkeeping, generator.events
                cut0 = _send_timeouts()
                converged0 = _convergence()
                served.lag.reset()
                served.iterations.reset()
                served.fanout.collector.reset()
                lost = options.shape.members - 1 if options.lose_member else None
                loss = asyncio.create_task(_loss_acked(lags, generator.replica), name="loss")
                await generator.run(store, options.seconds, rate, lost)
                wall = time.monotonic() - wall0
                server_cpu = time.process_time() - cpu0 - (lags.bookkeeping - spent0)
                if process.process.returncode is not None:
                    raise run.BenchError("the client process exited: the server cut its streams")
                clients_cpu = proc.cpu_seconds(pid) - clients0
                generator_cpu = proc.cpu_seconds(generator.pid) - generator0
                machine_cpu = proc.machine_busy_seconds() - machine0
                loop_lag, loop_lag_own = served.lag.largest, served.iterations.largest_own
                lag_samples, lag_over = served.lag.samples, dict(served.lag.over)
                lag_over_own = dict(served.iterations.own_over)
                lag_attributed = served.iterations.samples
                lag_kept = [replace(a, at=a.at - wall0) for a in served.iterations.kept]
                own_at = {a.at: a.own for a in lag_kept}
                lag_worst = [
                    (s.lag, own_at.get(s.at - wall0), s.at - wall0) for s in served.lag.worst
                ]
                iteration, iterations = served.iterations.largest, served.iterations.count
                iterations_over = dict(served.iterations.over)
                gc_largest = dict(served.fanout.collector.largest)
                gc_full_passes = served.fanout.collector.full_passes
                watch = served.lag.watch
                holds = watch.count if watch is not None else 0
                hold_longest = max(
                    watch.holds if watch is not None else [], key=lambda h: h.seconds, default=None
                )
                converged_sum, converged_count = (
                    now - before for now, before in zip(_convergence(), converged0, strict=True)
                )
                lags.measuring = False
                events = generator.events - events0
                drain = await _catch_up(lambda: store.pending, served, options.clients)
                loss.cancel()
                loss_seconds = await asyncio.gather(loss, return_exceptions=True)
                cut = _send_timeouts() - cut0
                lost_at, published = generator.replica.lost_at, lags.loss_published
                restored_at = generator.replica.restored_at
    return _Figures(
        wall=wall,
        server_cpu=server_cpu,
        clients_cpu=clients_cpu,
        generator_cpu=generator_cpu,
        machine_cpu=machine_cpu,
        events=events,
        loop_lag=loop_lag,
        loop_lag_own=loop_lag_own,
        lag_samples=lag_samples,
        lag_attributed=lag_attributed,
        lag_over=lag_over,
        lag_over_own=lag_over_own,
        lag_worst=lag_worst,
        lag_kept=lag_kept,
        loss_at=lost_at - wall0 if lost_at else None,
        restore_at=restored_at - wall0 if restored_at else None,
        iteration=iteration,
        iterations_over=iterations_over,
        iterations=iterations,
        converged_sum=converged_sum,
        converged_count=converged_count,
        loss_seconds=loss_seconds[0] if isinstance(loss_seconds[0], float) else None,
        loss_waited=published[0] - lost_at if published and lost_at else None,
        loss_publishing=published[1] - published[0] if published else None,
        gc_largest=gc_largest,
        gc_full_passes=gc_full_passes,
        holds=holds,
        hold_longest=hold_longest,
        drain=drain,
        cut=cut,
    )


async def _loss_acked(lags: Lags, replica: Replica) -> float:
    """Seconds from the member's loss (applied in this process) until every stream has ACKed
    a state that has it lost; the server reads those ACKs a little after they were sent."""
    while True:
        await asyncio.sleep(fanout.POLL)
        generation, lost_at = lags.loss_generation, replica.lost_at
        if generation is not None and lost_at is not None and lags.at_least(generation):
            return time.monotonic() - lost_at


async def _floor_loss(options: Options) -> float:
    """The bare-gRPC floor (`targets.Floor`) pushing the member loss's bytes, per profile and
    protocol the very EDS response our server sends for it, to as many streams, which ACK as
    ours do: seconds from the push to the last ACK."""
    loss = plan.member_loss(options.shape, options.shape.members - 1)
    clients = run.Clients(options.clients, protocol=options.protocol, open_limit=options.open_limit)
    [measured] = await run.paired([targets.floor(loss)], [clients], loss.changes)
    return measured.last[0]


async def measure(options: Options) -> Section:
    lags_out: list[Lags] = []
    f = await _ours(options, lags_out)
    lags = lags_out[0]
    floor = await _floor_loss(options) if options.lose_member and options.floor else None
    rate = options.shape.endpoints * options.per_minute / 60
    cores = f.server_cpu / f.wall
    # One core used in full is no proof of sustaining: the event loop is one thread, so a server
    # that falls behind also shows about one core. Sustaining means keeping up as well.
    why = "; ".join(
        reason
        for reason, failed in (
            (f"{f.cut:,.0f} streams cut", f.cut > 0),
            ("no catch-up", f.drain is None),
            (
                f"{f.drain or 0:.1f} s to catch up",
                f.drain is not None and f.drain > CATCH_UP_SECONDS,
            ),
        )
        if failed
    )
    kept_up = not why
    loss_ratio = f.loss_seconds / floor if f.loss_seconds is not None and floor else None
    gc_young = max((t for g, t in f.gc_largest.items() if g != "2"), default=0.0)
    rows = [
        ("events / s", f"{f.events / f.wall:,.1f}", f"{rate:,.1f} asked"),
        ("publishes", f"{lags.publishes:,}", f"{lags.publishes / f.wall:,.1f} / s"),
        (
            "CPU in Publisher.publish per publish, ms",
            ms(lags.publish_cpu / max(1, lags.publishes)),
            "",
        ),
        ("server CPU, cores", f"{cores:.2f}", f"publish: {lags.publish_cpu / f.wall:.2f}"),
        ("client process CPU, cores", f"{f.clients_cpu / f.wall:.2f}", "(not the server's)"),
        (
            "machine CPU busy, cores",
            f"{f.machine_cpu / f.wall:.2f} of {os.cpu_count()}",
            f"churn generator {f.generator_cpu / f.wall:.2f}; the rest (other work) "
            f"{(f.machine_cpu - f.server_cpu - f.clients_cpu - f.generator_cpu) / f.wall:.2f}",
        ),
        (
            "largest lag, versions",
            str(lags.largest),
            f"{len(lags.behind):,} streams > {TARGET_LAG}",
        ),
        ("largest lag in the server's stream status", str(lags.largest_in_status), "(rule 3)"),
        ("publishes by their largest lag", _histogram(lags.histogram), ""),
        (
            "caught up after the churn stopped, s",
            f"{f.drain:.2f}" if f.drain is not None else f"not within {DRAIN_SECONDS:g}",
            "",
        ),
        ("streams cut by the send timeout", f"{f.cut:,.0f}", "(they reconnect)"),
        ("event-loop lag, largest, ms (wall)", ms(f.loop_lag), f"target ≤ {ms(TARGET_LOOP_LAG)}"),
        (
            "... the loop thread's CPU between a timer's due time and its run, largest, ms",
            ms(f.loop_lag_own),
            f"{f.lag_attributed:,} samples attributed",
        ),
        (
            "event-loop lag samples over " + " / ".join(ms(limit) for limit in f.lag_over) + " ms",
            " / ".join(f"{n:,}" for n in f.lag_over.values()),
            "own CPU: "
            + " / ".join(f"{n:,}" for n in f.lag_over_own.values())
            + f" of {f.lag_samples:,}",
        ),
        *_waits(f.lag_kept),
        (
            "largest lags, ms (own CPU) at s into the window",
            "; ".join(
                f"{ms(lag)} ({'-' if own is None else ms(own)}) at {at:.1f}"
                for lag, own, at in f.lag_worst
            )
            or f"none over {ms(min(f.lag_over))} ms",
            _marks(f.loss_at, f.restore_at),
        ),
        (
            "longest loop iteration, thread CPU, ms",
            ms(f.iteration),
            ", ".join(f"{n:,} > {ms(limit)} ms" for limit, n in f.iterations_over.items())
            + f" of {f.iterations:,}",
        ),
        (
            "collector pass, largest, ms",
            ms(gc_young),
            f"full passes: {f.gc_full_passes}, largest {ms(f.gc_largest.get('2', 0.0))} ms",
        ),
        (
            "event loop held past 100 ms (`event_loop_held`)",
            f"{f.holds:,}",
            _hold(f.hold_longest),
        ),
        (
            "EDS convergence, mean, ms",
            ms(f.converged_sum / f.converged_count) if f.converged_count else "-",
            f"{f.converged_count:,.0f} of {lags.publishes:,} publishes converged",
        ),
    ]
    if options.lose_member:
        rows.append(
            (
                "member loss ACKed by every stream, ms",
                ms(f.loss_seconds) if f.loss_seconds is not None else "not seen",
                f"floor {ms(floor)} ms = {loss_ratio:.2f}x" if loss_ratio and floor else "",
            )
        )
        if f.loss_waited is not None and f.loss_publishing is not None:
            rows.append(
                (
                    "... waiting for the publish under way, publishing, ms",
                    f"{ms(f.loss_waited)}, {ms(f.loss_publishing)}",
                    "(the rest: the fan-out)",
                )
            )
    verdicts = [
        Verdict(
            "5 %/min churn sustained on < 1 core",
            f"{cores:.2f} cores" + ("" if kept_up else f"; not kept up ({why})"),
            cores < TARGET_CORES and kept_up,
        ),
        Verdict(
            f"no stream ever more than {TARGET_LAG} version behind",
            f"largest lag {lags.largest}; {len(lags.behind):,} of {options.clients:,} streams over",
            lags.largest <= TARGET_LAG,
        ),
        Verdict(
            f"event loop never held longer than {ms(TARGET_LOOP_LAG)} ms",
            f"largest lag {ms(f.loop_lag)} ms wall (largest own CPU {ms(f.loop_lag_own)} ms)",
            f.loop_lag <= TARGET_LOOP_LAG,
        ),
    ]
    if loss_ratio is not None:
        verdicts.append(
            Verdict(
                f"member loss ACKed by every stream <= {TARGET_LOSS_RATIO}x the floor",
                f"{ms(f.loss_seconds or 0.0)} vs {ms(floor or 0.0)} ms = {loss_ratio:.2f}x",
                loss_ratio <= TARGET_LOSS_RATIO,
            )
        )
    return Section(
        measure="churn",
        title=(
            f"Sustained churn: {options.per_minute:.0%} of endpoints per minute for "
            f"{options.seconds:g} s, {options.clients:,} streams, fleet {options.shape.describe()}"
        ),
        columns=("figure", "value", ""),
        rows=rows,
        notes=(
            "Through the debouncer (coalescing; removals published at once) and the fan-out",
            "pacing of `serve` (the next publish waits until the streams took the last); the",
            "events come from a process of their own and are applied in the server's loop, as",
            "a source applies watch events.",
            "A member lost at 1/3 and restored at 2/3; floor: bare grpc.aio pushing the same"
            if options.lose_member
            else "No member lost.",
            "member-loss bytes to as many streams, in the same run (push -> last ACK)."
            if options.lose_member
            else "",
            "Lag = newest generation - the stream's ACKed one, right after each publish (1 = it",
            "had the previous one).",
            "Loop lag is wall time; own CPU is the loop thread's from a timer's due time to its",
            "run; queued: runnable without a core; blocked: neither (the GIL, a select).",
            run.setting(),
        ),
        verdicts=tuple(verdicts),
        data={
            "events_per_second": f.events / f.wall,
            "publishes": lags.publishes,
            "publish_cpu_mean": lags.publish_cpu / max(1, lags.publishes),
            "cores": cores,
            "client_cores": f.clients_cpu / f.wall,
            "generator_cores": f.generator_cpu / f.wall,
            "machine_busy_cores": f.machine_cpu / f.wall,
            **run.placement(),
            "largest_lag": lags.largest,
            "largest_lag_in_status": lags.largest_in_status,
            "streams_behind": len(lags.behind),
            "drain_seconds": f.drain,
            "lag_histogram": dict(lags.histogram),
            "streams_cut": f.cut,
            "loop_lag_max": f.loop_lag,
            "loop_lag_own_max": f.loop_lag_own,
            "loop_lag_samples": f.lag_samples,
            "loop_lag_over": {str(k): v for k, v in f.lag_over.items()},
            "loop_lag_over_own": {str(k): v for k, v in f.lag_over_own.items()},
            "loop_lag_attributed": f.lag_attributed,
            "loop_lag_worst": f.lag_worst,
            # Every sample lagging more than KEEP_OVER: its wait, attributed (seconds; `at` is
            # seconds into the window; `iterations` the loop thread's CPU in each it spanned).
            "loop_lag_waits": [asdict(a) for a in f.lag_kept],
            "member_lost_at": f.loss_at,
            "member_restored_at": f.restore_at,
            "loop_iteration_cpu_max": f.iteration,
            "loop_iterations_over": {str(k): v for k, v in f.iterations_over.items()},
            "loop_iterations": f.iterations,
            "gc_pause_max": f.gc_largest,
            "gc_full_passes": f.gc_full_passes,
            "loop_holds": f.holds,
            "loop_hold_longest": asdict(f.hold_longest) if f.hold_longest else None,
            "eds_convergence_mean": (
                f.converged_sum / f.converged_count if f.converged_count else None
            ),
            "eds_converged": f.converged_count,
            "member_loss_seconds": f.loss_seconds,
            "member_loss_floor_seconds": floor,
            "member_loss_waited_seconds": f.loss_waited,
            "member_loss_publishing_seconds": f.loss_publishing,
        },
    )


async def _catch_up(
    pending: Callable[[], bool], served: targets.Serving, clients: int
) -> float | None:
    """Seconds until every stream has ACKed the last state, or None if not within the limit."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            await run.until(lambda: not pending() and served.in_sync() >= clients)
    except TimeoutError:
        return None
    return time.monotonic() - started


def _convergence() -> tuple[float, float]:
    """Sum and count of `xdsfleet_convergence_seconds{type="EDS"}` so far."""
    labels = {"type": typeurls.SHORT_NAMES[typeurls.ENDPOINT]}
    sample = REGISTRY.get_sample_value
    return (
        sample("xdsfleet_convergence_seconds_sum", labels) or 0.0,
        sample("xdsfleet_convergence_seconds_count", labels) or 0.0,
    )


def _send_timeouts() -> float:
    """Streams our server has closed because a write waited longer than its send timeout."""
    return REGISTRY.get_sample_value("xdsfleet_send_timeouts_total") or 0.0


# Lag buckets for the table: its full histogram is in the results file.
_BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 20), (21, None))


def _histogram(counts: Counter[int]) -> str:
    parts = []
    for low, high in _BUCKETS:
        n = sum(c for lag, c in counts.items() if lag >= low and (high is None or lag <= high))
        label = str(low) if low == high else f"{low}-{high}" if high else f">{low - 1}"
        if n:
            parts.append(f"{label}: {n}")
    return ", ".join(parts) or "none"


def _waits(kept: list[Attribution]) -> list[tuple[str, str, str]]:
    """What the samples lagging more than KEEP_OVER waited for, in the table's rows."""
    over = ms(KEEP_OVER)
    if not kept:
        return [(f"lag samples > {over} ms wall", "0", "")]
    count = len(kept)
    own_over = sum(a.own > KEEP_OVER for a in kept)
    # Which part of each wait was the largest: the server computing, the machine, or neither.
    parts = Counter(
        max(("own", a.own), ("queued", a.queued), ("blocked", a.blocked), key=lambda p: p[1])[0]
        for a in kept
    )
    spans = [len(a.iterations) for a in kept]
    parts_mean = [mean([getattr(a, p) for a in kept]) for p in ("own", "queued", "blocked")]
    return [
        (
            f"lag samples > {over} ms wall",
            f"{count:,}",
            f"of which own CPU > {over} ms: {own_over:,}; largest own "
            f"{ms(max(a.own for a in kept))} ms",
        ),
        (
            "... their waits, mean, ms: own CPU / queued for a core / blocked (GIL, select)",
            " / ".join(ms(m) for m in parts_mean),
            "largest part: " + ", ".join(f"{p} {parts[p]:,}" for p in ("own", "queued", "blocked")),
        ),
        (
            "... the process's other threads' CPU meanwhile, mean, ms",
            ms(mean([a.others for a in kept])),
            f"loop iterations spanned: mean {mean(spans):.1f}, most {max(spans)}",
        ),
    ]


def _hold(hold: Hold | None) -> str:
    """The longest hold logged: how long, the loop thread's own CPU, and where it first was."""
    if hold is None:
        return ""
    where = " < ".join(reversed(hold.looks[0].stack[-2:])) if hold.looks else "?"
    return f"longest {ms(hold.seconds)} ms (own CPU {ms(hold.cpu)} of {ms(hold.span)}): {where}"


def _marks(lost: float | None, restored: float | None) -> str:
    """When the member was lost and restored, in the same seconds as the largest lags."""
    marks = [f"{what} at {at:.1f} s" for what, at in (("lost", lost), ("restored", restored)) if at]
    return ", ".join(marks) or "no member lost"
