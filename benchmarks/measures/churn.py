"""Sustained churn: 5 % of the endpoints changing per minute, through the real Store.

Churn events (`benchmarks.churn`) arrive one at a time at a steady rate, each handed to the
Store as a new state, as a source would; the Store coalesces additions and publishes removals
at once (rule 24). A member is lost a third of the way through and restored at two thirds.

Two figures. CPU: the serving process's CPU time over the window (gRPC threads included), as a
fraction of one core, without the generator's and this measure's own bookkeeping. Lag: before
each publish, every stream's ACKed EDS version is mapped to the generation that produced it; a
stream's lag is how many generations behind the newest it is right after that publish (1 when it
had ACKed the previous one). Only publishes make the newest generation move, so the largest lag
seen there is the largest lag there ever was.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from benchmarks import proc, run, targets
from benchmarks.churn import Churn
from benchmarks.fleet import Fleet, Shape
from benchmarks.report import Section, Verdict, ms
from xdsfleet.app.store import Store
from xdsfleet.cache import types
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile

TARGET_CORES = 1.0
TARGET_LAG = 1
READY_SECONDS = 600.0
DRAIN_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = 1_000
    shape: Shape = Shape(members=50, services=1_000, endpoints=100_000)
    seconds: float = 60.0
    warmup: float = 5.0
    per_minute: float = 0.05  # of the endpoints
    open_limit: int = 100
    lose_member: bool = True


@dataclass(slots=True)
class Lags:
    """Generations published and how far behind them the streams were."""

    serving: targets.Serving
    generation: int = 0
    largest: int = 0
    behind: set[int] = field(default_factory=set)  # streams ever more than TARGET_LAG behind
    # Per publish, the largest lag of any stream: how many publishes had a stream N behind.
    histogram: Counter[int] = field(default_factory=Counter)
    publish_cpu: float = 0.0  # inside Publisher.publish
    publishes: int = 0
    bookkeeping: float = 0.0  # this measure's own CPU, to leave out
    measuring: bool = False
    _generations: dict[NodeProfile, dict[str, int]] = field(default_factory=dict)

    def record(self) -> None:
        """Map each profile's current EDS version to the current generation."""
        cache = self.serving.publisher.cache
        for profile in cache.profiles():
            version = cache.get(profile).versions.get(types.ENDPOINT, "")
            self._generations.setdefault(profile, {})[version] = self.generation

    def publish(self, state: FleetState) -> None:
        """The Store's publish: check the lags, publish, note the new versions."""
        started = time.thread_time()
        if self.measuring:
            self._check()
        published = time.thread_time()
        self.serving.publisher.publish(state)
        done = time.thread_time()
        self.generation += 1
        self.record()
        if self.measuring:
            self.publish_cpu += done - published
            self.publishes += 1
        self.bookkeeping += (published - started) + (time.thread_time() - done)

    def _check(self) -> None:
        upcoming = self.generation + 1
        largest = 0
        for stream_id, info in self.serving.ads.streams.items():
            status = info.machine.status().get(types.ENDPOINT)
            if status is None:
                continue
            acked = self._generations.get(info.profile, {}).get(status.acked_version, 0)
            lag = upcoming - acked
            largest = max(largest, lag)
            if lag > TARGET_LAG:
                self.behind.add(stream_id)
        self.histogram[largest] += 1
        self.largest = max(self.largest, largest)


