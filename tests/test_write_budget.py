"""The write budget (server/budget.py): bytes under way across streams stay within it, writers
are served in the order they came, and nothing waits forever."""

from __future__ import annotations

import asyncio

from samples import sample
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


async def test_writers_stalled_ahead_hold_up_a_reader_for_one_patience_at_most() -> None:
    # Rule 23: a slow client slows only itself. Clients that never read, opening streams faster
    # than their writes are written off (10 a second with 4.5 MB first responses was enough),
    # queued ahead of a reading client one `patience` each: its push waited ever longer.
    budget = WriteBudget(100, patience=0.05)
    passes = 0
    write_off = budget._write_off

    def counted(loop: asyncio.AbstractEventLoop) -> None:
        nonlocal passes
        passes += 1
        write_off(loop)

    budget._write_off = counted  # type: ignore[method-assign]
    never = asyncio.Event()

    async def stalled() -> None:
        await budget.take(100)  # never given back: a client that never reads
        await never.wait()

    await budget.take(100)
    ahead = [asyncio.create_task(stalled()) for _ in range(20)]
    await eventually(lambda: budget.waiting == 20)
    share = await asyncio.wait_for(budget.take(10), timeout=30)
    # One pass writes off what stalled and lets go every writer that waited a whole patience
    # (a pass comes every half patience): not one pass per stalled writer ahead.
    assert passes <= 4
    budget.give(share)
    for task in ahead:
        task.cancel()
    await asyncio.gather(*ahead, return_exceptions=True)


def test_the_budget_is_visible_in_the_metrics() -> None:
    from xdsfleet.cache.cache import SnapshotCache
    from xdsfleet.server.ads import AdsService

    async def main() -> None:
        service = AdsService(SnapshotCache(lambda profile: None), budget=WriteBudget(10))
        share = await service.budget.take(7)  # a write under way
        waiter = asyncio.create_task(service.budget.take(7))
        await eventually(lambda: service.budget.waiting == 1)
        assert sample("xdsfleet_write_budget_bytes") == 7
        assert sample("xdsfleet_write_budget_waiting") == 1
        service.budget.give(share)
        service.budget.give(await waiter)
        assert sample("xdsfleet_write_budget_bytes") == 0

    asyncio.run(main())


async def test_writers_that_waited_long_go_a_quarter_of_the_budget_per_loop_iteration() -> None:
    # Issue 10: a member loss's fan-out queues hundreds of 4.5 MB writers; let go at once after
    # a patience, each joining its response as it resumed, they held the loop 0.6-0.8 s.
    budget = WriteBudget(100, patience=0.05)
    first = await budget.take(100)  # a write that never ends
    waiting = [asyncio.create_task(budget.take(30)) for _ in range(12)]
    await eventually(lambda: budget.waiting == 12, timeout=10)
    let_go = []
    deadline = asyncio.get_running_loop().time() + 10
    while budget.waiting and asyncio.get_running_loop().time() < deadline:
        left = budget.waiting
        await asyncio.sleep(0)  # one loop iteration: what it let go
        let_go.append(left - budget.waiting)
    assert budget.waiting == 0
    # Per iteration: what fits the budget once the stuck write stops counting (3 of 30) and a
    # quarter of it (one of 30) past a patience; never all twelve.
    assert max(let_go) <= 4
    for task in waiting:
        budget.give(await task)
    budget.give(first)
