"""The fan-out's streams are woken by the pacer's turns (pipeline/fanout.py, "Waking"): each turn
as many as it has room for, in the order they were queued, each once, nobody while a publish
runs, and a stream woken by a turn runs in it without waiting again. On a real loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools

from snapshots import snapshot

from xdsfleet.cache.cache import SnapshotCache, Wake
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.pipeline.fanout import GROWTH, WAKE_BATCH, FanOut
from xdsfleet.server.pacer import STEP, Pacer

SIDECAR = NodeProfile(role=Role.SIDECAR)
GATEWAY = NodeProfile(role=Role.GATEWAY, gateway="infra/edge")
ONE = snapshot({"a": ("10.0.0.1",)})
TWO = snapshot({"a": ("10.0.0.2",)})


def _queued(cache: SnapshotCache) -> list[Wake]:
    """The wakes the cache hands the fan-out, in its order (a profile's watchers are a set)."""
    queued: list[Wake] = []
    waker = cache.waker

    def queue(wakes: list[Wake]) -> None:
        queued.extend(wakes)
        waker(wakes)

    cache.waker = queue
    return queued


async def _until(done: object, limit: int = 100) -> int:
    """Loop iterations until `done()` (at most `limit`)."""
    for iteration in range(limit):
        if done():  # type: ignore[operator]
            return iteration
        await asyncio.sleep(0)
    raise AssertionError("not done")


async def test_streams_are_woken_a_turn_at_a_time_each_once_in_order() -> None:
    cache = SnapshotCache(lambda _: ONE)
    pacer = Pacer(0.02)
    FanOut(cache, list, pacer=pacer)
    queued = _queued(cache)
    woken: list[int] = []
    for index in range(250):
        cache.watch(SIDECAR, functools.partial(woken.append, index))

    cache.set(SIDECAR, TWO)
    assert woken == []  # the first turn wakes them, at the end of the next iteration
    counts: list[int] = []
    while len(woken) < 250 and len(counts) < 20:
        await asyncio.sleep(0)
        counts.append(len(woken))

    assert woken == [wake.args[0] for wake in queued]  # type: ignore[attr-defined]
    # A turn every other iteration; the first wakes one, each then at most GROWTH times the
    # last, and no more than the pacer's room (no step ran: its first estimate of a step's cost).
    room = int(0.02 / STEP)
    totals = sorted(set(counts))
    per_turn = [b - a for a, b in itertools.pairwise(totals)]
    assert per_turn[0] == WAKE_BATCH
    bounds = [min(room, GROWTH * last) for last in per_turn[:-1]]
    # As many as both bounds allow, fewer only once the queue ran out (the last turn).
    assert per_turn[1:-1] == bounds[:-1]
    assert per_turn[-1] <= bounds[-1]


async def test_while_held_nobody_is_woken_then_each_once_the_last_fan_outs_first() -> None:
    cache = SnapshotCache(lambda _: ONE)
    fanout = FanOut(cache, list, pacer=Pacer(0.0))  # room for one a turn
    woken: list[str] = []
    for name in ("s1", "s2", "s3", "s4", "g1", "g2"):
        cache.watch(GATEWAY if name[0] == "g" else SIDECAR, functools.partial(woken.append, name))
    cache.set(SIDECAR, TWO)  # a fan-out under way
    await _until(lambda: woken)
    first = list(woken)
    assert len(first) == 1

    with fanout.holding():  # a publish: the rest of that fan-out waits, and so do its own wakes
        cache.set(GATEWAY, TWO)
        cache.set(SIDECAR, ONE)
        for _ in range(10):
            await asyncio.sleep(0)
        assert woken == first
    await _until(lambda: len(woken) == len(first) + 6)
    for _ in range(10):
        await asyncio.sleep(0)

    after = woken[len(first) :]
    assert sorted(after) == ["g1", "g2", "s1", "s2", "s3", "s4"]  # each once
    # The last fan-out's streams not woken yet go first.
    assert set(after[:3]) == {"s1", "s2", "s3", "s4"} - set(first)


async def test_a_stream_woken_by_a_turn_runs_in_it_without_waiting() -> None:
    cache = SnapshotCache(lambda _: ONE)
    pacer = Pacer(10.0)  # room for all, whatever the machine's load
    FanOut(cache, list, pacer=pacer)
    queued = _queued(cache)
    ran: list[int] = []
    events: dict[Wake, int] = {}

    async def writer(index: int) -> None:
        wake = asyncio.Event()
        events[wake.set] = index
        cache.watch(SIDECAR, wake.set)
        await wake.wait()
        if pacer.full():  # what a stream's writer asks once woken (server/ads.py)
            await pacer.next_turn()
        ran.append(index)

    writers = [asyncio.create_task(writer(index)) for index in range(50)]
    await asyncio.sleep(0)  # all watching
    cache.set(SIDECAR, TWO)
    await asyncio.gather(*writers)

    assert ran == [events[wake] for wake in queued]
    assert pacer.deferred == 0


async def test_a_step_asking_before_the_fan_outs_first_turn_does_not_close_it_early() -> None:
    # A publish asks for a turn on a quiet loop; a step asking before that turn's timer ran
    # begins a turn of its own, whose close was still to run when the timer's turn woke the
    # streams, and closed that turn ahead of them: every one of them waited once more.
    cache = SnapshotCache(lambda _: ONE)
    pacer = Pacer(10.0)  # room for all, whatever the machine's load
    FanOut(cache, list, pacer=pacer)
    ran: list[str] = []

    async def step(name: str, wake: asyncio.Event | None = None) -> None:
        if wake is not None:
            cache.watch(SIDECAR, wake.set)
            await wake.wait()
        if pacer.full():  # what a reader or a woken writer asks (server/ads.py)
            await pacer.next_turn()
        ran.append(name)

    writers = [asyncio.create_task(step(f"w{i}", asyncio.Event())) for i in range(5)]
    await asyncio.sleep(0)  # all watching
    cache.set(SIDECAR, TWO)  # the pacer is quiet: the fan-out's turn is set for now
    stray = asyncio.create_task(step("stray"))  # asks in the next iteration, before that turn
    await asyncio.gather(*writers, stray)

    assert ran[0] == "stray"
    assert sorted(ran[1:]) == [f"w{i}" for i in range(5)]
    assert pacer.deferred == 0
