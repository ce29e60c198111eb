"""The loop-lag monitor sees a callback that holds the loop, and tells its probe of each sample."""

from __future__ import annotations

import asyncio
import time

from samples import sample

from xdsfleet.pipeline.looplag import LoopLag


async def test_a_callback_holding_the_loop_is_seen_as_lag() -> None:
    probed: list[tuple[float, float]] = []
    monitor = LoopLag(interval=0.01, probe=lambda due, ran: probed.append((due, ran)))
    before = sample("xdsfleet_event_loop_lag_seconds_count")
    sampling = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)  # a few samples of an idle loop
    held = time.thread_time() + 0.2
    while time.thread_time() < held:  # holds the loop: 0.2 s of this thread's CPU
        pass
    await asyncio.sleep(0.05)
    sampling.cancel()

    # The timer due during the hold ran at least 0.1 s late; the probe heard of every sample.
    assert monitor.largest >= 0.1
    assert sample("xdsfleet_event_loop_lag_seconds_count") > before
    assert len(probed) == monitor.samples
    assert max(ran - due for due, ran in probed) == monitor.largest
    assert [w.at for w in monitor.worst][:1] == [
        ran for due, ran in probed if ran - due == monitor.largest
    ]


def test_the_samples_over_each_limit_are_counted_and_the_largest_kept() -> None:
    # Counting, not timing: the timer's path is the test above; fixed samples here.
    monitor = LoopLag()
    for at, lag in enumerate((0.001, 0.03, 0.06, 0.12)):
        monitor._record(lag, float(at))

    assert monitor.samples == 4
    assert monitor.over == {0.02: 3, 0.05: 2, 0.1: 1}
    assert monitor.largest == 0.12
    assert [(sample.lag, sample.at) for sample in monitor.worst] == [
        (0.12, 3),
        (0.06, 2),
        (0.03, 1),
    ]
    monitor.reset()
    assert (monitor.samples, monitor.worst, monitor.over[0.02]) == (0, [], 0)
