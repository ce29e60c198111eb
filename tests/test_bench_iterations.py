"""The benchmarks' look at the loop's iterations sees one that computes for long, in CPU."""

from __future__ import annotations

import asyncio
import time

from benchmarks.iterations import Iterations


def _hold(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def test_a_long_iteration_is_seen_and_the_loop_is_given_back() -> None:
    loop = asyncio.get_running_loop()
    iterations = Iterations()
    undo = iterations.install(loop)
    try:
        await asyncio.sleep(0)
        loop.call_soon(_hold, 0.06)
        await asyncio.sleep(0.01)
    finally:
        undo()
    assert iterations.largest >= 0.06
    assert iterations.over[0.05] == 1
    assert iterations.count >= 2
    assert "_run_once" not in vars(loop)


async def test_two_looks_on_one_loop_are_undone_the_last_first() -> None:
    loop = asyncio.get_running_loop()
    first, second = Iterations(), Iterations()
    undo_first = first.install(loop)
    undo_second = second.install(loop)
    for _ in range(3):  # an iteration is counted once it is over
        await asyncio.sleep(0)
    assert first.count >= 1
    assert second.count >= 1
    undo_second()
    undo_first()
    assert "_run_once" not in vars(loop)
