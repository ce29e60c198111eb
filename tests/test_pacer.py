"""The pacer bounds the steps' work per loop turn, first in first out, on a real loop, so that a
timer due while steps run waits for at most one turn of them.

Steps are tasks that ask the pacer before their work and then "work" by moving a clock of the
test's own, so what a turn holds is exact whatever the machine's load. Each step, once it has
worked, sets a timer due at once: how much work ran between that and the timer's callback is
how long a timer falling due then would wait. Iterations are counted by wrapping the loop's
private `_run_once` (the test's look, not the pacer's: it never sees them).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from xdsfleet.server.pacer import LIGHT, Pacer

BUDGET = 0.010


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Run:
    """Steps on the running loop, and what happened to them."""

    budget: float = BUDGET
    clock: Clock = field(default_factory=Clock)
    # The loop thread's CPU, when not the clock: it moves by `cpu_share` of a step's cost (the
    # machine ran something else meanwhile). `reference`: the pacer's wall clock leaps ahead at
    # every read, so that every look at the budget reads the CPU (what the pacer must decide
    # the same as).
    cpu: Clock | None = None
    cpu_share: float = 1.0
    reference: bool = False
    pacer: Pacer = field(init=False)
    iteration: int = 0
    arrived: list[int] = field(default_factory=list)  # in the order they asked the pacer
    deferred: list[int] = field(default_factory=list)  # those it told to wait, in that order
    ran: list[tuple[int, int, float]] = field(default_factory=list)  # (step, iteration, cost)
    # Per timer set by a step: (steps run when it was set, steps run when its callback ran).
    timers: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        cpu = self.clock if self.cpu is None else self.cpu
        leaps = itertools.count(step=1e6)
        clock = (lambda: float(next(leaps))) if self.reference else self.clock
        self.pacer = Pacer(self.budget, clock=clock, cpu=cpu)
        loop = asyncio.get_running_loop()
        run_once = loop._run_once  # type: ignore[attr-defined]

        def counted() -> None:
            self.iteration += 1
            run_once()

        loop._run_once = counted  # type: ignore[attr-defined]

    async def step(self, name: int, cost: float, light: bool = False) -> None:
        self.arrived.append(name)
        if self.pacer.full(light):
            self.deferred.append(name)
            await self.pacer.next_turn()
        self.ran.append((name, self.iteration, cost))
        self.clock.now += cost
        if self.cpu is not None:
            self.cpu.now += cost * self.cpu_share
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time(), self._timer, len(self.ran))

    def _timer(self, set_at: int) -> None:
        self.timers.append((set_at, len(self.ran)))

    def longest_wait(self) -> float:
        """The most work that ran between a timer's setting and its callback."""
        return max(
            (sum(cost for _, _, cost in self.ran[set_at:fired]) for set_at, fired in self.timers),
            default=0.0,
        )

    def per_iteration(self) -> dict[int, list[float]]:
        costs: dict[int, list[float]] = defaultdict(list)
        for _, iteration, cost in self.ran:
            costs[iteration].append(cost)
        return costs

    def idle(self) -> bool:
        pacer = self.pacer
        return (
            not pacer._waiting and not pacer._again and pacer._mark is None and pacer._next is None
        )


