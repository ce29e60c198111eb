"""After each publish: wait until the streams have picked it up before the next may go, and
measure convergence, from the source event to the last stream's ACK of what it changed.

Pacing by fan-out: a publish that comes while streams are still taking the previous one makes
them skip it (a stream always reads the latest snapshot). So after a publish, the next waits
until every woken stream has taken its snapshot and every stream has ACKed the versions it
changed, for as long as that keeps moving: the wait follows the fan-out, however long the
server itself takes to wake the streams and write to them (a member loss's 4.5 MB to each of
1,000 streams takes seconds), and a storm of changes meanwhile becomes one publish per fan-out.
What it does not wait for is slow streams (rule 23): once neither the streams owed a snapshot
nor those owing an ACK have become fewer for `stall` seconds, the ones left are slow (stuck in a
write, or not reading, or not answering) and are given up on (`SnapshotCache.give_up`: not
waited for again until they catch up); a stream stuck in a write for longer than `stall` is
not waited for an ACK. So a slow client delays the next publish by at most `stall` per stage
after the others are done, and whatever happens the next publish may go `bound` seconds after
this one (`Pace`). A member loss does not wait for any of this (pipeline/debounce.py).

Waking: the streams of a profile that changed are queued, and the streams' pacer
(server/pacer.py) wakes them: each of its turns, as many as it has room for after the steps it
released, so that they run in that turn, behind those, and do not wait again (a future and a
task switch each, ~20 us). The pacer's budget bounds what they cost in a turn whatever the
change: when each answers a small change in 0.1 ms, a turn wakes a couple of hundred; when
each writes a member loss's 4.5 MB (14 ms for a SotW stream, 25 ms for a Delta one at
E = 100,000), one or two. Each fan-out starts with one stream and wakes at most `GROWTH` times
as many each turn: what the last turns' steps cost says nothing of this change. (The
fan-out used to wake a batch per loop iteration itself, sized on the last iteration's length;
with turns two iterations long, the streams woken in the light one all waited once more.)
While a publish runs, nobody is woken (`holding`, which the publisher holds through
`SnapshotCache.holding`): a stream woken then would take a snapshot the publish is about to
replace (for a member loss, the one it supersedes), and the last fan-out's streams competed
with the publish's slices, so that a member loss's publish took seconds for 0.3 s of CPU. When
it ends, the streams held are woken, each once, those of the last fan-out first.

Convergence (`xdsfleet_convergence_seconds{type}`): per type whose version changed in some
profile, the time from the first source event of the published state to the moment every
stream of those profiles subscribed to the type (and not stuck) has ACKed the new version, or
ACKed all it was sent when none of its resources changed; found
by looking at the streams' status every `poll` seconds, so it is exact to that much. A
generation replaced before it converged is not observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from xdsfleet.cache import typeurls
from xdsfleet.cache.cache import SnapshotCache, Wake
from xdsfleet.model.node import NodeProfile
from xdsfleet.pipeline.collector import Collector
from xdsfleet.server.ads import StreamInfo
from xdsfleet.server.pacer import Pacer
from xdsfleet.telemetry import metrics

# A fan-out that has not moved for this long waits only on slow streams (rule 23). The time a
# healthy one takes between two streams done is milliseconds (writes of a member loss overlap
# within the write budget; server/budget.py lets a writer wait at most 2 s, but the others move
# meanwhile); a second is what a slow client could hold a publish before, and still is.
STALL = 1.0
# The longest a publish waits for the fan-out of the last, however it moves. The longest fan-out
# expected at the design's scale is a member loss or its restore, ~4.5 MB to each of 1,000
# streams at E = 100,000: 5.7-12 s for ours on 2 shared cores, 5.8-13 s for the bare-gRPC floor
# itself. A stream reached after the bound is at most two generations behind for fan-outs up to
# twice it (it takes the newest when its turn comes): at 5 s, a 12 s fan-out left 24 streams 3
# behind. Past it, freshness (rule 24) wins over not skipping: many slow-but-moving clients must
# not hold every change for longer; and only such fan-outs (a failover's) make changes wait this
# long.
BOUND = 10.0
POLL = 0.025
# Streams woken by a fan-out's first turn; each turn then wakes up to GROWTH times as many as the
# last (and no more than the pacer has room for). The pacer's room comes from what its last
# turns' steps cost, which says nothing of this change: at once, it woke ~870 streams of a
# churn fan-out in one turn, ~5 ran and the rest waited again (22 ms of deferrals in one
# iteration). A turn is two loop iterations: 4x a turn (1, 4, 16, 64, ...) left the loop idle
# at a fan-out's start and cost steady convergence at 1,000 streams ~0.15x the floor; 16x a
# turn is the 4x an iteration the fan-out grew by before the pacer's turns.
WAKE_BATCH = 1
GROWTH = 16


@dataclass(slots=True)
class _Pending:
    event_at: float  # loop time of the first source event of the published state
    # Type URL -> profile -> the version every stream of that profile must ACK.
    targets: dict[str, dict[NodeProfile, str]]
    # The streams not done at the last look (None: not looked yet): a stream done stays done,
    # so each look costs the streams still behind, not all of them (a thousand statuses every
    # 25 ms was ~10 % of the loop during a fan-out).
    behind: list[StreamInfo] | None = None
    waiting: int = 0  # of `behind`, the streams not stuck in a write: what is waited for


@dataclass(slots=True)
class Pace:
    """Whether the fan-out of the publish made at `began` is still worth waiting for.

    `look` is told what is left: (streams owed a snapshot, streams owing an ACK), compared in
    that order (the ACKs are counted once nothing is owed). The fan-out moves when that falls
    below the least seen; it is worth waiting for while it moved in the last `stall` seconds
    and `bound` seconds have not passed since `began`. Pure: the clock is the caller's.
    """

    began: float
    stall: float = STALL
    bound: float = BOUND
    least: tuple[int, int] | None = field(default=None, init=False)
    moved: float = field(init=False)  # when `least` last fell

    def __post_init__(self) -> None:
        self.moved = self.began

    def look(self, now: float, left: tuple[int, int]) -> bool:
        if self.least is None or left < self.least:
            self.least, self.moved = left, now
        return now < min(self.moved + self.stall, self.began + self.bound)


class FanOut:
    def __init__(
        self,
        cache: SnapshotCache,
        streams: Callable[[], Iterable[StreamInfo]],
        *,
        stall: float = STALL,
        bound: float = BOUND,
        poll: float = POLL,
        collector: Collector | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._cache = cache
        self.collector = collector or Collector()
        self._streams = streams
        self.stall = stall
        self.bound = bound
        self.poll = poll
        cache.waker = self._wake
        cache.holding = self.holding
        self._waking: deque[Wake] = deque()
        self._held = 0  # `holding`s under way: nothing is woken meanwhile
        # The streams' pacer (the servicer's) wakes them a turn's worth at a time; without
        # one, a pacer of its own does (no step asks it: each turn wakes its first estimate).
        self._pacer = pacer or Pacer()
        # A second fan-out would take the feed over, and the first one's streams never wake.
        assert self._pacer.feed is None, "one fan-out per pacer"
        self._pacer.feed = self._feed
        self._batch = WAKE_BATCH  # the most the next turn wakes
        self._versions: dict[NodeProfile, Mapping[str, str]] = {}
        self._pending: _Pending | None = None
        self._pace: Pace | None = None  # while a publish's fan-out is waited for
        self._settled = asyncio.Event()

    async def settle(self, event_at: float) -> None:
        """Wait until every stream woken by the publish just made has taken its snapshot and
        ACKed what changed, while that keeps moving (module docstring), and follow its
        convergence from now on. `run` must be running: it does the looking."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.begin(event_at, started)
        try:
            with self.collector.busy():
                if self.look(started):
                    self._settled.clear()
                    await self._settled.wait()  # `run` looks every `poll`
                metrics.FANOUT_SECONDS.observe(loop.time() - started)
                # The publish is out: a quiet moment for the collector, before its young
                # passes come back, so that what the fan-out left is frozen, not walked
                # (pipeline/collector.py).
                self.collector.quiet()
        finally:
            self._pace = None

    def begin(self, event_at: float, now: float) -> None:
        """A publish was just made, of a state whose first source event was at `event_at`."""
        self._follow(event_at)
        self._pace = Pace(now, self.stall, self.bound)

    def look(self, now: float) -> bool:
        """Whether the fan-out of the publish `begin` was told of is still worth waiting for.
        The streams it stops waiting for are given up on."""
        pace = self._pace
        assert pace is not None
        while True:
            owed = self._cache.owed
            if owed:
                # Streams still to take the snapshot have not said what they will be sent.
                left = (owed, sys.maxsize)
            else:
                if self._pending is not None:
                    self._check(now)
                if self._pending is None:
                    return False  # every stream took it and ACKed what changed
                left = (0, self._pending.waiting)
            if pace.look(now, left):
                return True
            self._cache.give_up()
            if not owed or now >= pace.began + pace.bound:
                return False
            # Those not taking it were slow; the ACKs of the others are looked at next (fewer
            # left than any count with some owed: the fan-out moved).

    async def run(self) -> None:
        """Look at the fan-out `settle` waits for, and observe convergence, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll)
            if self._pace is not None:
                if not self.look(loop.time()):
                    self._pace = None
                    self._settled.set()
            elif self._pending is not None:
                self._check(loop.time())

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Wake no stream meanwhile (a publish runs): the streams it would wake take a snapshot
        the publish is about to replace. Those waiting, and those the publish wakes, go once
        it ends, each once."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._waking:
                # A stream in the queue twice (woken by the last publish and by this one) is
                # woken once: the second would find nothing new.
                self._waking = deque(dict.fromkeys(self._waking))
                self._batch = WAKE_BATCH
                self._pacer.wanted()

    def _wake(self, wakes: list[Wake]) -> None:
        """Queue the streams to wake: the pacer's turns wake them (`_feed`)."""
        if not wakes:
            return  # a profile nobody watches: no turn for nothing
        if not self._waking:
            self._batch = WAKE_BATCH  # a fan-out begins
        self._waking.extend(wakes)
        if not self._held:
            self._pacer.wanted()

    def _feed(self, room: int) -> int:
        """Wake at most `room` streams (a pacer's turn has room for as many steps); how many."""
        if self._held:
            return 0  # `holding` asks for a turn again when it ends
        woken = min(room, self._batch, len(self._waking))
        for _ in range(woken):
            self._waking.popleft()()
        self._batch = max(WAKE_BATCH, GROWTH * woken)
        return woken

    def _follow(self, event_at: float) -> None:
        targets: dict[str, dict[NodeProfile, str]] = {}
        versions = {
            profile: snapshot.versions
            for profile in self._cache.profiles()
            if (snapshot := self._cache.peek(profile)) is not None
        }
        for profile, now in versions.items():
            before = self._versions.get(profile, {})
            for type_url, version in now.items():
                if before.get(type_url) != version:
                    targets.setdefault(type_url, {})[profile] = version
        self._versions = versions
        self._pending = _Pending(event_at, targets) if targets else None

    def _check(self, now: float) -> None:
        pending = self._pending
        assert pending is not None
        if self._cache.owed:
            # Streams still to take the snapshot have not said yet what they will be sent.
            return
        behind: set[str] = set()
        streams = pending.behind if pending.behind is not None else list(self._streams())
        pending.behind = []
        pending.waiting = 0
        for info in streams:
            if info.task is not None and info.task.done():
                continue  # gone (its status no longer moves): neither waited for nor looked at
            if info.writing_since is not None and info.writing_since < now - self.stall:
                # Stuck: the watchdog's business, not a reason to wait; looked at again later.
                pending.behind.append(info)
                continue
            waits = False
            for type_url, status in info.machine.status().items():
                target = pending.targets.get(type_url, {}).get(info.profile)
                # A stream subscribed to none of what changed (a proxyless client naming a
                # few resources) is sent nothing new: it is done once it ACKed what it was sent.
                waiting = status.acked_version not in (target, status.sent_version)
                if target is not None and waiting:
                    behind.add(type_url)
                    waits = True
            if waits:
                pending.behind.append(info)
                pending.waiting += 1
        for type_url in [t for t in pending.targets if t not in behind]:
            short = typeurls.SHORT_NAMES.get(type_url, type_url)
            metrics.CONVERGENCE_SECONDS.labels(short).observe(now - pending.event_at)
            del pending.targets[type_url]
        if not pending.targets:
            self._pending = None
