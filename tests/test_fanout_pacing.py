"""Pacing by fan-out (pipeline/fanout.py), over any interleaving of publishes, wakes, takes,
writes, ACKs and streams that get stuck, on a clock of the test's own:

(a) a stream that is not stuck is never more than two generations behind when a publish goes
    (one, when the publish before was not a member loss);
(b) stuck streams never delay a publish past the bound, nor by more than one stall per stage
    (taking, ACKing) once the others are done;
(c) a member loss is never held by pacing: it goes while the last fan-out is still waited for
    (the Debouncer cancels the settling; tests/test_debounce.py checks that side), and the
    publish after it waits for its fan-out.

The premise for (a) is what "not stuck" means: while such a stream has something to do, the
fan-out moves (some stream not stuck takes the snapshot it was owed or ACKs the newest
generation) at least every half stall, its writes end within half a stall, and the fan-out is
done within half the bound. The streams may do anything else in any
order: take late, write long, ACK after other publishes.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from snapshots import snapshot

from xdsfleet.cache.cache import SnapshotCache, Wake
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import ENDPOINT
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.pipeline.fanout import BOUND, STALL, FanOut, Pace
from xdsfleet.server.protocol import TypeStatus

SIDECAR = NodeProfile(role=Role.SIDECAR)
STREAMS = 5
TICK = STALL / 2


@functools.cache
def generation(g: int) -> Snapshot:
    return snapshot({"a": (f"10.0.{g // 200}.{g % 200 + 1}",)})


def version(g: int) -> str:
    return generation(g).versions[ENDPOINT]


@dataclass
class Stream:
    """What FanOut reads of a stream (profile, writing_since, machine.status()), and what the
    test knows of it: the generations sent and ACKed, and whether it is stuck and how."""

    index: int
    profile: NodeProfile = SIDECAR
    writing_since: float | None = None
    task: Any = None  # set to a finished task: the stream is gone
    stuck: str | None = None  # "writing": blocked in a write for good; "silent": never ACKs
    woken: bool = False
    sent: int = 0
    acked: int = 0
    statuses: dict[str, TypeStatus] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.statuses[ENDPOINT] = TypeStatus(sent_version=version(0), acked_version=version(0))

    @property
    def machine(self) -> Stream:
        return self

    def status(self) -> dict[str, TypeStatus]:
        return self.statuses

    def wake(self) -> None:
        self.woken = True

    def send(self, g: int, now: float) -> None:
        self.sent = g
        self.statuses[ENDPOINT].sent_version = version(g)
        self.writing_since = now


class Pacing(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.cache = SnapshotCache(lambda _: generation(0))
        self.streams = [Stream(i) for i in range(STREAMS)]
        for s in self.streams:
            self.cache.watch(SIDECAR, s.wake)
        self.cache.get(SIDECAR)
        self.fanout = FanOut(self.cache, lambda: self.streams)  # type: ignore[arg-type,return-value]
        self.queue: list[Wake] = []
        # The server's waking, done by `wake` below; in the streams' order, as a set's order
        # of bound methods changes from run to run (hypothesis replays runs).
        self.cache.waker = lambda wakes: self.queue.extend(
            sorted(wakes, key=lambda w: w.__self__.index)  # type: ignore[attr-defined]
        )
        self.latest = 0
        self.loss_last = False  # the last publish was a member loss
        self.began = 0.0
        self.moved = 0.0  # the last time the fan-out moved by a stream not stuck
        self.settling = False
        self.fanout.begin(0.0, 0.0)
        self.settling = self.fanout.look(self.now)
        assert not self.settling

    # What the streams not stuck owe: the premise (module docstring) is about them.
    def _healthy_busy(self) -> bool:
        return any(
            s.stuck is None and (s.woken or s.acked < self.latest or s.writing_since is not None)
            for s in self.streams
        ) or any(not self.streams[i].stuck for i in self._queued())

    def _queued(self) -> list[int]:
        return [s.index for s in self.streams for w in self.queue if w == s.wake]

    def _publish(self, *, loss: bool) -> None:
        nxt = self.latest + 1
        for s in self.streams:
            if s.stuck is None:
                lag = nxt - s.acked
                # (a): one behind after a paced publish; two when the publish before was a loss
                # or this one is (it does not wait for the fan-out of the last).
                assert lag <= (2 if loss or self.loss_last else 1), (s, nxt)
        self.latest = nxt
        assert self.cache.set(SIDECAR, generation(nxt))
        self.began = self.moved = self.now
        self.fanout.begin(self.now, self.now)
        self.settling = self.fanout.look(self.now)
        self.loss_last = loss

    @precondition(lambda self: not self.settling)
    @rule()
    def publish(self) -> None:
        self._publish(loss=False)

    # (c): a member loss goes whatever the pacing says; one per fan-out (two losses within one
    # fan-out skip the first for streams not reached yet: lag 1 + losses, by design).
    @precondition(lambda self: not self.loss_last)
    @rule()
    def lose_a_member(self) -> None:
        self._publish(loss=True)

    @precondition(lambda self: bool(self.queue))
    @rule(count=st.integers(1, STREAMS))
    def wake(self, count: int) -> None:
        for wake in self.queue[:count]:
            wake()
        del self.queue[:count]

    @rule(i=st.integers(0, STREAMS - 1))
    def take(self, i: int) -> None:
        s = self.streams[i]
        if not s.woken or s.stuck == "writing":
            return  # blocked in a write: it never gets to take
        s.woken = False
        owed = self.cache.owed
        taken = self.cache.take(SIDECAR, s.wake)
        g = next(g for g in range(self.latest + 1) if version(g) == taken.versions[ENDPOINT])
        if s.stuck is None and self.cache.owed < owed:
            self.moved = self.now
        # Rule 26: nothing more while a response is unanswered; the ACK sends the latest.
        if s.sent == s.acked and g != s.sent and s.writing_since is None:
            s.send(g, self.now)

    @rule(i=st.integers(0, STREAMS - 1))
    def written(self, i: int) -> None:
        s = self.streams[i]
        if s.stuck != "writing":
            s.writing_since = None

    @rule(i=st.integers(0, STREAMS - 1))
    def ack(self, i: int) -> None:
        s = self.streams[i]
        if s.stuck is not None or s.writing_since is not None or s.acked == s.sent:
            return
        s.acked = s.sent
        s.statuses[ENDPOINT].acked_version = version(s.sent)
        if s.acked == self.latest:
            self.moved = self.now
        elif not s.woken:
            s.send(self.latest, self.now)  # what came while it was unanswered

    @precondition(lambda self: sum(s.stuck is not None for s in self.streams) < STREAMS - 1)
    @rule(i=st.integers(0, STREAMS - 1), how=st.sampled_from(["writing", "silent"]))
    def get_stuck(self, i: int, how: str) -> None:
        s = self.streams[i]
        if s.stuck is not None:
            return
        s.stuck = how
        if how == "writing" and s.writing_since is None:
            s.writing_since = self.now

    @precondition(lambda self: self.settling)
    @rule(dt=st.floats(0.01, TICK))
    def tick(self, dt: float) -> None:
        if self._healthy_busy():
            # The premise of (a): the streams not stuck keep the fan-out moving, and their
            # writes end within half a stall.
            then = self.now + dt
            if then > self.moved + TICK or then > self.began + BOUND / 2:
                return
            if any(
                s.stuck is None and then > (s.writing_since or then) + TICK for s in self.streams
            ):
                return
        else:
            self.moved = min(self.moved, self.now)
        self.now += dt
        self.settling = self.fanout.look(self.now)

    @precondition(lambda self: self.settling and not self._healthy_busy())
    @rule()
    def only_stuck_ones_left(self) -> None:
        # (b): the streams not stuck are done; the stuck ones hold the publish one stall per
        # stage (owed, then ACKs), plus the looks' spacing, at most.
        done = max(self.moved, self.began) + 2 * (STALL + TICK)
        while self.settling:
            assert self.now < min(done, self.began + BOUND)
            self.now += TICK
            self.settling = self.fanout.look(self.now)

    @invariant()
    def bounded(self) -> None:
        if not self.settling:
            return
        # (b): whatever the stuck streams do, the publish may go by the bound; and once the
        # others are done, by one stall per stage (owed, then ACKs) plus the looks' spacing.
        assert self.now < self.began + BOUND
        if not self._healthy_busy():
            assert self.now < max(self.moved, self.began) + 2 * (STALL + TICK)


Pacing.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestPacing = Pacing.TestCase


def test_a_pace_waits_while_what_is_left_falls_and_never_past_the_bound() -> None:
    pace = Pace(0.0, stall=1.0, bound=5.0)
    assert pace.look(0.9, (3, 0))
    assert pace.look(1.5, (2, 0))  # moved at 1.5: another second
    assert not pace.look(2.5, (2, 0))  # no stream took for a second: only slow ones left
    assert Pace(0.0, stall=1.0, bound=5.0).look(0.5, (0, 9))
    moving = Pace(0.0, stall=1.0, bound=5.0)
    for left, now in enumerate([4.0, 3.0, 2.0, 1.0]):
        assert moving.look(now, (0, 10 - left))
    assert not moving.look(5.0, (0, 1))  # still moving, but the bound has passed


def test_acks_count_as_moving_only_once_nothing_is_owed() -> None:
    pace = Pace(0.0, stall=1.0, bound=5.0)
    assert pace.look(0.0, (1, 1 << 62))
    assert pace.look(0.9, (0, 50))  # the last take: moved
    assert pace.look(1.8, (0, 49))
    assert not pace.look(2.9, (0, 49))


def _second_publish(count: int) -> tuple[SnapshotCache, list[Stream], FanOut]:
    """`count` streams that took generation 0, and generation 1 just published: its fan-out
    begun, nothing taken yet."""
    cache = SnapshotCache(lambda _: generation(0))
    streams = [Stream(i) for i in range(count)]
    for s in streams:
        cache.watch(SIDECAR, s.wake)
    cache.get(SIDECAR)
    fanout = FanOut(cache, lambda: streams, stall=1.0, bound=5.0)  # type: ignore[arg-type,return-value]
    cache.waker = lambda wakes: None
    fanout.begin(0.0, 0.0)
    assert not fanout.look(0.0)
    cache.set(SIDECAR, generation(1))
    fanout.begin(0.0, 0.0)
    return cache, streams, fanout


def test_a_stream_stuck_before_taking_is_given_up_on_and_the_others_acks_still_waited_for() -> None:
    cache, streams, fanout = _second_publish(3)
    stuck, slow, quick = streams
    stuck.writing_since = 0.0  # blocked in a write of the last generation: never takes
    for s in (slow, quick):
        cache.take(SIDECAR, s.wake)
        s.send(1, 0.0)
        s.writing_since = None
    assert fanout.look(0.5)
    quick.statuses[ENDPOINT].acked_version = version(1)
    assert fanout.look(0.9)
    assert fanout.look(1.6)  # nothing taken for a second: the stuck one is given up on...
    assert cache.owed == 0
    assert fanout.look(2.5)  # ...and the slow one's ACK still waited for
    slow.statuses[ENDPOINT].acked_version = version(1)
    assert not fanout.look(2.6)


async def test_a_stream_gone_while_owing_an_ack_is_not_waited_for() -> None:
    cache, streams, fanout = _second_publish(2)
    gone, staying = streams
    for s in streams:
        cache.take(SIDECAR, s.wake)
        s.send(1, 0.0)
        s.writing_since = None
    assert fanout.look(0.1)
    staying.statuses[ENDPOINT].acked_version = version(1)
    assert fanout.look(0.2)  # the other still owes its ACK...
    gone.task = asyncio.get_running_loop().create_future()
    gone.task.set_result(None)  # ...until its stream ends: then nothing is left to wait for
    assert not fanout.look(0.3)
