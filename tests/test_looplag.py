"""The loop-lag monitor sees a callback that holds the loop, and tells its own CPU apart."""

from __future__ import annotations

import asyncio
import time

from samples import sample

from xdsfleet.pipeline.looplag import LoopLag


async def test_a_callback_holding_the_loop_is_seen_as_lag() -> None:
    monitor = LoopLag(interval=0.01)
    before = sample("xdsfleet_event_loop_lag_seconds_count")
    sampling = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)  # a few samples of an idle loop
    held = time.thread_time() + 0.2
    while time.thread_time() < held:  # holds the loop: 0.2 s of this thread's CPU
        pass
    await asyncio.sleep(0.05)
    sampling.cancel()

    # The timer due during the hold ran at least 0.1 s late, and the thread was computing.
    assert monitor.largest >= 0.1
    assert monitor.largest_own >= 0.1
    assert sample("xdsfleet_event_loop_lag_seconds_count") > before


async def test_the_samples_over_each_limit_are_counted_and_the_largest_kept() -> None:
    monitor = LoopLag(interval=0.01)
    sampling = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    for hold in (0.03, 0.12):  # one hold over the first limit only, one over all of them
        until = time.thread_time() + hold
        while time.thread_time() < until:
            pass
        await asyncio.sleep(0.03)  # the late sample is taken, and a few on time
    sampling.cancel()

    assert monitor.samples >= 4
    assert monitor.over[0.02] >= 2
    assert monitor.over[0.1] >= 1  # more only if the machine did not schedule us
    assert monitor.over_own[0.1] == 1
    assert monitor.over[0.02] >= monitor.over[0.05] >= monitor.over[0.1]
    worst = monitor.worst
    assert worst[0].lag == monitor.largest
    assert [sample.lag for sample in worst] == sorted((s.lag for s in worst), reverse=True)
    monitor.reset()
    assert (monitor.samples, monitor.worst, monitor.over[0.02]) == (0, [], 0)
