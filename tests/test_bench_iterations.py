"""The benchmarks' look at the loop: an iteration that computes for long is seen, in CPU, and a
late timer's wait is told apart into the loop thread's own CPU after the timer was due, time
queued for a core, time blocked (a sleep, the GIL) and other threads' CPU."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.iterations import _ITERATION, _RUN, KEEP_OVER, Attribution, Iterations, _Clocks
from xdsfleet.pipeline.looplag import LoopLag


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
    assert "select" not in vars(getattr(loop, "_selector"))  # noqa: B009


async def test_two_looks_on_one_loop_are_undone_the_last_first() -> None:
    loop = asyncio.get_running_loop()
    first, second = Iterations(), Iterations()
    undo_first = first.install(loop)
    undo_second = second.install(loop)
    for _ in range(3):  # an iteration is counted once the next one starts
        await asyncio.sleep(0)
    assert first.count >= 1
    assert second.count >= 1
    undo_second()
    undo_first()
    assert "_run_once" not in vars(loop)
    assert "select" not in vars(getattr(loop, "_selector"))  # noqa: B009


async def _one_sample(
    interval: float, held: Callable[[asyncio.AbstractEventLoop], None]
) -> tuple[Iterations, list[Attribution | None]]:
    """Sample the loop's lag every `interval` with the look installed; right after the first
    sample, `held` (a callable taking the loop) is scheduled; returns once the next sample ran.
    """
    loop = asyncio.get_running_loop()
    iterations = Iterations()
    undo = iterations.install(loop)
    found: list[Attribution | None] = []
    done = asyncio.Event()

    def probe(due: float, ran: float) -> None:
        found.append(iterations.sample(due, ran))
        if len(found) == 1:
            held(loop)
        elif len(found) == 2:
            done.set()

    monitor = LoopLag(interval=interval, probe=probe)
    sampling = asyncio.create_task(monitor.run())
    try:
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        sampling.cancel()
        undo()
    return iterations, found


async def test_own_cpu_is_what_the_loop_thread_computed_after_the_timer_was_due() -> None:
    # Right after a timer is set (due in 1 s): an iteration computing 0.03 s, then one
    # sleeping 1.1 s (the timer falls due in it whenever the computing ends before it is due:
    # at load 9 here, 0.03 s of CPU once took 0.4 s of wall time, and a timer due in 0.3 s fell
    # due while it computed), then one computing 0.06 s before the timer runs. Its lag is
    # ~0.16 s or more, of which 0.06 s of the loop thread's CPU: not the 0.09 s it computed
    # since the timer was set, nor the sleep.
    def held(loop: asyncio.AbstractEventLoop) -> None:
        def sleep() -> None:
            time.sleep(1.1)
            loop.call_soon(_hold, 0.06)

        def compute() -> None:
            _hold(0.03)
            loop.call_soon(sleep)

        loop.call_soon(compute)

    iterations, found = await _one_sample(1.0, held)
    sample = found[1]
    assert sample is not None
    assert 0.06 <= sample.own < 0.075
    low, high = sample.own_bounds
    assert low <= sample.own <= high
    assert sample.lag >= 0.1
    # The rest of the sleep, unless the machine kept the thread from a core as long.
    assert sample.blocked + sample.queued >= 0.09
    # The sleeping iteration's rest, then the computing one.
    assert len(sample.iterations) == 2
    assert sample.iterations[-1] >= 0.06
    assert iterations.largest_own == sample.own
    # Kept: the samples lagging over KEEP_OVER (the first too, if a loaded machine held it).
    assert iterations.kept == [s for s in found if s is not None and s.lag > KEEP_OVER]
    assert iterations.samples == 2
    # What came before the last sample's due time is let go of (but the point before it).
    assert len(iterations._points) <= 10


async def test_waiting_for_the_gil_held_by_another_thread_is_blocked_not_own() -> None:
    # While the loop's callback computes 0.1 s, another thread computes in Python too: the loop
    # thread waits for the GIL about half the time, and that thread's CPU is the others'.
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    def held(loop: asyncio.AbstractEventLoop) -> None:
        def compute() -> None:
            other = threading.Thread(target=spin)
            other.start()
            try:
                _hold(0.1)
            finally:
                stop.set()
                other.join()

        loop.call_soon(compute)

    _, found = await _one_sample(0.05, held)
    sample = found[1]
    assert sample is not None
    assert sample.own >= 0.05
    assert sample.blocked >= 0.02
    assert sample.others >= 0.02


def _point(
    wall: float, kind: int, cpu: float, process: float, queued: float
) -> tuple[float, int, float, float, bytes]:
    return (wall, kind, cpu, process, f"0 {round(queued * 1e9)} 1\n".encode())


def test_the_clocks_at_the_due_time_are_interpolated_within_the_stretch_it_fell_in() -> None:
    iterations = Iterations()
    iterations._points.extend(
        [
            # An iteration starts: 1 ms of work, a select, woken at 10 ms, queued 2 ms.
            _point(0.000, _ITERATION, 1.000, 2.000, 0.000),
            _point(0.012, _RUN, 1.001, 2.004, 0.002),
            # Its callbacks: 30 ms of CPU over 40 ms, 8 ms of it queued; another thread 10 ms.
            _point(0.052, _ITERATION, 1.031, 2.044, 0.010),
        ]
    )
    now = _Clocks(wall=0.080, cpu=1.051, process=2.064, queued=0.010)

    # Due halfway through the callbacks: half of their CPU, run delay and process CPU before.
    inside = iterations.attribute(0.032, 0.080, now)
    assert inside is not None
    assert inside.lag == pytest.approx(0.048)
    assert inside.own == pytest.approx(0.051 - 0.016)
    assert inside.own_bounds == pytest.approx((0.020, 0.050))
    assert inside.queued == pytest.approx(0.004)
    assert inside.blocked == pytest.approx(0.048 - 0.035 - 0.004)
    assert inside.others == pytest.approx(0.064 - 0.024 - 0.035)
    assert inside.iterations == pytest.approx((0.015, 0.020))

    # Due during the select: its work was before, its wait for a core after.
    selecting = iterations.attribute(0.010, 0.080, now)
    assert selecting is not None
    assert selecting.own == pytest.approx(0.050)
    assert selecting.queued == pytest.approx(0.010)

    # Older than every point kept: nothing to say.
    assert iterations.attribute(-0.001, 0.080, now) is None


# A stretch between two points: its wall time, the shares of it the loop thread computed and
# was queued for a core (together at most all of it), and the other threads' CPU in it.
_stretch = st.tuples(st.floats(1e-6, 0.05), st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.1))


@given(st.lists(_stretch, min_size=1, max_size=12), st.floats(0, 1))
def test_an_attribution_adds_up_wherever_the_due_time_falls(
    stretches: list[tuple[float, float, float, float]], where: float
) -> None:
    # Iterations' stretches (a select's, then its callbacks', and so on), a point at the start
    # of each, the sample's clocks at the end of the last; the timer due anywhere in them.
    iterations = Iterations()
    wall = cpu = process = queued = 0.0
    for i, (span, computing, waiting, others) in enumerate(stretches):
        iterations._points.append(
            _point(wall, _ITERATION if i % 2 == 0 else _RUN, cpu, process, queued)
        )
        computed = span * computing
        wall += span
        cpu += computed
        queued += (span - computed) * waiting
        process += computed + others
    # Schedstat counts whole nanoseconds: the run delay at the end is read the same way.
    now = _Clocks(wall, cpu, process, round(queued * 1e9) / 1e9)

    found = iterations.attribute(wall * where, wall, now)

    assert found is not None
    low, high = found.own_bounds
    assert -1e-9 <= low <= found.own + 1e-9 <= high + 2e-9
    assert sum(found.iterations) == pytest.approx(found.own, abs=1e-9)
    assert found.queued >= 0
    assert found.others >= 0
    # Computing and queued never take more than the wait's wall time; blocked is the rest.
    assert found.own + found.queued <= found.lag + 2e-9
    assert found.own + found.queued + found.blocked == pytest.approx(found.lag, abs=2e-9)
