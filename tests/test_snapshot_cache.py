"""The snapshot cache counts the streams woken that have not taken their snapshot yet: what
publishes are paced by (pipeline/fanout.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from snapshots import snapshot

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.typeurls import ENDPOINT
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.pipeline.fanout import FanOut
from xdsfleet.server.protocol import TypeStatus

SIDECAR = NodeProfile(role=Role.SIDECAR)
GATEWAY = NodeProfile(role=Role.GATEWAY, gateway="infra/edge")
ONE = snapshot({"a": ("10.0.0.1",)})
TWO = snapshot({"a": ("10.0.0.2",)})


class Stream:
    def __init__(self, cache: SnapshotCache, profile: NodeProfile) -> None:
        self.woken = 0
        self.cancel = cache.watch(profile, self.wake)

    def wake(self) -> None:
        self.woken += 1


def test_a_set_owes_each_watcher_of_the_profile_one_take() -> None:
    cache = SnapshotCache(lambda _: ONE)
    first, second, other = Stream(cache, SIDECAR), Stream(cache, SIDECAR), Stream(cache, GATEWAY)

    cache.set(SIDECAR, TWO)
    assert (first.woken, second.woken, other.woken) == (1, 1, 0)
    assert cache.owed == 2
    assert cache.take(SIDECAR, first.wake).versions == TWO.versions
    assert cache.owed == 1
    second.cancel()  # a stream that goes owes nothing
    assert cache.owed == 0


def test_a_watcher_given_up_on_is_not_owed_until_it_takes_again() -> None:
    cache = SnapshotCache(lambda _: ONE)
    Stream(cache, SIDECAR)  # slow: never takes
    fast = Stream(cache, SIDECAR)
    cache.set(SIDECAR, TWO)
    cache.give_up()
    assert cache.owed == 0

    cache.set(SIDECAR, ONE)
    assert cache.owed == 0  # both still woken; both given up on
    cache.take(SIDECAR, fast.wake)
    cache.set(SIDECAR, TWO)
    assert cache.owed == 1  # the fast one again; the slow one never took


async def test_settling_waits_for_the_streams_to_take_and_gives_up_once_they_stop() -> None:
    cache = SnapshotCache(lambda _: ONE)
    stream = Stream(cache, SIDECAR)
    fanout = FanOut(cache, list, stall=30)  # no stream status: each poll finds all ACKed
    following = asyncio.create_task(fanout.run())
    cache.set(SIDECAR, TWO)
    settling = asyncio.create_task(fanout.settle(0.0))
    await asyncio.sleep(0.1)  # polls come and go: only the take ends the wait
    assert not settling.done()
    cache.take(SIDECAR, stream.wake)
    await asyncio.wait_for(settling, 5.0)

    fanout.stall = 0.2
    cache.set(SIDECAR, ONE)  # not taken: settling ends once nothing moved for the stall
    await asyncio.wait_for(fanout.settle(0.0), 5.0)
    assert cache.owed == 0
    following.cancel()


@dataclass
class FakeStream:
    """What FanOut reads of a stream: its profile, whether it is stuck, its per-type status."""

    profile: NodeProfile
    statuses: dict[str, TypeStatus]
    writing_since: float | None = None
    task: None = None

    @property
    def machine(self) -> FakeStream:
        return self

    def status(self) -> dict[str, TypeStatus]:
        return self.statuses


async def test_convergence_waits_for_the_acks_of_what_each_stream_was_sent() -> None:
    cache = SnapshotCache(lambda _: ONE)
    watcher = Stream(cache, SIDECAR)  # the two streams' watch: they take at once
    cache.set(SIDECAR, ONE)
    cache.take(SIDECAR, watcher.wake)
    new = TWO.versions[ENDPOINT]
    old = ONE.versions[ENDPOINT]
    sent = FakeStream(SIDECAR, {ENDPOINT: TypeStatus(sent_version=new, acked_version=old)})
    untouched = FakeStream(SIDECAR, {ENDPOINT: TypeStatus(sent_version=old, acked_version=old)})
    fanout = FanOut(cache, lambda: [sent, untouched], stall=30, poll=0.01)  # type: ignore[list-item]
    following = asyncio.create_task(fanout.run())
    await asyncio.wait_for(fanout.settle(0.0), 5.0)  # the first look: all held already
    cache.set(SIDECAR, TWO)
    cache.take(SIDECAR, watcher.wake)
    settling = asyncio.create_task(fanout.settle(0.0))
    await asyncio.sleep(0.1)  # polls come and go: one stream still owes its ACK
    assert not settling.done()

    sent.statuses[ENDPOINT].acked_version = new  # the untouched one was sent nothing: done
    await asyncio.wait_for(settling, 5.0)
    following.cancel()