async def _iterations(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_lone_step_runs_at_once_and_leaves_nothing_due() -> None:
    run = Run()
    for name in range(5):  # one at a time: the loop is idle between them
        await run.step(name, BUDGET * 2)  # even a step longer than the budget
        await _iterations(2)

    assert [name for name, _, _ in run.ran] == list(range(5))
    assert run.pacer.deferred == 0
    assert run.idle()


async def test_a_burst_is_spread_over_turns_of_the_budget_in_order() -> None:
    run = Run()
    steps = [asyncio.create_task(run.step(name, BUDGET / 10)) for name in range(100)]
    await asyncio.gather(*steps)
    await _iterations(2)

    # Those that waited were released as many a turn as its budget holds (what a step costs
    # is learnt from the first turn), in order.
    assert [name for name, _, _ in run.ran] == run.arrived == list(range(100))
    per_iteration = run.per_iteration()
    # 11 steps fit a turn (the eleventh starts at exactly the budget): 100 take 10 turns.
    assert all(len(costs) <= 11 for costs in per_iteration.values())
    assert len(per_iteration) <= 11
    assert run.idle()


async def test_a_timer_due_in_a_full_turn_runs_before_the_next_turn_releases_steps() -> None:
    run = Run()
    steps = [asyncio.create_task(run.step(name, BUDGET / 10)) for name in range(100)]
    await asyncio.gather(*steps)
    await _iterations(2)

    assert len(run.timers) == 100
    # A timer set by the first step of a turn waits for the rest of that turn (11 steps fit,
    # the eleventh starting at the budget), never for the steps the next turn released too.
    assert run.longest_wait() <= BUDGET + 1e-9
    # Each turn's steps ran in one iteration, and the next turn's two iterations later: the
    # iteration between (its timers) is where the timers due meanwhile ran.
    iterations = sorted(run.per_iteration())
    assert all(b - a >= 2 for a, b in itertools.pairwise(iterations))


async def test_steps_after_a_full_turn_wait_for_the_next_even_with_budget_left() -> None:
    before = REGISTRY.get_sample_value("xdsfleet_pacer_deferred_steps_total") or 0.0
    run = Run()
    first = [asyncio.create_task(run.step(name, BUDGET / 10)) for name in range(3)]
    await asyncio.sleep(0)  # the three ran (a turn began, with budget to spare)
    assert [name for name, _, _ in run.ran] == [0, 1, 2]
    # Steps asking in the next iteration's head wait: had they run there, a timer due during
    # the first three would wait for them and then for what the next turn releases.
    later = [asyncio.create_task(run.step(name, BUDGET / 10)) for name in range(3, 6)]
    await asyncio.gather(*first, *later)
    await _iterations(2)

    assert run.deferred == [3, 4, 5]
    assert [name for name, _, _ in run.ran] == list(range(6))
    assert run.idle()
    # An SRE sees them too.
    assert REGISTRY.get_sample_value("xdsfleet_pacer_deferred_steps_total") == before + 3


async def test_light_steps_after_a_full_turn_run_for_a_share_of_the_budget() -> None:
    run = Run()
    first = [asyncio.create_task(run.step(name, BUDGET / 10)) for name in range(11)]
    await asyncio.sleep(0)  # a full turn ran
    # ACKs gRPC made ready meanwhile: light ones run in the next iteration's head while it has
    # spent at most LIGHT of the budget since the turn closed; the others wait, and so does
    # any step not said to be light.
    light = [asyncio.create_task(run.step(name, BUDGET / 20, light=True)) for name in range(11, 21)]
    heavy = asyncio.create_task(run.step(21, BUDGET / 20))
    await asyncio.gather(*first, *light, heavy)
    await _iterations(2)

    full = run.ran[0][1]  # the full turn's iteration
    in_light = [name for name, iteration, _ in run.ran if iteration == full + 1]
    # In order, as many as LIGHT of the budget holds (the last may start at it exactly).
    assert in_light == list(range(11, 11 + len(in_light)))
    assert int(LIGHT * 20) <= len(in_light) <= int(LIGHT * 20) + 1
    assert 21 in run.deferred
    # A timer due during the full turn waited for its rest and the light steps, no more.
    assert run.longest_wait() <= BUDGET * (1 + LIGHT) + BUDGET / 20 + 1e-9
    assert sorted(name for name, _, _ in run.ran) == list(range(22))
    assert run.idle()


async def test_a_step_cancelled_while_it_waits_leaves_nothing_behind() -> None:
    run = Run()
    steps = [asyncio.create_task(run.step(name, BUDGET * 1.5)) for name in range(4)]
    await asyncio.sleep(0)  # all four asked; the first ran, the rest wait
    assert [name for name, _, _ in run.ran] == [0]
    steps[2].cancel()
    await asyncio.gather(*steps, return_exceptions=True)
    await _iterations(2)

    assert [name for name, _, _ in run.ran] == [0, 1, 3]
    assert steps[2].cancelled()
    assert run.idle()


async def test_a_step_cancelled_once_released_still_lets_the_others_run() -> None:
    run = Run()
    steps = [asyncio.create_task(run.step(name, BUDGET * 1.5)) for name in range(4)]
    await asyncio.sleep(0)  # the first ran
    for _ in range(3):  # until the next turn released the second (its estimate: one a turn)
        if len(run.pacer._waiting) == 2:
            break
        await asyncio.sleep(0)
    assert len(run.pacer._waiting) == 2
    assert [name for name, _, _ in run.ran] == [0]
    steps[1].cancel()
    await asyncio.gather(*steps, return_exceptions=True)
    await _iterations(2)

    assert [name for name, _, _ in run.ran] == [0, 2, 3]
    assert run.idle()


# A trifle, a few of a turn, half one, more than one (a member loss's write).
COSTS = [0.0, BUDGET / 50, BUDGET / 7, BUDGET / 2, BUDGET * 1.5]
# Light steps: an ACK read from its bytes.
LIGHT_COSTS = [0.0, BUDGET / 50]


# A round's arriving costs, light costs and fed costs, and the indexes of the steps cancelled.
Round = tuple[list[float], list[float], list[float], list[int]]


def _rounds(light_at_most: int) -> st.SearchStrategy[list[Round]]:
    """Rounds: in each loop iteration, new steps (their costs) arrive, light ones too (at most
    `light_at_most`), others are queued for the pacer's feed to wake (a fan-out's streams), and
    some earlier ones are cancelled (by index among those started so far)."""
    return st.lists(
        st.tuples(
            st.lists(st.sampled_from(COSTS), max_size=12),
            st.lists(st.sampled_from(LIGHT_COSTS), max_size=light_at_most),
            st.lists(st.sampled_from(COSTS), max_size=12),
            st.lists(st.integers(0, 200), max_size=3),
        ),
        min_size=1,
        max_size=12,
    )


ROUNDS = _rounds(12)


async def _drive(
    run: Run, rounds: list[Round]
) -> tuple[list[asyncio.Task[None]], int, int, deque[Callable[[], None]]]:
    """Steps arriving in rounds, one loop iteration each (ROUNDS), until all ran: the tasks, the
    iterations of the last arrival and of the last step, and the feed's queue."""
    queued: deque[Callable[[], None]] = deque()

    def feed(room: int) -> int:
        woken = min(room, len(queued))
        for _ in range(woken):
            queued.popleft()()
        return woken

    run.pacer.feed = feed

    async def fed(name: int, cost: float) -> None:
        woken = asyncio.Event()
        queued.append(woken.set)
        run.pacer.wanted()
        await woken.wait()
        await run.step(name, cost)

    tasks: list[asyncio.Task[None]] = []
    for costs, light_costs, fed_costs, cancels in rounds:
        for cost in costs:
            tasks.append(asyncio.create_task(run.step(len(tasks), cost)))
        for cost in light_costs:
            tasks.append(asyncio.create_task(run.step(len(tasks), cost, light=True)))
        for cost in fed_costs:
            tasks.append(asyncio.create_task(fed(len(tasks), cost)))
        for index in cancels:
            if index < len(tasks):
                tasks[index].cancel()
        await asyncio.sleep(0)
    last_arrival = run.iteration
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks, return_exceptions=True)
    done = run.iteration
    await _iterations(2)
    return tasks, last_arrival, done, queued


