"""The write budget (server/budget.py): bytes under way across streams stay within it, writers
are served in the order they came, and nothing waits forever."""

from __future__ import annotations

import asyncio

from waiting import eventually

from xdsfleet.server.budget import WriteBudget


async def test_writers_within_the_budget_go_at_once() -> None:
    budget = WriteBudget(100)
    a = await budget.take(60)
    b = await budget.take(40)
    assert budget.in_flight == 100
    budget.give(a)
    budget.give(b)
    assert budget.in_flight == 0


async def test_past_the_budget_writers_wait_their_turn_in_order() -> None:
    budget = WriteBudget(100)
    first = await budget.take(80)
    order: list[str] = []

    async def write(name: str, size: int) -> None:
        share = await budget.take(size)
        order.append(name)
        budget.give(share)

    big = asyncio.create_task(write("big", 90))
    await eventually(lambda: budget.waiting == 1)
    small = asyncio.create_task(write("small", 10))  # would fit, but came later
    await eventually(lambda: budget.waiting == 2)
    assert order == []
    budget.give(first)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]
    assert budget.in_flight == 0


async def test_a_response_larger_than_the_budget_goes_alone() -> None:
    budget = WriteBudget(100)
    share = await budget.take(1_000)
    assert budget.in_flight == 1_000
    waiting = asyncio.create_task(budget.take(1))
    await eventually(lambda: budget.waiting == 1)
    budget.give(share)
    budget.give(await waiting)
    assert budget.in_flight == 0


async def test_a_write_that_stopped_moving_stops_counting() -> None:
    budget = WriteBudget(100, patience=0.05)
    await budget.take(100)  # never given back: a client that stopped reading
    share = await asyncio.wait_for(budget.take(50), timeout=5)
    assert budget.in_flight == 50
    budget.give(share)


async def test_a_writer_cancelled_while_waiting_leaves_no_trace() -> None:
    budget = WriteBudget(100)
    first = await budget.take(100)
    cancelled = asyncio.create_task(budget.take(50))
    await eventually(lambda: budget.waiting == 1)
    later = asyncio.create_task(budget.take(50))
    await eventually(lambda: budget.waiting == 2)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    budget.give(first)
    budget.give(await later)
    assert (budget.in_flight, budget.waiting) == (0, 0)
