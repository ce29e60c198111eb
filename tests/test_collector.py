"""The collector run on our terms (pipeline/collector.py): no automatic full pass while it runs,
freezing at quiet moments, and no leak: a cycle that dies frozen is collected by the full pass
once it is due."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from xdsfleet.pipeline.collector import MIDDLE, NEVER, Collector


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    """Two objects referring to each other, alive until the caller drops the reference the
    returned weakref does not hold: here, at once (only the cycle keeps them)."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collector() -> Iterator[Collector]:
    made = Collector(warmup=0.0)  # served from the start (the warm-up has its own test)
    try:
        yield made
    finally:
        made.stop()
        gc.unfreeze()


def test_full_and_middle_passes_are_off_while_it_runs_and_back_after(
    collector: Collector,
) -> None:
    before = gc.get_threshold()
    collector.start()
    assert gc.get_threshold() == (before[0], NEVER, NEVER)
    assert gc.get_freeze_count() > 0  # what start-up built is out of every pass
    collector.stop()
    assert gc.get_threshold() == before


def test_a_cycle_that_dies_frozen_waits_for_the_full_pass_and_no_longer(
    collector: Collector,
) -> None:
    collector.start()
    collector.growth = 1e9  # the heap never grows enough: quiet moments only freeze
    gc.disable()  # not even a young pass between the cycle's making and the freeze
    try:
        gone = _cycle()
        collector.quiet()  # frozen while it is garbage already, as a generation-2 cycle is
    finally:
        gc.enable()
    gc.collect(1)
    assert gone() is not None  # out of the passes: this is what the full pass is for
    passes = collector.full_passes

    collector.growth, collector.interval = 0.0, 0.0  # the full pass is due at the next moment
    _grow = [object() for _ in range(10_000)]  # the heap grew
    collector.quiet()
    assert collector.full_passes == passes + 1
    assert gone() is None
    del _grow


def test_middle_passes_come_back_when_no_quiet_moment_comes_and_go_at_the_next(
    collector: Collector,
) -> None:
    young = gc.get_threshold()[0]
    collector.start()
    collector.growth = 1e9  # quiet moments only freeze
    gc.collect(0)
    assert gc.get_threshold() == (young, NEVER, NEVER)  # a quiet moment was just now (start)

    collector.idle = 0.0  # none since for longer than that
    gc.collect(0)
    assert gc.get_threshold() == (young, MIDDLE, NEVER)

    collector.idle = 3600.0
    collector.quiet()
    assert gc.get_threshold() == (young, NEVER, NEVER)


def test_a_fan_out_walks_what_it_makes_only_past_a_bound_and_its_quiet_moment_freezes_it(
    collector: Collector,
) -> None:
    young = gc.get_threshold()[0]
    passes: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    collector.start()
    collector.growth = 1e9  # quiet moments only freeze
    collector.busy_young = 5_000
    collector.idle = 0.0  # no quiet moment for long: the fan-out's is the one coming
    gc.collect(0)
    gc.callbacks.append(counted)
    try:
        with collector.busy():
            assert gc.get_threshold() == (5_000, NEVER, NEVER)
            made: list[list[int]] = [[] for _ in range(3_000)]  # 4 passes at CPython's
            assert passes == []
            made += [[] for _ in range(3_000)]  # past the bound: walked
            assert passes == [0]
            assert gc.get_threshold() == (5_000, NEVER, NEVER)  # still the fan-out's
            frozen = gc.get_freeze_count()
            made += [[] for _ in range(3_000)]
            collector.quiet()
            assert gc.get_freeze_count() >= frozen + 3_000  # frozen, not walked
        assert gc.get_threshold() == (young, NEVER, NEVER)
        made += [[] for _ in range(1_000)]
        assert passes == [0, 0]  # CPython's threshold again
    finally:
        gc.callbacks.remove(counted)
    del made


async def test_a_fan_out_cancelled_gives_the_young_threshold_back(collector: Collector) -> None:
    young = gc.get_threshold()[0]
    collector.start()
    entered = asyncio.Event()

    async def fan_out() -> None:
        with collector.busy():
            entered.set()
            await asyncio.Event().wait()

    running = asyncio.create_task(fan_out())
    await entered.wait()
    assert gc.get_threshold()[0] == collector.busy_young
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert gc.get_threshold() == (young, NEVER, NEVER)


def test_the_full_pass_waits_for_its_interval(collector: Collector) -> None:
    collector.start()
    collector.growth, collector.interval = 0.0, 3600.0
    passes = collector.full_passes
    _grow = [object() for _ in range(10_000)]
    collector.quiet()
    assert collector.full_passes == passes  # grown, but the last full pass was just now
    del _grow


def test_quiet_moments_and_fan_outs_change_nothing_while_the_collector_is_not_ours() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    with Collector().busy():
        assert gc.get_threshold() == before
    Collector().quiet()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_run_gives_the_collector_back_when_cancelled() -> None:
    before = gc.get_threshold()
    collector = Collector()
    running = asyncio.create_task(collector.run())
    try:
        await asyncio.sleep(0)
        assert gc.get_threshold()[2] == NEVER
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        gc.unfreeze()
    assert gc.get_threshold() == before


def test_passes_are_timed(collector: Collector) -> None:
    collector.start()
    gc.collect(0)
    assert collector.largest["0"] >= 0.0
    collector.full()
    assert collector.largest["2"] > 0.0


def test_the_start_freezes_and_walks_nothing(collector: Collector) -> None:
    # A full pass at the start walked the fleet (0.5-1 s at E = 100,000) as clients reconnect.
    built = _Node()  # what start-up built
    collector.start()
    assert collector.full_passes == 0
    assert "2" not in collector.largest
    assert all(o is not built for o in gc.get_objects())  # frozen: out of every pass


def test_the_heap_grows_from_the_served_one_not_the_one_at_start_up(collector: Collector) -> None:
    # Issue 10: the baseline taken at start-up, before any client connected, made a full pass
    # (0.3-0.9 s at E = 100,000) come about five minutes after every start.
    collector.warmup, collector.growth, collector.interval = 3600.0, 0.05, 0.0
    collector.start()
    passes = collector.full_passes
    clients = [object() for _ in range(sys.getallocatedblocks() // 5)]  # the streams connect
    collector.quiet()
    assert collector.full_passes == passes  # grown a fifth, while the clients arrive

    collector.warmup = 0.0  # served
    collector.quiet()
    assert collector.full_passes == passes  # no growth since: no full pass
    more = [object() for _ in range(sys.getallocatedblocks() // 10)]
    collector.quiet()
    assert collector.full_passes == passes + 1  # grown by a tenth over the served heap
    del clients, more
