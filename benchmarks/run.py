"""One comparison: N clients on our server and N on the floor, through every change of the plan.

Changes are spaced by conditions, not sleeps: the next one starts once every client has ACKed the
last one and the server has read all those ACKs, so no change pays for the tail of another.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import targets
from benchmarks.clients import Converged
from benchmarks.fleet import Plan
from benchmarks.targets import Target

ROOT = Path(__file__).resolve().parent.parent
# Connecting and syncing every client at start-up costs more than a change does.
READY_SECONDS = 120.0
CHANGE_SECONDS = 60.0
STOP_SECONDS = 10.0
POLL_SECONDS = 0.005
# A report line holds one time per client: well beyond asyncio's 64 KiB default at 5,000.
LINE_LIMIT = 16 * 1024 * 1024


class BenchError(Exception):
    """The run could not be measured (a client process died, a change never converged)."""


@dataclass(frozen=True, slots=True)
class ClientProcess:
    process: asyncio.subprocess.Process

    async def converged(self) -> Converged:
        """The next version every client has ACKed."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise BenchError(f"the client process exited ({await self.process.wait()})")
        return Converged.parse(line.decode())


@contextlib.asynccontextmanager
async def client_process(port: int, clients: int) -> AsyncIterator[ClientProcess]:
    # Spawned as a fresh interpreter: gRPC must never be forked.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.clients",
        f"--port={port}",
        f"--clients={clients}",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
    )
    try:
        yield ClientProcess(process)
    finally:
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


@dataclass(frozen=True, slots=True)
class Measurement:
    # Per client and change: its ACK time minus the change's start, in seconds.
    convergence: list[float] = field(default_factory=list)
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

    async def converge(self, plan: Plan, step: int, deadline: float) -> tuple[list[float], float]:
        """Every client's ACK time of step `step`, once the server has read those ACKs too, and
        the CPU time spent checking that it has."""
        version = plan.version(step)
        try:
            async with asyncio.timeout(deadline):
                converged = await self.clients.converged()
                if converged.version != version:
                    raise BenchError(
                        f"change {step}: clients ACKed {converged.version}, not {version}"
                    )
                checks = await until(lambda: self.target.acked(version) >= self.count)
        except TimeoutError:
            raise BenchError(f"change {step} did not converge within {deadline} s") from None
        return converged.acked, checks

    async def change(self, plan: Plan, step: int) -> None:
        cpu0 = time.process_time()
        t0 = time.monotonic()
        self.target.apply(step)
        acked, checks = await self.converge(plan, step, CHANGE_SECONDS)
        self.measured.cpu.append(time.process_time() - cpu0 - checks)
        self.measured.convergence.extend(t - t0 for t in acked)


async def compare(plan: Plan, count: int) -> tuple[Measurement, Measurement]:
    """Ours and the floor, each with `count` clients of its own, taking the changes in turns:
    whatever else the machine does meanwhile weighs on both alike. The idle side costs nothing:
    its streams wait on reads."""
    async with contextlib.AsyncExitStack() as stack:
        servers: list[Target] = [
            await stack.enter_async_context(targets.ours(plan)),
            await stack.enter_async_context(targets.floor(plan)),
        ]
        ours, floor = [
            _Side(
                server, await stack.enter_async_context(client_process(server.port, count)), count
            )
            for server in servers
        ]
        for side in (ours, floor):
            await side.converge(plan, 0, READY_SECONDS)
        for step in range(1, len(plan.states)):
            for side in (ours, floor):
                await side.change(plan, step)
    return ours.measured, floor.measured
