"""Running simulated clients against servers: the client process, and paired convergence runs.

Paired runs put every server and its own client fleet up together and make each change on each
server in turns, so load elsewhere on the machine weighs on all alike; the order alternates from
one change to the next. Changes are spaced by conditions, not sleeps: the next one starts once
every client has ACKed the last one and the server has read all those ACKs, so no change pays
for the tail of another.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.clients import Converged
from benchmarks.targets import Target

if TYPE_CHECKING:
    from benchmarks.fleet import Shape
    from xdsfleet.model.fleet import FleetState
    from xdsfleet.pipeline.publisher import Publisher

ROOT = Path(__file__).resolve().parent.parent
# Connecting and syncing every client at start-up costs more than a change does.
READY_SECONDS = 300.0
CHANGE_SECONDS = 60.0
STOP_SECONDS = 10.0
POLL_SECONDS = 0.005
# A report line holds one time per client: well beyond asyncio's 64 KiB default at 5,000.
LINE_LIMIT = 16 * 1024 * 1024
# The load generators' niceness (`python -m benchmarks --nice N`): the client fleets and the
# churn generator stand for Envoys and API servers on other hosts, yet share this machine's cores
# with the server measured. 0 (the default) leaves them its equals; above, the kernel gives the
# server's threads a core first, and every ratio to a floor is measured with the same setting.
NICE = 0
# CPU placement (`python -m benchmarks --cpus LIST`, `place`): the CPUs of the measured servers
# (this process, where ours and the floor serve side by side, and every process it starts but the
# load generators: the RSS servers, the cold starts, `serve`) and those of the load generators
# (the rest this process was allowed). Empty: no placement, everything shares every CPU.
SERVER_CPUS: frozenset[int] = frozenset()
LOAD_CPUS: frozenset[int] = frozenset()


class BenchError(Exception):
    """The run could not be measured (a client process died, a change never converged)."""


@dataclass(frozen=True, slots=True)
class Clients:
    """One client process: how many streams, and of what kind (see `benchmarks.clients`)."""

    count: int
    protocol: str = "mixed"
    stalled: int = 0
    services: int = 0
    open_limit: int = 0
    reconnect: bool = False
    oversized: int = 0

    def argv(self, port: int) -> list[str]:
        return [
            f"--port={port}",
            f"--clients={self.count}",
            f"--protocol={self.protocol}",
            f"--stalled={self.stalled}",
            f"--services={self.services}",
            f"--open-limit={self.open_limit}",
            f"--oversized={self.oversized}",
            *(["--reconnect"] if self.reconnect else []),
        ]


@dataclass(frozen=True, slots=True)
class ClientProcess:
    process: asyncio.subprocess.Process

    async def converged(self) -> Converged:
        """The next step every measured client has reached."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise BenchError(f"the client process exited ({await self.process.wait()})")
        return Converged.parse(line.decode())


