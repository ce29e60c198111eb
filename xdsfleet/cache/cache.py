"""The snapshot cache: the latest snapshot of each node profile, and who is watching it.

Contract: used from one asyncio loop only (it is not thread-safe). Streams watch a profile and
are woken, without arguments, when its snapshot changes; they then read the latest snapshot
themselves, so a slow stream skips intermediate generations instead of queueing them.
"""

from __future__ import annotations

from collections.abc import Callable

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

    def watch(self, profile: NodeProfile, wake: Wake) -> Callable[[], None]:
        """Wake `wake` whenever `profile`'s snapshot changes; returns the cancel function."""
        self._watchers.setdefault(profile, set()).add(wake)

        def cancel() -> None:
            watchers = self._watchers.get(profile)
            if watchers is None:
                return
            watchers.discard(wake)
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

    def profiles(self) -> list[NodeProfile]:
        """The profiles that someone watches: the ones worth translating for."""
        return list(self._watchers)

    def set(self, profile: NodeProfile, snapshot: Snapshot) -> bool:
        """Store a new snapshot; wakes the profile's watchers and returns True if it differs."""
        old = self._snapshots.get(profile)
        if old is not None and old.versions == snapshot.versions:
            return False
        self._snapshots[profile] = snapshot if old is None else snapshot.after(old)
        for wake in list(self._watchers.get(profile, ())):
            wake()
        return True
