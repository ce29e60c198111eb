"""Memory: resident set size of the serving process, in total and per connected stream.

Each server runs in a process of its own (`benchmarks.server`), so that nothing of the
benchmark's weighs in: ours, then the floor (bare gRPC holding pre-built answers). Each is
measured once with every profile's snapshot built and no stream, then with N streams connected
and synced; the difference divided by N is what a stream costs. Streams open at most
`open_limit` at a time: the steady state is the figure. The peaks (VmHWM) are reported beside
it: while building (before any stream) and while the streams connect (the peak is reset in
between, through /proc/PID/clear_refs). Every new stream is sent its whole configuration, so
connecting is when the most response bytes are under way at once: our server bounds them
(`xdsfleet.server.budget`), and its peak while connecting should stay within the steady state
plus that budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import run
from benchmarks.fleet import FULL_SCALE, Shape
from benchmarks.report import Section, Verdict
from xdsfleet.server.budget import WriteBudget

TARGET_MIB = 500
# Issue 10: within 15 % of the bare-gRPC floor holding the same answers for as many streams.
TARGET_OF_FLOOR = 1.15
START_SECONDS = 600.0
BUDGET_MIB = WriteBudget().limit / 2**20


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = 2_000
    shape: Shape = FULL_SCALE
    open_limit: int = 100


@dataclass(frozen=True, slots=True)
class Memory:
    idle_mib: float
    loaded_mib: float
    peak_mib: float  # while building, before any stream
    connect_peak_mib: float  # while the streams connected and synced
    streams: int

    @property
    def per_stream_kib(self) -> float:
        return (self.loaded_mib - self.idle_mib) * 1024 / max(1, self.streams)


class _Server:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise run.BenchError(f"the server process exited ({await self.process.wait()})")
        data: dict[str, Any] = json.loads(line)
        return data

    async def measure(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(b"measure\n")
        await self.process.stdin.drain()
        return await self.line()


@contextlib.asynccontextmanager
async def server_process(target: str, shape: Shape) -> AsyncIterator[_Server]:
    async with run.fleet_process("benchmarks.server", shape, f"--target={target}") as process:
        yield _Server(process)


def _reset_peak(pid: int) -> None:
    """Make VmHWM the resident size of now (Linux: clear_refs, 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def memory_of(target: str, options: Options) -> Memory:
    async with server_process(target, options.shape) as server:
        async with asyncio.timeout(START_SECONDS):
            port = (await server.line())["port"]
            idle = await server.measure()
            # From here VmHWM is the peak while the streams connect.
            _reset_peak(server.process.pid)
            clients = run.Clients(options.clients, open_limit=options.open_limit)
            async with run.client_process(port, clients) as process:
                await process.converged()  # every stream synced
                loaded = await server.measure()
    return Memory(
        idle_mib=idle["rss_kib"] / 1024,
        loaded_mib=loaded["rss_kib"] / 1024,
        peak_mib=idle["hwm_kib"] / 1024,
        connect_peak_mib=loaded["hwm_kib"] / 1024,
        streams=int(loaded["streams"]),
    )


async def measure(options: Options) -> Section:
    # Side by side: each process's memory is its own, and the run takes half the time.
    ours, floor = await asyncio.gather(memory_of("ours", options), memory_of("floor", options))
    rows = [
        (
            name,
            f"{m.streams:,}",
            f"{m.idle_mib:,.0f}",
            f"{m.loaded_mib:,.0f}",
            f"{m.per_stream_kib:,.0f}",
            f"{m.peak_mib:,.0f}",
            f"{m.connect_peak_mib:,.0f}",
        )
        for name, m in (("xdsfleet", ours), ("floor", floor))
    ]
    return Section(
        measure="rss",
        title=f"RSS, MiB: {options.clients:,} streams, fleet {options.shape.describe()}",
        columns=(
            "server",
            "streams",
            "no stream",
            "streams synced",
            "KiB / stream",
            "peak building",
            "peak connecting",
        ),
        rows=rows,
        notes=(
            "no stream: every profile's snapshot built (ours) or every answer built (floor).",
            f"Streams open {options.open_limit} at a time; peaks = VmHWM before any stream, and"
            " from then until every stream is synced.",
        ),
        verdicts=(
            Verdict(
                f"RSS <= {TARGET_MIB} MB with {options.clients:,} streams",
                f"{ours.loaded_mib:,.0f} MiB ({ours.per_stream_kib:,.0f} KiB per stream)",
                ours.loaded_mib <= TARGET_MIB,
            ),
            Verdict(
                f"RSS <= {TARGET_OF_FLOOR:g}x the floor's with {options.clients:,} streams",
                f"{ours.loaded_mib / floor.loaded_mib:.2f}x ({floor.loaded_mib:,.0f} MiB floor)",
                ours.loaded_mib <= TARGET_OF_FLOOR * floor.loaded_mib,
            ),
            Verdict(
                f"peak while {options.clients:,} streams connect <= synced + write budget "
                f"({BUDGET_MIB:g} MiB)",
                f"{ours.connect_peak_mib:,.0f} MiB (synced {ours.loaded_mib:,.0f} MiB)",
                ours.connect_peak_mib <= ours.loaded_mib + BUDGET_MIB,
            ),
        ),
        data={"xdsfleet": _figures(ours), "floor": _figures(floor)},
    )


def _figures(memory: Memory) -> dict[str, float]:
    return {**asdict(memory), "per_stream_kib": memory.per_stream_kib}