@settings(max_examples=150, deadline=None)
@given(rounds=ROUNDS)
# A fan-out asked for a turn, then steps began one in the next iteration: the turn it asked for
# began right behind theirs, and a timer waited for two (found by hypothesis, 1 run in 4).
@example(rounds=[([], [], [0.0], []), ([0.0, 0.015, 0.015], [], [], [])])
def test_any_arrivals_and_cancellations_keep_the_budget_the_order_and_nothing_behind(
    rounds: list[Round],
) -> None:
    async def scenario() -> Run:
        run = Run()
        tasks, last_arrival, done, queued = await _drive(run, rounds)

        ran = [name for name, _, _ in run.ran]
        # Every step not cancelled ran.
        assert set(ran) == {n for n, task in enumerate(tasks) if not task.cancelled()}
        # A turn's work: whatever ran in an iteration before its last step started within the
        # budget (a step over the budget runs alone), and light steps for a share more.
        for costs in run.per_iteration().values():
            assert sum(costs[:-1]) <= BUDGET * (1 + LIGHT) + 1e-9
        # A timer due while steps run waits for at most a turn of them: the rest of the turn
        # it fell due in (a step over the budget runs alone) and light steps for a share of
        # the budget, never the next turn's too.
        bound = BUDGET + max(COSTS) + BUDGET * LIGHT + max(LIGHT_COSTS)
        assert run.longest_wait() <= bound + 1e-9
        # Progress: at least a step every other iteration while some wait (a turn releases
        # when those it released last have run).
        assert done - last_arrival <= 2 * len(tasks) + 2
        assert run.idle()
        assert not queued
        return run

    asyncio.run(scenario())


@dataclass
class Counted(Clock):
    reads: int = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


# As ROUNDS, with light iterations that may outgrow their share (a fan-out's ACKs).
ACK_ROUNDS = _rounds(40)


@settings(max_examples=100, deadline=None)
@given(rounds=ACK_ROUNDS, share=st.sampled_from([0.0, 0.3, 0.9, 1.0]))
# A turn, then more light steps than its share holds.
@example(rounds=[([BUDGET / 2] * 3, [], [], []), ([], [BUDGET / 50] * 40, [], [])], share=0.9)
def test_the_cpu_read_only_when_the_wall_clock_says_the_budget_may_be_spent_decides_the_same(
    rounds: list[Round], share: float
) -> None:
    """The pacer reads the thread's CPU (a system call) only once the wall clock says a turn's
    budget, or a light iteration's share, may be spent, and not again in that turn or light
    iteration once it found it spent: the thread cannot have run longer than the wall clock
    moved, and neither share comes back until the next. So it decides exactly as a pacer that
    reads the CPU at every look, on a machine that runs the loop's thread all the time or a
    part of it (`share` of the wall time its steps take)."""

    async def scenario(reference: bool) -> tuple[list[tuple[int, int]], list[int], int]:
        run = Run(cpu=Counted(), cpu_share=share, reference=reference)
        first = run.iteration
        await _drive(run, rounds)
        assert isinstance(run.cpu, Counted)
        ran = [(name, iteration - first) for name, iteration, _ in run.ran]
        return ran, run.deferred, run.cpu.reads

    ran, deferred, reads = asyncio.run(scenario(reference=False))
    expected_ran, expected_deferred, reference_reads = asyncio.run(scenario(reference=True))
    assert ran == expected_ran
    assert deferred == expected_deferred
    assert reads <= reference_reads
