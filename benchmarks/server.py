"""A server in a process of its own, so that its memory is its own: ours, or the floor.

Run as `python -m benchmarks.server --target ours|floor --members M --services S --endpoints E`.
It builds the generated fleet, makes every active profile's first snapshot (ours; the floor
builds its tables), starts serving on 127.0.0.1 and prints `{"port": P}`. Each line `measure`
on stdin is answered with `{"rss_kib": .., "hwm_kib": .., "streams": ..}`; end of input stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
from collections.abc import AsyncIterator, Callable

from benchmarks import plan, proc, targets
from benchmarks.fleet import Fleet, Shape, profiles


@contextlib.asynccontextmanager
async def _ours(shape: Shape) -> AsyncIterator[tuple[int, Callable[[], int]]]:
    async with targets.serving(Fleet(shape).state()) as served:
        for profile in profiles():
            # Kept alive without streams, so that the baseline holds every snapshot.
            served.publisher.cache.watch(profile, lambda: None)
            served.publisher.cache.get(profile)
        yield served.port, lambda: len(served.ads.streams)


@contextlib.asynccontextmanager
async def _floor(shape: Shape) -> AsyncIterator[tuple[int, Callable[[], int]]]:
    async with targets.floor(plan.plan(0, shape)) as floor:
        yield floor.port, floor.connected


async def serve(target: str, shape: Shape) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    chosen = _ours if target == "ours" else _floor
    async with chosen(shape) as (port, streams):
        # As `xdsfleet serve` does once started.
        gc.collect()
        gc.freeze()
        print(json.dumps({"port": port}), flush=True)
        while await commands.readline():
            gc.collect()  # what is garbage is not what streams cost
            memory = proc.memory_kib()
            report = {"rss_kib": memory["VmRSS"], "hwm_kib": memory["VmHWM"], "streams": streams()}
            print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", choices=("ours", "floor"), required=True)
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--endpoints", type=int, required=True)
    args = parser.parse_args()
    from xdsfleet.telemetry import logs

    logs.configure(fmt="console", level="warning")
    asyncio.run(serve(args.target, Shape(args.members, args.services, args.endpoints)))


if __name__ == "__main__":
    main()