@dataclass(slots=True)
class _Generator:
    churn: Churn
    store: Store
    cpu: float = 0.0  # making events and states: the sources' work, not the server's
    events: int = 0

    def apply(self, make: str = "event") -> None:
        started = time.thread_time()
        if make == "event":
            self.churn.event()
            self.events += 1
        state = self.churn.fleet.state()
        self.cpu += time.thread_time() - started
        self.store.update(state)

    async def run(self, seconds: float, rate: float, lost_member: int | None) -> None:
        """`rate` events per second for `seconds`, on a fixed schedule (no drift); the member, if
        any, is lost at a third and restored at two thirds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        marks = {round(seconds * rate / 3): "lose", round(2 * seconds * rate / 3): "restore"}
        for i in range(round(seconds * rate)):
            # Always through the loop, even when behind: a source's events reach the Store from
            # other tasks, never in one uninterrupted burst.
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            if lost_member is not None and (mark := marks.get(i)) is not None:
                if mark == "lose":
                    self.churn.fleet.lose(lost_member)
                else:
                    self.churn.fleet.restore(lost_member)
                self.apply("member")
            self.apply()


async def measure(options: Options) -> Section:
    fleet = Fleet(options.shape)
    churn = Churn(fleet)
    rate = options.shape.endpoints * options.per_minute / 60
    async with targets.serving(fleet.state()) as served:
        lags = Lags(served)
        store = Store(lags.publish, current=fleet.state())
        generator = _Generator(churn, store)
        with run.frozen_start_up():
            clients = run.Clients(options.clients, open_limit=options.open_limit)
            async with run.client_process(served.port, clients) as process:
                async with asyncio.timeout(READY_SECONDS):
                    await process.converged()
                    await run.until(lambda: served.in_sync() >= options.clients)
                lags.record()
                await generator.run(options.warmup, rate, None)
                lags.measuring = True
                pid = process.process.pid
                cpu0, clients0, wall0 = time.process_time(), proc.cpu_seconds(pid), time.monotonic()
                spent0, events0 = lags.bookkeeping + generator.cpu, generator.events
                lost = options.shape.members - 1 if options.lose_member else None
                await generator.run(options.seconds, rate, lost)
                wall = time.monotonic() - wall0
                server_cpu = time.process_time() - cpu0 - (lags.bookkeeping + generator.cpu - spent0)
                if process.process.returncode is not None:
                    raise run.BenchError("the client process exited: the server cut its streams")
                clients_cpu = proc.cpu_seconds(pid) - clients0
                lags.measuring = False
                events = generator.events - events0
                drained = time.monotonic()
                async with asyncio.timeout(DRAIN_SECONDS):
                    await run.until(lambda: not store.pending and served.in_sync() >= options.clients)
                drain = time.monotonic() - drained
    cores = server_cpu / wall
    rows = [
        ("events / s", f"{events / wall:,.1f}", f"{rate:,.1f} asked"),
        ("publishes", f"{lags.publishes:,}", f"{lags.publishes / wall:,.1f} / s"),
        ("CPU in Publisher.publish per publish, ms", ms(lags.publish_cpu / max(1, lags.publishes)), ""),
        ("server CPU, cores", f"{cores:.2f}", f"publish: {lags.publish_cpu / wall:.2f}"),
        ("client process CPU, cores", f"{clients_cpu / wall:.2f}", "(not the server's)"),
        ("largest lag, versions", str(lags.largest), f"{len(lags.behind):,} streams > {TARGET_LAG}"),
        ("publishes by their largest lag", _histogram(lags.histogram), ""),
        ("caught up after the churn stopped, s", f"{drain:.2f}", ""),
    ]
    return Section(
        measure="churn",
        title=(
            f"Sustained churn: {options.per_minute:.0%} of endpoints per minute for "
            f"{options.seconds:g} s, {options.clients:,} streams, fleet {options.shape.describe()}"
        ),
        columns=("figure", "value", ""),
        rows=rows,
        notes=(
            "Through the Store (coalescing; removals published at once); a member lost at 1/3",
            "and restored at 2/3. Lag = newest generation - the stream's ACKed one, right after",
            "each publish (1 = it had the previous one).",
        ),
        verdicts=(
            Verdict(
                "5 %/min churn sustained on < 1 core",
                f"{cores:.2f} cores",
                cores < TARGET_CORES,
            ),
            Verdict(
                f"no stream ever more than {TARGET_LAG} version behind",
                f"largest lag {lags.largest}; {len(lags.behind):,} of {options.clients:,} streams over",
                lags.largest <= TARGET_LAG,
            ),
        ),
        data={
            "events_per_second": events / wall,
            "publishes": lags.publishes,
            "publish_cpu_mean": lags.publish_cpu / max(1, lags.publishes),
            "cores": cores,
            "client_cores": clients_cpu / wall,
            "largest_lag": lags.largest,
            "streams_behind": len(lags.behind),
            "drain_seconds": drain,
            "lag_histogram": dict(lags.histogram),
        },
    )


def _histogram(counts: Counter[int]) -> str:
    return ", ".join(f"{lag}: {n}" for lag, n in sorted(counts.items()))
