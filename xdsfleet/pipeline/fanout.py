"""After each publish: wait until the streams have picked it up before the next may go, and
measure convergence, from the source event to the last stream's ACK of what it changed.

Pacing by fan-out: a publish that comes while streams are still taking the previous one makes
them skip it (a stream always reads the latest snapshot). So after a publish, the next waits
until every woken stream has taken its snapshot and every stream has ACKed the versions it
changed, for at most `limit` seconds in all: this costs little when streams keep up and, when
they do not, turns a storm of publishes into one per fan-out. Streams still owed a snapshot
when the limit passes are slow ones and are not waited for again until they catch up (rule 23;
`SnapshotCache.give_up`); a stream stuck in a write for longer than `limit` is not waited for
an ACK.

Waking: the streams of a profile that changed are woken a batch per loop iteration, not all at
once (each answers in the iteration after its wake-up), the batch sized so that an iteration
takes about `ITERATION_SECONDS`: hundreds of streams when each answers a small change in 0.1 ms,
one when each writes a member loss's 4.5 MB (14 ms for a SotW stream, 25 ms for a Delta one at
E = 100,000). Each fan-out starts with one stream: what the last one cost a stream says nothing
of this change, and starting at 8 made the first iteration of a member loss's fan-out 100-200 ms.

Convergence (`xdsfleet_convergence_seconds{type}`): per type whose version changed in some
profile, the time from the first source event of the published state to the moment every
stream of those profiles subscribed to the type (and not stuck) has ACKed the new version, or
ACKed all it was sent when none of its resources changed; found
by looking at the streams' status every `poll` seconds, so it is exact to that much. A
generation replaced before it converged is not observed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from xdsfleet.cache import typeurls
from xdsfleet.cache.cache import SnapshotCache, Wake
from xdsfleet.model.node import NodeProfile
from xdsfleet.pipeline.collector import Collector
from xdsfleet.server.ads import StreamInfo
from xdsfleet.telemetry import metrics

LIMIT = 1.0  # rule 24: no change waits longer than a second for another
POLL = 0.025
# Streams woken in the first loop iteration of a fan-out; then the batch follows how long the
# iterations take, within [MIN_WAKE_BATCH, MAX_WAKE_BATCH]. Each fan-out starts small again:
# the last one's batch says nothing of what this change costs a stream.
WAKE_BATCH = 1
MIN_WAKE_BATCH = 1
GROWTH = 4  # at most this many times the last batch (slow start: see `_wake_batch`)
MAX_WAKE_BATCH = 1024
ITERATION_SECONDS = 0.02


@dataclass(slots=True)
class _Pending:
    event_at: float  # loop time of the first source event of the published state
    # Type URL -> profile -> the version every stream of that profile must ACK.
    targets: dict[str, dict[NodeProfile, str]]
    # The streams not done at the last look (None: not looked yet): a stream done stays done,
    # so each look costs the streams still behind, not all of them (a thousand statuses every
    # 25 ms was ~10 % of the loop during a fan-out).
    behind: list[StreamInfo] | None = None


class FanOut:
    def __init__(
        self,
        cache: SnapshotCache,
        streams: Callable[[], Iterable[StreamInfo]],
        *,
        limit: float = LIMIT,
        poll: float = POLL,
        collector: Collector | None = None,
    ) -> None:
        self._cache = cache
        self.collector = collector or Collector()
        self._streams = streams
        self.limit = limit
        self.poll = poll
        self._taken = asyncio.Event()
        cache.on_taken = self._taken.set
        cache.waker = self._wake
        self._waking: deque[Wake] = deque()
        self._batch = WAKE_BATCH
        self._batch_at: float | None = None  # when the last batch was woken, while waking
        self._versions: dict[NodeProfile, Mapping[str, str]] = {}
        self._pending: _Pending | None = None
        self._converged = asyncio.Event()

    async def settle(self, event_at: float) -> None:
        """Wait until every stream woken by the publish just made has taken its snapshot (at
        most `limit` seconds), and start following its convergence."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._follow(event_at)
        try:
            async with asyncio.timeout(self.limit):
                if self._cache.owed:
                    self._taken.clear()
                    await self._taken.wait()
                await self._converged.wait()
        except TimeoutError:
            self._cache.give_up()
        metrics.FANOUT_SECONDS.observe(loop.time() - started)
        # The publish is out: a quiet moment for the collector (pipeline/collector.py).
        self.collector.quiet()

    async def run(self) -> None:
        """Observe convergence until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll)
            if self._pending is not None:
                self._check(loop.time())

    def _wake(self, wakes: list[Wake]) -> None:
        """Wake a batch of streams now and the rest in later loop iterations."""
        idle = not self._waking
        self._waking.extend(wakes)
        if idle:
            self._batch = WAKE_BATCH
            self._wake_batch()

    def _wake_batch(self) -> None:
        now = time.thread_time()
        if self._batch_at is not None:
            # The iteration since the last batch ran that batch's streams: scale to the target.
            # Thread CPU, not wall time: on a busy machine a process that is not scheduled
            # would otherwise shrink the batches for nothing.
            took = max(now - self._batch_at, 1e-4)
            wanted = int(self._batch * ITERATION_SECONDS / took)
            # Grows at most GROWTH-fold an iteration (shrinks at once): an iteration whose
            # streams did little (waiting on something else) said nothing of what the next
            # ones cost, and a jump to 20 streams of a member loss's 25 ms each held the loop.
            # Twofold cost the steady state ~0.2x the floor (10 iterations for 1,000 streams).
            wanted = min(wanted, GROWTH * self._batch)
            self._batch = max(MIN_WAKE_BATCH, min(MAX_WAKE_BATCH, wanted))
        for _ in range(min(self._batch, len(self._waking))):
            self._waking.popleft()()
        if self._waking:
            self._batch_at = now
            asyncio.get_running_loop().call_soon(self._wake_batch)
        else:
            self._batch_at = None

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
        if targets:
            self._converged.clear()
        else:
            self._converged.set()

    def _check(self, now: float) -> None:
        pending = self._pending
        assert pending is not None
        if self._cache.owed:
            # Streams still to take the snapshot have not said yet what they will be sent.
            return
        behind: set[str] = set()
        streams = pending.behind if pending.behind is not None else list(self._streams())
        pending.behind = []
        for info in streams:
            if info.writing_since is not None and info.writing_since < now - self.limit:
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
        for type_url in [t for t in pending.targets if t not in behind]:
            short = typeurls.SHORT_NAMES.get(type_url, type_url)
            metrics.CONVERGENCE_SECONDS.labels(short).observe(now - pending.event_at)
            del pending.targets[type_url]
        if not pending.targets:
            self._pending = None
            self._converged.set()