@contextlib.asynccontextmanager
async def client_process(port: int, clients: Clients) -> AsyncIterator[ClientProcess]:
    # Spawned as a fresh interpreter: gRPC must never be forked.
    process = await asyncio.create_subprocess_exec(
        *load_prefix(),
        sys.executable,
        "-m",
        "benchmarks.clients",
        *clients.argv(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
    )
    try:
        yield ClientProcess(process)
    finally:
        await stop_process(process)


def load_prefix() -> list[str]:
    """The command prefix a load generator runs under (`NICE`, `LOAD_CPUS`), every thread of
    it (affinity and niceness are inherited by the threads a process starts)."""
    cpus = ["taskset", "--cpu-list", _cpu_list(LOAD_CPUS)] if LOAD_CPUS else []
    return [*cpus, *(["nice", "-n", str(NICE)] if NICE else [])]


def place(server: frozenset[int]) -> None:
    """Pin this process, every thread of it, to the CPUs `server`, and the load generators
    started from now on to the other CPUs it was allowed: as if the Envoys and API servers
    they stand for ran on other hosts. The processes this one starts inherit `server`."""
    global SERVER_CPUS, LOAD_CPUS
    allowed = os.sched_getaffinity(0)
    if not server or not server < allowed:
        raise BenchError(
            f"--cpus {_cpu_list(server)}: must name some, not all, of the CPUs allowed "
            f"({_cpu_list(frozenset(allowed))})"
        )
    for task in os.listdir("/proc/self/task"):  # threads started already (none expected)
        os.sched_setaffinity(int(task), server)
    SERVER_CPUS, LOAD_CPUS = server, frozenset(allowed - server)


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def setting() -> str:
    """Where the load generators ran, for a table's notes: niceness and CPUs."""
    where = (
        f"on CPU {_cpu_list(LOAD_CPUS)}; servers on CPU {_cpu_list(SERVER_CPUS)}"
        if SERVER_CPUS
        else "sharing every CPU with the servers"
    )
    equals = "" if NICE else " (the servers' equals)"
    return f"Load generators at niceness {NICE}{equals}, {where}."


def placement() -> dict[str, Any]:
    """The same, for a results file."""
    return {
        "load_niceness": NICE,
        "server_cpus": sorted(SERVER_CPUS) or None,
        "load_cpus": sorted(LOAD_CPUS) or None,
    }


@contextlib.asynccontextmanager
async def fleet_process(
    module: str, shape: Shape, *argv: str, load: bool = False
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m module` on the generated fleet of `shape`: a fresh interpreter (gRPC must
    never be forked), stdin and stdout piped; stdin closed and the process stopped on exit.
    `load`: it generates load (at `NICE`, on `LOAD_CPUS`), it is not measured."""
    process = await asyncio.create_subprocess_exec(
        *(load_prefix() if load else []),
        sys.executable,
        "-m",
        module,
        *argv,
        f"--members={shape.members}",
        f"--services={shape.services}",
        f"--endpoints={shape.endpoints}",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        await stop_process(process)


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it does not end in time; always reaped."""
    if process.returncode is None:
        process.terminate()
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def until(condition: Callable[[], bool]) -> float:
    """Wait for state owned by a server, which offers no event to await; callers set the
    deadline. Returns the CPU time the checks took: the benchmark's, not the server's."""
    spent = 0.0
    while True:
        started = time.thread_time()
        done = condition()
        spent += time.thread_time() - started
        if done:
            return spent
        await asyncio.sleep(POLL_SECONDS)


def first_snapshots(state: FleetState) -> tuple[float, float, float, Publisher]:
    """What `serve` does once its first state is complete: collect and freeze what start-up
    built (the collector's passes would otherwise walk the whole fleet again and again during
    the first publish), then every generated profile's first snapshot. Returns the freeze's
    seconds, the publish's seconds and CPU seconds, and the publisher."""
    from benchmarks import fleet as generated
    from xdsfleet.pipeline.publisher import Publisher

    wall = time.perf_counter()
    gc.collect()
    gc.freeze()
    freeze = time.perf_counter() - wall
    wall, cpu = time.perf_counter(), time.process_time()
    publisher = Publisher(state)
    for profile in generated.profiles():
        publisher.cache.watch(profile, lambda: None)
        publisher.cache.get(profile)
    return freeze, time.perf_counter() - wall, time.process_time() - cpu, publisher


def child_figures(module: str, *args: str, what: str, timeout: float) -> dict[str, float]:
    """Run `python -m module args...` in a fresh interpreter (a cold start must not find this
    process's imports and caches) and read the JSON figures it prints."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{what} failed: {done.stderr.strip()}")
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


@contextlib.contextmanager
def frozen_start_up() -> Iterator[None]:
    """What `xdsfleet serve` does once started: move what start-up built out of the collector's
    full passes. Undone afterwards, so that measures run one after another do not pile up."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass(frozen=True, slots=True)
class Measurement:
    # Per client and change: its ACK time minus the change's start, in seconds.
    acks: list[float] = field(default_factory=list)
    # Per change: the last client's ACK time minus the change's start.
    last: list[float] = field(default_factory=list)
    # Per change: CPU seconds of this process (the server's, gRPC threads included) from the
    # change to the last ACK read. The latencies alone cannot tell a slow server from busy
    # clients: both share the same two cores.
    cpu: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Side:
    target: Target
    clients: ClientProcess
    count: int
    measured: Measurement = field(default_factory=Measurement)

    async def converge(self, step: int, deadline: float) -> tuple[list[float], float]:
        """Every client's ACK time of step `step`, once the server has read those ACKs too, and
        the CPU time spent checking that it has."""
        try:
            async with asyncio.timeout(deadline):
                converged = await self.clients.converged()
                if converged.step != step:
                    raise BenchError(f"clients reached step {converged.step}, not {step}")
                checks = await until(lambda: self.target.acked(step) >= self.count)
        except TimeoutError:
            raise BenchError(f"step {step} did not converge within {deadline} s") from None
        return converged.acked, checks

    async def change(self, step: int) -> None:
        cpu0 = time.process_time()
        t0 = time.monotonic()
        self.target.apply(step)
        acked, checks = await self.converge(step, CHANGE_SECONDS)
        self.measured.cpu.append(time.process_time() - cpu0 - checks)
        latencies = [t - t0 for t in acked]
        self.measured.acks.extend(latencies)
        self.measured.last.append(max(latencies))
        await self.target.settled()


async def paired(
    targets: Sequence[AbstractAsyncContextManager[Target]],
    clients: Sequence[Clients],
    changes: int,
    *,
    ready: Callable[[Sequence[Target]], bool] | None = None,
    inspect: Callable[[Sequence[Target]], None] | None = None,
    starting: Callable[[Sequence[Target]], None] | None = None,
) -> list[Measurement]:
    """Each target with its own client process, through every change, in turns. The first
    change waits for `ready` to hold as well as for every client; `starting` is told right
    before it; `inspect` looks at the servers once the last change has converged, before they
    stop."""
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(t) for t in targets]
        stack.enter_context(frozen_start_up())
        sides = [
            _Side(server, await stack.enter_async_context(client_process(server.port, c)), c.count)
            for server, c in zip(servers, clients, strict=True)
        ]
        for side in sides:
            await side.converge(0, READY_SECONDS)
        if ready is not None:
            async with asyncio.timeout(READY_SECONDS):
                await until(lambda: ready(servers))
        if starting is not None:
            starting(servers)
        for step in range(1, changes + 1):
            for side in sides if step % 2 else sides[::-1]:
                await side.change(step)
        if inspect is not None:
            inspect(servers)
    return [side.measured for side in sides]
