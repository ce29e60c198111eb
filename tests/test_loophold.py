"""The hold watch names the code holding the event loop, stays quiet while the loop is healthy,
and stops its thread with the lag monitor."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from samples import sample
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.pipeline.loophold import Hold, HoldWatch, _stack
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


def held_in(watch: HoldWatch, function: str) -> Hold:
    """The hold whose first look was in `function` (a loaded machine may add holds of its
    own: a process not run for 50 ms is one)."""
    return next(h for h in watch.holds if any(function in f for f in h.looks[0].stack))


async def test_a_callback_holding_the_loop_is_logged_with_its_stack() -> None:
    watch = HoldWatch(threshold=0.05, look_every=0.02, log_every=0.0)
    monitor = LoopLag(interval=0.01, watch=watch)
    before = sample("xdsfleet_event_loop_held_total")
    with capture_logs() as logs:
        sampling = asyncio.create_task(monitor.run(), name="loop-lag")
        await samples_taken(monitor, 3)
        asyncio.get_running_loop().call_soon(busy_for, 0.4)
        await samples_taken(monitor, 3)  # the one due during the hold, and after
        # The watch logs once it saw the hold end, from its own thread: wait for it.
        await eventually(
            lambda: any(any("busy_for" in f for f in h.looks[0].stack) for h in watch.holds)
        )
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)

    hold = held_in(watch, "busy_for")
    assert hold.seconds >= 0.3
    assert hold.cpu > 0.1  # the loop thread computed: held, not waiting for a core
    assert any("busy_for" in frame for frame in hold.looks[0].stack)
    assert hold.looks[0].stack[-1].startswith("tests/test_loophold.py:")  # innermost last
    assert hold.looks[0].task is None  # a plain callback, not a task
    assert len(hold.looks) > 1  # looked again while it lasted
    assert sample("xdsfleet_event_loop_held_total") >= before + 1
    [event] = [
        e
        for e in logs
        if e["event"] == "event_loop_held" and any("busy_for" in f for f in e["loop_stack"])
    ]
    assert event["log_level"] == "warning"
    assert event["held_seconds"] >= 0.3
    assert not watch_threads()


async def test_a_task_holding_the_loop_is_named() -> None:
    watch = HoldWatch(threshold=0.05, look_every=0.02, log_every=0.0)
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

    look = held_in(watch, "translate_everything").looks[0]
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
        assert list(watch.holds) == []
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
    assert watch.count >= 2  # and more if the machine did not run the process for 50 ms
    assert sample("xdsfleet_event_loop_held_total") >= before + 2
    monitor.reset()  # a benchmark's window starts: the watch forgets its holds too
    assert (watch.count, list(watch.holds)) == (0, [])


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


def test_a_hold_over_before_its_first_look_is_counted_unlogged() -> None:
    watch = HoldWatch(threshold=0.05)
    beat = (0.0, time.monotonic() - 0.1, 0.0)
    watch._beat = (time.monotonic(), time.monotonic() + 0.05, 0.0)  # the timer ran meanwhile
    assert watch._held(beat)
    assert (watch.count, list(watch.holds), watch._unlogged) == (1, [], 1)


def test_a_loop_found_waiting_for_events_held_nothing() -> None:
    """Its timer overdue while its thread waits in the selector: the process was not run (a
    stopped process, a paused VM), and no code of its held the loop."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="idle-loop")
    runner.start()
    try:
        assert runner.ident is not None
        ident = runner.ident

        def waiting_for_events() -> bool:
            stack = _stack(sys._current_frames().get(ident))
            return bool(stack) and stack[-1].startswith("selectors.py:")

        deadline = time.monotonic() + 10
        while not waiting_for_events():  # polled with a deadline: it is another thread's state
            assert time.monotonic() < deadline, "the loop never waited for events"
            time.sleep(0.001)
        watch = HoldWatch(threshold=0.05, look_every=0.01)
        watch._loop, watch._loop_thread = loop, ident
        beat = (0.0, time.monotonic() - 0.1, 0.0)  # overdue: the loop was not run
        watch._beat = beat
        ends = threading.Timer(0.05, lambda: setattr(watch, "_beat", (0.0, 0.0, 0.0)))
        ends.start()
        assert watch._held(beat)
        ends.join()
        assert (watch.count, list(watch.holds)) == (0, [])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
