"""The snapshot cache: the latest snapshot of each node profile, and who is watching it.

Contract: used from one asyncio loop only (it is not thread-safe). Streams watch a profile and
are woken, without arguments, when its snapshot changes; they then `take` the latest snapshot
themselves, so a slow stream skips intermediate generations instead of queueing them. The cache
counts the streams woken that have not taken their snapshot yet (`owed`, O(1)): the fan-out
(pipeline/fanout.py) waits for that count to reach zero, while it keeps falling, before the next
publish, so that no stream skips a generation merely because the next one came before it got to
it; the streams it stops waiting for (`give_up`) are not counted again until they take one.
A publish holds the wakes while it runs (`holding`): the streams are woken onto its snapshots,
not onto those it is replacing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.model.node import NodeProfile

Wake = Callable[[], None]
# None: the profile has no good snapshot (its build failed); nothing is stored, and the next
# `get` tries again.
Builder = Callable[[NodeProfile], Snapshot | None]


class NoSnapshot(LookupError):
    """A profile whose first build failed: there is nothing good to serve it yet, and serving
    an empty snapshot instead would delete everything its clients hold."""


class SnapshotCache:
    def __init__(self, builder: Builder) -> None:
        # Builds the snapshot of a profile no stream has asked for yet.
        self._builder = builder
        self._snapshots: dict[NodeProfile, Snapshot] = {}
        self._watchers: dict[NodeProfile, set[Wake]] = {}
        # Watchers woken by `set` that have not called `take` since, apart: those waited for,
        # and those given up on (`give_up`: slow streams skip generations, rule 23, and are not
        # waited for until they take one). Disjoint, so that `owed` is a length, not a set
        # difference (which was quadratic in the streams given up on, under overload).
        self._woken: set[Wake] = set()
        self._laggards: set[Wake] = set()
        # Calls the watchers to wake; the server spreads them over loop iterations (FanOut),
        # so that a thousand streams answering one change do not make one long iteration.
        self.waker: Callable[[list[Wake]], None] = _wake_all
        # Held by a publish while it runs (`Publisher.publish_in_slices`): the waker wakes
        # nobody meanwhile, and the streams it held when it ends (why: FanOut.holding).
        self.holding: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext

    def watch(self, profile: NodeProfile, wake: Wake) -> Callable[[], None]:
        """Wake `wake` whenever `profile`'s snapshot changes; returns the cancel function."""
        self._watchers.setdefault(profile, set()).add(wake)

        def cancel() -> None:
            watchers = self._watchers.get(profile)
            if watchers is None:
                return
            watchers.discard(wake)
            self._untake(wake)
            if not watchers:
                # Nobody needs it any more: the next stream of this profile rebuilds it.
                del self._watchers[profile]
                self._snapshots.pop(profile, None)

        return cancel

    def get(self, profile: NodeProfile) -> Snapshot:
        """The profile's latest snapshot, built on first use; raises `NoSnapshot` when that
        build fails."""
        snapshot = self._snapshots.get(profile)
        if snapshot is None:
            snapshot = self._builder(profile)
            if snapshot is None:
                raise NoSnapshot(f"no configuration could be built for {profile.describe()} yet")
            self._snapshots[profile] = snapshot
        return snapshot

    def peek(self, profile: NodeProfile) -> Snapshot | None:
        """The profile's snapshot if it has one; never builds it."""
        return self._snapshots.get(profile)

    def take(self, profile: NodeProfile, wake: Wake) -> Snapshot:
        """The latest snapshot, for the watcher `wake` that was woken: it is no longer owed
        one."""
        self._untake(wake)
        return self.get(profile)

    @property
    def owed(self) -> int:
        """How many woken watchers, not given up on, have not taken their snapshot yet."""
        return len(self._woken)

    def give_up(self) -> None:
        """Stop waiting for the watchers owed a snapshot now, until they take one."""
        self._laggards |= self._woken
        self._woken.clear()

    def _untake(self, wake: Wake) -> None:
        self._laggards.discard(wake)
        self._woken.discard(wake)

    def profiles(self) -> list[NodeProfile]:
        """The profiles that someone watches: the ones worth translating for."""
        return list(self._watchers)

    def set(self, profile: NodeProfile, snapshot: Snapshot) -> bool:
        """Store a new snapshot; wakes the profile's watchers and returns True if it differs."""
        old = self._snapshots.get(profile)
        if old is not None and old.versions == snapshot.versions:
            return False
        self._snapshots[profile] = snapshot if old is None else snapshot.after(old)
        wakes = list(self._watchers.get(profile, ()))
        self._woken.update(w for w in wakes if w not in self._laggards)
        self.waker(wakes)
        return True


def _wake_all(wakes: list[Wake]) -> None:
    for wake in wakes:
        wake()
