"""Turns each new fleet state into per-profile snapshots in the cache.

Only profiles that some stream watches are translated. Translation is memoised and encoding is
keyed by message identity, so the work per state is proportional to what changed.
"""

from __future__ import annotations

import time

import structlog

from xdsfleet import metrics
from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import InconsistentSnapshot, Snapshot, build_snapshot
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.translate import translate

log = structlog.get_logger(__name__)

EMPTY = Snapshot(resources={}, versions={})


class Publisher:
    def __init__(self, state: FleetState) -> None:
        self.state = state
        self._encoder = Encoder()
        self.cache = SnapshotCache(self._first_snapshot)

    def _build(self, profile: NodeProfile) -> Snapshot | None:
        try:
            return build_snapshot(translate(self.state, profile), self._encoder)
        except InconsistentSnapshot as err:
            # A bug in translation, not bad input: say so loudly, and keep serving the previous
            # snapshot rather than one that would leave clients warming.
            metrics.SNAPSHOT_REJECTIONS.inc()
            log.error("snapshot_inconsistent", profile=profile.describe(), error=str(err))
            return None

    def _first_snapshot(self, profile: NodeProfile) -> Snapshot:
        return self._build(profile) or EMPTY

    def publish(self, state: FleetState) -> None:
        started = time.perf_counter()
        self.state = state
        changed = 0
        for profile in self.cache.profiles():
            snapshot = self._build(profile)
            if snapshot is not None:
                changed += self.cache.set(profile, snapshot)
        self._encoder.end_generation()
        elapsed = time.perf_counter() - started
        metrics.GENERATIONS.inc()
        metrics.TRANSLATE_SECONDS.observe(elapsed)
        log.info(
            "fleet_published",
            profiles=len(self.cache.profiles()),
            changed=changed,
            ms=round(elapsed * 1000, 2),
        )
