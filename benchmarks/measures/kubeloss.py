"""A member lost through Kubernetes, measured from outside the server.

A real `xdsfleet serve` (a process of its own) reads every member from an emulated API server
(`tests/kube_host.py`, `kubestart.emulated_members`); raw gRPC streams (`benchmarks/clients.py`'s
simulated Envoys, all gateways over the six localities, SotW and Delta) ACK what they are sent,
in a probe process of their own. Then every EndpointSlice of one member is deleted through its
API server, one DELETE each (the server sees one watch event per slice), and later created
again. Reported: streams cut; per stream, from the first delete to its ACK of an EDS state that
holds no endpoint of that member, and from the first create to its ACK of one that holds all of
them again (p50, p99, max); the server's publishes in each window (its `fleet_published` log),
its CPU, its event-loop lag (`xdsfleet_event_loop_lag_seconds` from /metrics), its peak RSS.

Through Kubernetes a member's loss is also a mass removal: docs/architecture.md, decision 5,
holds a removal of most of a service's endpoints seen on a watch until a list started after it
confirms it. That wait is part of what the loss costs here, and the table shows it from the
server's own log (`mass_removal_held` to `mass_removal_confirmed`).

Probe: `python -m benchmarks.measures.kubeloss --port P --streams N --members M --services S
--endpoints E --lost L` prints one JSON line per stream as it is synced (`{"synced": i}`), as
its EDS state loses the last endpoint of member L (`{"gone": i, "at": t}`) and as it has all
of them again (`{"back": i, "at": t}`), times in time.monotonic() (system-wide on Linux); on
SIGTERM, `{"cut": K}`: the streams the server ended (each reopened, as Envoy would).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import urllib3
import yaml
from envoy.config.endpoint.v3 import endpoint_pb2

from benchmarks import clients, fleet, proc, run
from benchmarks.fleet import Fleet, Shape
from benchmarks.measures import kubestart
from benchmarks.report import Section, Verdict, ms, rank
from harness.local import Server
from xdsfleet.cache import typeurls
from xdsfleet.sources.kube import resources

DEFAULT_SHAPE = Shape(members=20, services=200, endpoints=20_000)
STREAMS = 300
TARGET_P99_SECONDS = 1.1  # the outside probe: member-loss p99 0.8-1.1 s
READY_SECONDS = 300.0
PHASE_SECONDS = 120.0
LAG_METRIC = "xdsfleet_event_loop_lag_seconds"


@dataclass(frozen=True, slots=True)
class Options:
    shape: Shape = DEFAULT_SHAPE
    streams: int = STREAMS

    @property
    def lost(self) -> int:
        return self.shape.members - 1  # never member 0: its hot service carries the marker


# --- The probe (its own process) -------------------------------------------------------------


def gateway_index(stream: int) -> int:
    """The simulated Envoy index of probe stream `stream`: a gateway, in locality stream % 6
    (`clients.profile_of_client`), speaking SotW or Delta by turns of six."""
    localities = len(fleet.LOCALITIES)
    return (stream // localities) * 2 * localities + localities + stream % localities


@dataclass(slots=True)
class LossTally:
    """Per stream, the EDS resources it holds with endpoints of the lost member."""

    lost: frozenset[str]  # the member's endpoint addresses
    holding: dict[int, set[str]] = field(default_factory=dict)
    full: dict[int, int] = field(default_factory=dict)  # what each held once synced
    gone: set[int] = field(default_factory=set)  # streams that have held none since
    _seen: dict[bytes, tuple[str, bool]] = field(default_factory=dict)

    def _read(self, value: bytes) -> tuple[str, bool]:
        """(cluster name, holds an endpoint of the lost member), once per distinct resource."""
        found = self._seen.get(value)
        if found is None:
            assignment = endpoint_pb2.ClusterLoadAssignment.FromString(value)
            found = self._seen[value] = (
                assignment.cluster_name,
                any(
                    lb.endpoint.address.socket_address.address in self.lost
                    for locality in assignment.endpoints
                    for lb in locality.lb_endpoints
                ),
            )
        return found

    def update(self, stream: int, response: Any, entries: list[clients.Entry], at: float) -> None:
        holding = self.holding.setdefault(stream, set())
        for name in getattr(response, "removed_resources", ()):
            holding.discard(name)
        for entry in entries:
            name, lost = self._read(entry.value)
            if lost:
                holding.add(name)
            else:
                holding.discard(name)
        if stream not in self.full:
            return
        if not holding and stream not in self.gone:
            self.gone.add(stream)
            _say({"gone": stream, "at": at})
        elif stream in self.gone and len(holding) >= self.full[stream]:
            self.gone.discard(stream)
            _say({"back": stream, "at": at})

    def synced(self, stream: int) -> None:
        self.full[stream] = len(self.holding.get(stream, ()))
        _say({"synced": stream, "holding": self.full[stream]})


def _say(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


@dataclass(slots=True)
class Probe(clients.Envoy):
    """A simulated Envoy that also tells the tally what its EDS state holds."""

    tally: LossTally | None = None
    stream: int = 0

    def _progress(self, response: Any, acked_at: float, on_synced: Any) -> None:
        # Not `super()`: a slots dataclass is a new class, which the zero-argument form misses.
        clients.Envoy._progress(self, response, acked_at, on_synced)
        assert self.tally is not None
        if response.type_url == typeurls.ENDPOINT:
            entries = list(self.dialect.entries(response))
            self.tally.update(self.stream, response, entries, acked_at)


async def probe(port: int, streams: int, shape: Shape, lost: int) -> None:
    generated = Fleet(shape)
    addresses = frozenset(
        e.addresses[0] for s in range(shape.services) for e in generated.endpoints(lost, s)
    )
    tally = LossTally(addresses)
    shared = clients.Shared(clients.Tally(streams), reconnect=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    target = f"127.0.0.1:{port}"
    channels = [
        grpc.aio.insecure_channel(target, options=clients.CHANNEL_OPTIONS)
        for _ in range(0, streams, clients.STREAMS_PER_CHANNEL)
    ]

    async def one(stream: int) -> None:
        index = gateway_index(stream)
        dialect: clients.Dialect = (
            clients.Delta() if clients.delta_client(index, "mixed") else clients.Sotw()
        )
        envoy = Probe(index, dialect, shared, tally=tally, stream=stream)
        await envoy.run(
            channels[stream // clients.STREAMS_PER_CHANNEL], lambda: tally.synced(stream)
        )

    tasks = [asyncio.create_task(one(i), name=f"probe-{i}") for i in range(streams)]
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            failed = done.pop()
            raise RuntimeError(f"{failed.get_name()} ended: {failed.exception()!r}")
    finally:
        for task in [stopping, *tasks]:
            task.cancel()
        await asyncio.gather(stopping, *tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in channels))
        _say({"cut": shared.reconnected})


# --- The driver ------------------------------------------------------------------------------


class _Lines:
    """The probe's lines, read in a thread, waited for with deadlines."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="probe-lines").start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        # ValueError: a line that is not JSON (skipped), or the pipe closed after a failure.
        with contextlib.suppress(ValueError):
            for line in self._process.stdout:
                with contextlib.suppress(ValueError):
                    self._queue.put(json.loads(line))
        self._queue.put(None)

    def collect(self, key: str, count: int, seconds: float) -> list[dict[str, Any]]:
        """The next `count` lines with `key` (others are dropped)."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while len(found) < count:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise run.BenchError(
                    f"the probe saw {len(found)} of {count} streams {key} in {seconds:g} s"
                ) from None
            if line is None:
                raise run.BenchError(f"the probe ended (exit {self._process.wait()})")
            if key in line:
                found.append(line)
        return found


@dataclass(frozen=True, slots=True)
class _Api:
    """One member's API server, reached with plain HTTP."""

    server: str
    token: str

    def call(self, pool: urllib3.PoolManager, method: str, path: str, body: Any = None) -> Any:
        answer = pool.request(
            method,
            self.server + path,
            body=json.dumps(body) if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        if answer.status >= 300:
            raise run.BenchError(f"{method} {path}: HTTP {answer.status}")
        return json.loads(answer.data)


def _member_api(fleet_path: Path, member: str) -> _Api:
    fleet = yaml.safe_load(fleet_path.read_text())
    [entry] = [m for m in fleet["spec"]["members"] if m["name"] == member]
    config = yaml.safe_load(Path(entry["source"]["kubeconfig"]).read_text())
    return _Api(config["clusters"][0]["cluster"]["server"], config["users"][0]["user"]["token"])


@dataclass(frozen=True, slots=True)
class _Sample:
    """The server's figures at one moment."""

    mono: float
    wall: float
    cpu: float
    lag: dict[float, float]  # the loop-lag histogram's cumulative buckets

    @classmethod
    def of(cls, server: Server) -> _Sample:
        buckets = {}
        for line in server.metrics().splitlines():
            if line.startswith(f"{LAG_METRIC}_bucket"):
                bound = line[line.index('le="') + 4 : line.index('"}')]
                buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
        return cls(time.monotonic(), time.time(), proc.cpu_seconds(server.pid), buckets)


@dataclass(frozen=True, slots=True)
class _Window:
    """What one phase (the loss, or the restore) did."""

    acked: list[float]  # per stream: seconds from the first API call to its ACK
    calls: float  # seconds the API calls took
    publishes: list[dict[str, Any]]  # the server's fleet_published events meanwhile
    held: float | None  # the first mass removal held -> its confirmation, seconds
    published: tuple[float, float] | None  # the last publish's start and end, from the first call
    cpu: float  # the server's CPU seconds
    lag_over_50ms: int  # loop-lag samples over 50 ms
    lag_max_bound: float  # the largest loop lag was at most this (a histogram bound)


def _timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def _window(
    server: Server, before: _Sample, after: _Sample, lines: list[dict[str, Any]], calls: float
) -> _Window:
    in_window = [
        e
        for e in server.events(
            "fleet_published", "mass_removal_held", "mass_removal_confirmed", "mass_removal_expired"
        )
        if before.wall <= _timestamp(e) <= after.wall
    ]
    held = [_timestamp(e) for e in in_window if e["event"] == "mass_removal_held"]
    released = [
        _timestamp(e)
        for e in in_window
        if e["event"] in ("mass_removal_confirmed", "mass_removal_expired")
    ]
    delta = {le: after.lag.get(le, 0.0) - before.lag.get(le, 0.0) for le in after.lag}
    total = delta.get(float("inf"), 0.0)
    bound = min((le for le, n in delta.items() if n >= total), default=float("inf"))
    publishes = [e for e in in_window if e["event"] == "fleet_published"]
    published = None
    if publishes:
        # Logged as it ends, with its wall time (`ms`).
        end = _timestamp(publishes[-1]) - before.wall
        published = (end - float(publishes[-1].get("ms", 0.0)) / 1000, end)
    return _Window(
        acked=[line["at"] - before.mono for line in lines],
        calls=calls,
        publishes=publishes,
        held=(max(released) - min(held)) if held and released else None,
        published=published,
        cpu=after.cpu - before.cpu,
        lag_over_50ms=int(total - delta.get(0.05, 0.0)),
        lag_max_bound=bound,
    )


def _slices(api: _Api, pool: urllib3.PoolManager) -> list[dict[str, Any]]:
    listed = api.call(pool, "GET", resources.ENDPOINT_SLICES.path())
    return [item for item in listed["items"] if item["metadata"]["name"]]


def _created(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as a client creates it (without what the API server sets)."""
    metadata = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "labels")}
    return {**obj, "metadata": metadata}


@contextlib.contextmanager
def _probe_process(port: int, options: Options) -> Iterator[subprocess.Popen[str]]:
    shape = options.shape
    figures = {
        "port": port,
        "streams": options.streams,
        "members": shape.members,
        "services": shape.services,
        "endpoints": shape.endpoints,
        "lost": options.lost,
    }
    process = subprocess.Popen(
        [*run.load_prefix(), sys.executable, "-m", "benchmarks.measures.kubeloss"]
        + [f"--{name}={value}" for name, value in figures.items()],
        cwd=run.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def measure(options: Options) -> Section:
    shape = options.shape
    lost = Fleet(shape).members[options.lost].name
    with (
        kubestart.emulated_members(shape) as members,
        Server(members.fleet) as server,
        urllib3.PoolManager(maxsize=1) as pool,
    ):
        started = time.perf_counter()
        server.start(timeout=READY_SECONDS)
        ready = time.perf_counter() - started
        api = _member_api(members.fleet, lost)
        originals = _slices(api, pool)
        with _probe_process(server.xds_port, options) as process:
            lines = _Lines(process)
            synced = lines.collect("synced", options.streams, READY_SECONDS)
            holding = min(line["holding"] for line in synced)
            before = _Sample.of(server)
            for obj in originals:
                metadata = obj["metadata"]
                path = resources.ENDPOINT_SLICES.path(
                    namespace=metadata["namespace"], name=metadata["name"]
                )
                api.call(pool, "DELETE", path)
            calls = time.monotonic() - before.mono
            gone = lines.collect("gone", options.streams, PHASE_SECONDS)
            after = _Sample.of(server)
            loss = _window(server, before, after, gone, calls)
            before = _Sample.of(server)
            for obj in originals:
                namespace = obj["metadata"]["namespace"]
                path = resources.ENDPOINT_SLICES.path(namespace=namespace)
                api.call(pool, "POST", path, _created(obj))
            calls = time.monotonic() - before.mono
            back = lines.collect("back", options.streams, PHASE_SECONDS)
            after = _Sample.of(server)
            restore = _window(server, before, after, back, calls)
            process.send_signal(signal.SIGTERM)
            [final] = lines.collect("cut", 1, 30)
        peak = proc.memory_kib(server.pid)["VmHWM"] / 1024
    return _section(options, lost, len(originals), holding, ready, loss, restore, final, peak)


def _row(name: str, window: _Window) -> tuple[str, ...]:
    return (
        name,
        ms(rank(window.acked, 0.50)),
        ms(rank(window.acked, 0.99)),
        ms(max(window.acked)),
        f"{len(window.publishes)}",
        ms(sum(e.get("cpu_ms", 0.0) for e in window.publishes) / 1000),
        f"{window.cpu:.2f}",
        f"{window.lag_over_50ms} (max ≤ {ms(window.lag_max_bound)})",
    )


def _section(
    options: Options,
    lost: str,
    slices: int,
    holding: int,
    ready: float,
    loss: _Window,
    restore: _Window,
    final: dict[str, Any],
    peak: float,
) -> Section:
    shape = options.shape
    cut = int(final["cut"])
    p99 = rank(loss.acked, 0.99)
    every = len(loss.acked) == options.streams and len(restore.acked) == options.streams
    held = f"{loss.held:.2f} s" if loss.held is not None else "none logged"

    def timeline(window: _Window) -> str:
        if window.published is None:
            return "no publish logged"
        start, end = window.published
        fanout = [a - end for a in window.acked]
        return (
            f"last publish {start:.2f}-{end:.2f} s after the first call; from its end to the "
            f"streams' ACKs p50 {rank(fanout, 0.5):.2f} s, p99 {rank(fanout, 0.99):.2f} s"
        )

    publishes = ", ".join(
        f"{e.get('ms', 0):,.0f} ms ({e.get('cpu_ms', 0):,.0f} ms CPU)" for e in loss.publishes
    )
    return Section(
        measure="kubeloss",
        title=(
            f"A member's EndpointSlices deleted through its API server, {options.streams} "
            f"gateway streams, ms: fleet {shape.describe()}"
        ),
        columns=(
            "phase",
            "p50",
            "p99",
            "max",
            "publishes",
            "publish CPU",
            "server CPU, s",
            "loop lag > 50 ms",
        ),
        rows=[_row("loss: first DELETE -> ACK without it", loss), _row("restore", restore)],
        notes=(
            f"Member {lost}: {slices} EndpointSlices (one DELETE, then one POST, each); each "
            f"stream held {holding} or more assignments with its endpoints.",
            f"The API calls took {loss.calls:.2f} s (loss) and {restore.calls:.2f} s (restore).",
            f"Mass removal held until a fresh list confirmed it (decision 5): {held}.",
            f"Publishes during the loss: {publishes or 'none'}.",
            f"Loss: {timeline(loss)}.",
            f"Restore: {timeline(restore)}.",
            f"Streams cut: {cut}. Server ready after {ready:.1f} s; peak RSS {peak:,.0f} MiB.",
        ),
        verdicts=(
            Verdict(
                f"{options.streams} streams, member loss through Kubernetes: no stream cut",
                f"{cut} cut",
                cut == 0 and every,
            ),
            Verdict(
                f"member-loss p99 <= {TARGET_P99_SECONDS:g} s (the issue's outside probe)",
                f"p99 {p99:.2f} s (held {held})",
                p99 <= TARGET_P99_SECONDS,
            ),
        ),
        data={
            "streams_cut": cut,
            "loss_acked": loss.acked,
            "restore_acked": restore.acked,
            "loss_p99": p99,
            "held_seconds": loss.held,
            "loss_publishes": len(loss.publishes),
            "peak_rss_mib": peak,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    for name in ("port", "streams", "members", "services", "endpoints", "lost"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()
    shape = Shape(members=args.members, services=args.services, endpoints=args.endpoints)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(probe(args.port, args.streams, shape, args.lost))


if __name__ == "__main__":
    main()
