"""The loop-lag monitor sees a callback that holds the loop, and tells its own CPU apart."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from xdsfleet.pipeline.looplag import LoopLag


def _observed() -> float:
    return REGISTRY.get_sample_value("xdsfleet_event_loop_lag_seconds_count") or 0.0


async def test_a_callback_holding_the_loop_is_seen_as_lag() -> None:
    monitor = LoopLag(interval=0.01)
    before = _observed()
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
    assert _observed() > before
