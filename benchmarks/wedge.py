"""`python -m benchmarks.wedge`: gRPC aio stops all I/O while the event loop runs long callbacks.

grpc.aio's completion-queue poller thread writes one byte to a socketpair per completion and the
loop reads one byte per wake-up (`PollerCompletionQueue._handle_events`), draining the whole
queue each time. When every loop iteration runs a long synchronous callback (a 300 ms publish,
say), completions outnumber iterations, unread bytes pile up until the socket buffer is full,
and the poller thread blocks in write(2): no completion reaches Python any more, so no write or
read of any stream finishes, until the loop idles again (grpc/grpc#40989 describes the same
blocked write at shutdown).

This shows it with one process, 100 streams each receiving a small message every 50 ms, and a
task that runs `--busy` seconds of pure-Python work per loop iteration. Messages per second drop
to zero within a couple of seconds, and come back at once when the busy task stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from xdsfleet.pipeline import grpcwake

SERVICE = "bench.Wedge"
METHOD = f"/{SERVICE}/Push"
INTERVAL = 0.05
MESSAGE = b"x" * 100


class Counts:
    def __init__(self) -> None:
        self.received = 0


async def _push(requests: AsyncIterator[Any], context: Any) -> None:
    """Write a message every INTERVAL until the client goes."""
    while True:
        await context.write(MESSAGE)
        await asyncio.sleep(INTERVAL)


async def _busy(seconds: float) -> None:
    """Synchronous work of `seconds` per loop iteration, as a long publish would be."""
    while True:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            pass
        await asyncio.sleep(0)


async def _receive(call: Any, counts: Counts) -> None:
    await call.write(b"start")
    while await call.read() is not grpc.aio.EOF:
        counts.received += 1


async def _rates(counts: Counts, seconds: int, label: str) -> None:
    for second in range(seconds):
        before = counts.received
        await asyncio.sleep(1)
        print(f"{label} {second + 1:2d} s: {counts.received - before:5d} messages/s", flush=True)


async def demonstrate(streams: int, busy: float, seconds: int, fixed: bool) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.stream_stream_rpc_method_handler(_push)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Push": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if fixed:
        print(f"poller reader wrapped: {grpcwake.install()}", flush=True)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    counts = Counts()
    readers = [
        asyncio.create_task(_receive(channel.stream_stream(METHOD)(), counts), name=f"reader-{i}")
        for i in range(streams)
    ]
    try:
        await _rates(counts, 2, "idle")
        work = asyncio.create_task(_busy(busy), name="busy")
        await _rates(counts, seconds, f"busy {busy * 1000:.0f} ms/iteration")
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        await _rates(counts, 2, "idle again")
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await channel.close()
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--busy", type=float, default=0.3, help="seconds of work per iteration")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument(
        "--fixed", action="store_true", help="with xdsfleet.pipeline.grpcwake installed"
    )
    args = parser.parse_args()
    asyncio.run(demonstrate(args.streams, args.busy, args.seconds, args.fixed))


if __name__ == "__main__":
    main()
