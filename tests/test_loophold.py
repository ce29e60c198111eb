"""The hold watch names the code holding the event loop, stays quiet while the loop is healthy,
and stops its thread with the lag monitor."""

from __future__ import annotations

import asyncio
import threading
import time

from samples import sample
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.pipeline.loophold import HoldWatch, _stack
from xdsfleet.pipeline.looplag import LoopLag


def busy_for(seconds: float) -> None:
    """Hold the loop: `seconds` of this thread's CPU, in Python, no sleep."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def samples_taken(monitor: LoopLag, count: int) -> None:
    """Wait (with a deadline) until the monitor has taken `count` more samples."""
    target = monitor.samples + count
    await eventually(lambda: monitor.samples >= target)


def watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "loop-hold-watch"]


async def test_a_callback_holding_the_loop_is_logged_with_its_stack() -> None:
    watch = HoldWatch(threshold=0.05, look_every=0.02)
    monitor = LoopLag(interval=0.01, watch=watch)
    before = sample("xdsfleet_event_loop_held_total")
    with capture_logs() as logs:
        sampling = asyncio.create_task(monitor.run(), name="loop-lag")
        await samples_taken(monitor, 3)
        asyncio.get_running_loop().call_soon(busy_for, 0.4)
        await samples_taken(monitor, 3)  # the one due during the hold, and after
        # The watch logs once it saw the hold end, from its own thread: wait for it.
        await eventually(lambda: bool(watch.holds))
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)

    [hold] = watch.holds
    assert hold.seconds >= 0.3
    assert hold.cpu > 0.1  # the loop thread computed: held, not waiting for a core
    assert any("busy_for" in frame for frame in hold.looks[0].stack)
    assert hold.looks[0].stack[-1].startswith("tests/test_loophold.py:")  # innermost last
    assert hold.looks[0].task is None  # a plain callback, not a task
    assert len(hold.looks) > 1  # looked again while it lasted
    assert sample("xdsfleet_event_loop_held_total") == before + 1
    [event] = [e for e in logs if e["event"] == "event_loop_held"]
    assert event["log_level"] == "warning"
    assert event["held_seconds"] >= 0.3
    assert any("busy_for" in frame for frame in event["loop_stack"])
    assert not watch_threads()


async def test_a_task_holding_the_loop_is_named() -> None:
    watch = HoldWatch(threshold=0.05, look_every=0.02)
    monitor = LoopLag(interval=0.01, watch=watch)

    async def translate_everything() -> None:
        await asyncio.sleep(0)
        busy_for(0.3)

    sampling = asyncio.create_task(monitor.run())
    await samples_taken(monitor, 2)
    await asyncio.create_task(translate_everything(), name="publisher")
    await samples_taken(monitor, 2)
    await eventually(lambda: bool(watch.holds))
    sampling.cancel()
    await asyncio.gather(sampling, return_exceptions=True)

    look = watch.holds[0].looks[0]
    assert look.task == (
        "publisher test_a_task_holding_the_loop_is_named.<locals>.translate_everything"
    )
    assert any("translate_everything" in frame for frame in look.stack)


async def test_a_healthy_loop_reports_nothing_and_the_thread_stops() -> None:
    watch = HoldWatch(threshold=0.1)
    monitor = LoopLag(interval=0.01, watch=watch)
    before = sample("xdsfleet_event_loop_held_total")
    with capture_logs() as logs:
        sampling = asyncio.create_task(monitor.run())
        await samples_taken(monitor, 30)
        assert len(watch_threads()) == 1
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)

    assert not watch_threads()
    if monitor.largest < 0.1:  # a machine that stalled this process cannot fail the test
        assert watch.holds == []
        assert sample("xdsfleet_event_loop_held_total") == before
        assert [e for e in logs if e["event"] == "event_loop_held"] == []


async def test_holds_close_together_are_counted_but_logged_once() -> None:
    watch = HoldWatch(threshold=0.05, look_every=0.02, log_every=3600)
    monitor = LoopLag(interval=0.01, watch=watch)
    before = sample("xdsfleet_event_loop_held_total")
    sampling = asyncio.create_task(monitor.run())
    for _ in range(2):
        await samples_taken(monitor, 2)
        busy_for(0.3)
    await samples_taken(monitor, 2)
    await eventually(lambda: sample("xdsfleet_event_loop_held_total") >= before + 2)
    sampling.cancel()
    await asyncio.gather(sampling, return_exceptions=True)

    assert len(watch.holds) == 1
    assert watch.count == 2
    assert sample("xdsfleet_event_loop_held_total") == before + 2
    monitor.reset()  # a benchmark's window starts: the watch forgets its holds too
    assert (watch.count, watch.holds) == (0, [])


def test_a_deep_stack_keeps_its_outermost_and_innermost_frames() -> None:
    def deep(n: int) -> tuple[str, ...]:
        if n:
            return deep(n - 1)
        import sys

        return _stack(sys._getframe())

    stack = deep(40)
    assert len(stack) == 17  # 16 frames and the mark of those left out
    assert "..." in stack
    assert "deep" in stack[-1]
