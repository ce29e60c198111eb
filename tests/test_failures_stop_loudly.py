"""Failures stop loudly: a supervised task that dies stops the server with its traceback logged;
a publish that raises is logged, counted and retried while the last good snapshots serve; states
that arrive while the pipeline is being built are served, not dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from samples import sample
from states import AT_GATEWAY, EAST, WEST, fleet, running
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.model.fleet import FleetState
from xdsfleet.pipeline import chain
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.pipeline.publishing import RetryingPublish
from xdsfleet.pipeline.supervisor import Crashed, Supervisor
from xdsfleet.server.ads import AdsService


async def test_a_task_that_raises_stops_the_server_with_its_traceback() -> None:
    supervisor = Supervisor()

    async def broken() -> None:
        await asyncio.sleep(0)
        raise KeyError("gone")

    before = sample("xdsfleet_task_failures_total", task="broken")
    with capture_logs() as events:
        supervisor.start(broken(), name="broken")
        await asyncio.wait_for(supervisor.stop.wait(), 5)
    await supervisor.close()

    [failed] = [e for e in events if e["event"] == "task_failed"]
    assert failed["task"] == "broken"
    assert isinstance(failed["exc_info"], KeyError)
    assert sample("xdsfleet_task_failures_total", task="broken") == before + 1
    with pytest.raises(Crashed, match="broken"):
        supervisor.raise_if_failed()


async def test_a_task_that_returns_while_serving_is_a_failure_too() -> None:
    supervisor = Supervisor()

    async def quits() -> None:
        return None

    with capture_logs() as events:
        supervisor.start(quits(), name="quits")
        await asyncio.wait_for(supervisor.stop.wait(), 5)
    assert [e["task"] for e in events if e["event"] == "task_ended"] == ["quits"]
    with pytest.raises(Crashed):
        supervisor.raise_if_failed()


async def test_tasks_stopped_on_purpose_are_no_failure() -> None:
    supervisor = Supervisor()
    running_task = supervisor.start(asyncio.Event().wait(), name="forever")
    supervisor.stop.set()  # a signal
    await supervisor.close()
    assert running_task.cancelled()
    supervisor.raise_if_failed()  # nothing raised


async def test_a_failure_outside_tasks_stops_the_server() -> None:
    supervisor = Supervisor()
    with capture_logs() as events:
        supervisor.fail("kube-watch", RuntimeError("bug in a watch thread"))
    assert supervisor.stop.is_set()
    assert [e["task"] for e in events if e["event"] == "task_failed"] == ["kube-watch"]
    with pytest.raises(Crashed):
        supervisor.raise_if_failed()


async def test_a_failing_publish_is_logged_counted_and_retried_until_it_goes_through() -> None:
    state = fleet(running(EAST, "10.0.0.1"))
    published: list[FleetState] = []
    failures = iter([True, True])

    async def publish(state: FleetState) -> None:
        if next(failures, False):
            raise RuntimeError("translation bug")
        published.append(state)

    retrying = RetryingPublish(publish, newer=lambda: False, first_retry=0.01, max_retry=0.02)
    before = sample("xdsfleet_publish_failures_total")
    with capture_logs() as events:
        await asyncio.wait_for(retrying(state), 5)

    assert published == [state]
    assert sample("xdsfleet_publish_failures_total") == before + 2
    failed = [e for e in events if e["event"] == "publish_failed"]
    assert len(failed) == 2
    assert all(isinstance(e["exc_info"], RuntimeError) for e in failed)
    assert [e["event"] for e in events][-1] == "publish_recovered"
    assert not retrying.failing


async def test_a_failing_publish_gives_way_to_a_newer_state() -> None:
    waiting = [False]

    async def publish(_: FleetState) -> None:
        waiting[0] = True  # a newer state arrived meanwhile
        raise RuntimeError("translation bug")

    retrying = RetryingPublish(publish, newer=lambda: waiting[0], first_retry=5, max_retry=5)
    with capture_logs():
        await asyncio.wait_for(retrying(fleet(running(EAST, "10.0.0.1"))), 2)
    assert retrying.failing


def test_a_publish_that_raises_leaves_the_last_good_snapshot_and_recovers_in_full() -> None:
    good = fleet(running(EAST, "10.0.0.1"), running(WEST, "10.0.1.1"))
    publisher = Publisher(good)
    publisher.cache.watch(AT_GATEWAY, lambda: None)  # as a stream does
    served = publisher.cache.get(AT_GATEWAY)
    broken: Any = object()  # not a FleetState: translation raises half-way
    with pytest.raises(AttributeError):
        publisher.publish(broken)
    assert publisher.cache.get(AT_GATEWAY) is served

    after = fleet(running(EAST, "10.0.0.1"), running(WEST, "10.0.1.2"))
    publisher.publish(after)
    fresh = Publisher(after)
    assert publisher.cache.get(AT_GATEWAY).versions == fresh.cache.get(AT_GATEWAY).versions


async def test_a_state_that_arrives_while_the_chain_is_built_is_served() -> None:
    first = fleet(running(EAST, "10.0.0.1"))
    moved_on = fleet(running(EAST, "10.0.0.1"), running(WEST, "10.0.1.1"))
    built = chain.build(
        first, latest=lambda: moved_on, origins=dict, serving=lambda p: AdsService(p.cache)
    )
    try:
        await eventually(lambda: built.publisher.state is moved_on)
        assert built.debouncer.current is moved_on
    finally:
        await built.close()
