"""A load generator at a fixed rate that records every request: when it started, how it ended
(status, or 0 when the connection failed or the client gave up), which member answered and how
long it took.

Open loop: a request starts every 1/rate seconds whether or not the earlier ones have finished,
as real clients do, so a stall shows as latency and failures instead of slowing the load down.
Each request has its own connection, so one stuck request never holds up another. Events (faults,
restores) run at given offsets while the load goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CLIENT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Sample:
    start: float  # seconds since the load began
    latency: float  # seconds
    status: int  # 0: no answer (refused, reset, or the client gave up)
    member: str  # "" when nobody answered

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # seconds since the load began
    label: str
    action: Callable[[], object]


@dataclass(frozen=True, slots=True)
class Mark:
    at: float  # when it actually ran, seconds since the load began
    label: str


@dataclass(frozen=True, slots=True)
class Target:
    port: int
    host: str
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    address: str = "127.0.0.1"


async def _one(target: Target, limit: float) -> tuple[int, str]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.address, target.port), limit
    )
    try:
        head = f"GET {target.path} HTTP/1.1\r\nhost: {target.host}\r\nconnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in target.headers)
        writer.write((head + "\r\n").encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), limit)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    _, _, body = rest.partition(b"\r\n\r\n")
    member = ""
    if status == 200:
        try:
            member = str(json.loads(body).get("member", ""))
        except ValueError:
            member = ""
    return status, member


async def _request(
    target: Target,
    began: float,
    samples: list[Sample],
    limit: float,
    on_sample: Callable[[Sample], None] | None,
) -> None:
    start = time.monotonic()
    try:
        status, member = await _one(target, limit)
    except (OSError, TimeoutError, ValueError):
        status, member = 0, ""
    sample = Sample(start - began, time.monotonic() - start, status, member)
    samples.append(sample)
    if on_sample is not None:
        on_sample(sample)


async def run_load(
    target: Target,
    *,
    rate: float,
    seconds: float,
    events: Sequence[Event] = (),
    give_up_after: float = CLIENT_TIMEOUT_S,
    on_sample: Callable[[Sample], None] | None = None,
) -> tuple[list[Sample], list[Mark]]:
    """`rate` requests a second for `seconds`, `events` run at their offsets; returns every
    request (by start time) and when each event ran."""
    samples: list[Sample] = []
    marks: list[Mark] = []
    pending = sorted(events, key=lambda e: e.at)
    tasks: list[asyncio.Future[object]] = []
    loop = asyncio.get_running_loop()
    began = time.monotonic()

    def fire(event: Event) -> None:
        # In a thread: restarting a member's backends takes a while, and the load goes on.
        # Marked when it starts and, as `LABEL:done`, when it has taken effect.
        marks.append(Mark(time.monotonic() - began, event.label))
        done = loop.run_in_executor(None, event.action)
        done.add_done_callback(
            lambda _: marks.append(Mark(time.monotonic() - began, f"{event.label}:done"))
        )
        tasks.append(done)

    for i in range(int(rate * seconds)):
        due = began + i / rate
        while pending and pending[0].at <= due - began:
            fire(pending.pop(0))
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        request = _request(target, began, samples, give_up_after, on_sample)
        tasks.append(asyncio.ensure_future(request))
    for event in pending:
        fire(event)
    await asyncio.gather(*tasks)
    return sorted(samples, key=lambda s: s.start), marks
