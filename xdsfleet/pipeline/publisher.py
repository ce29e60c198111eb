"""Turns each new fleet state into per-profile snapshots in the cache.

Only profiles that some stream watches are translated. When only endpoints changed (the common
case by far), each profile's previous snapshot is patched with the clusters and assignments of
the changed service ports alone, so the work per state is proportional to the change; any other
change translates every watched profile again, through memoised builders and an encoder keyed by
message identity. Both ways give the same snapshot (tests/test_incremental_publish.py).

Memos and encodings are dropped by generation, and only full translations end one: a patch
must not drop what everything unchanged is made of, or the next full translation (a route
change, say) would cost a cold start. What patches add meanwhile is bounded: once they have
patched as many resources as the snapshots hold, the next state is translated in full, which
ends the generation. Memory then stays within about twice the served set, for one
full translation per that many patched resources.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import structlog

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import InconsistentSnapshot, Snapshot, build_snapshot, patch_snapshot
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile, locality_warning
from xdsfleet.telemetry import metrics
from xdsfleet.translate.changes import only_members_changed, service_changes
from xdsfleet.translate.rules import Destination
from xdsfleet.translate.services import ServiceIndex, ServicePortKey, service_index, updated_index
from xdsfleet.translate.snapshot import policy_index, translate_destinations, translation

log = structlog.get_logger(__name__)

Destinations = Mapping[ServicePortKey, tuple[Destination, ...]]


class Publisher:
    def __init__(self, state: FleetState) -> None:
        self.state = state
        self._index = service_index(state)
        self._encoder = Encoder()
        # Per profile whose cached snapshot was made from `self.state`: the clusters each
        # service port gave it. A profile missing here is translated in full.
        self._destinations: dict[NodeProfile, Destinations] = {}
        # Resources patched since the last full translation.
        self._patched = 0
        self.cache = SnapshotCache(self._first_snapshot)

    def _build(self, profile: NodeProfile) -> Snapshot | None:
        self._destinations.pop(profile, None)
        try:
            result = translation(self.state, profile, self._index)
            snapshot = build_snapshot(result.resources, self._encoder)
        except InconsistentSnapshot as err:
            self._rejected(profile, err)
            return None
        self._destinations[profile] = result.destinations
        return snapshot

    def _patch(self, profile: NodeProfile, ports: Collection[ServicePortKey]) -> Snapshot | None:
        """The profile's snapshot with the clusters and assignments of `ports` rebuilt: all
        that a change of endpoints alone can change."""
        previous = self.cache.get(profile)
        destinations = self._destinations.pop(profile, None)
        if destinations is None:
            return self._build(profile)
        used = [d for key in sorted(ports) for d in destinations.get(key, ())]
        patch = translate_destinations(self.state, profile, self._index, used)
        self._patched += sum(len(named) for named in patch.values())
        try:
            snapshot = patch_snapshot(previous, patch, self._encoder)
        except InconsistentSnapshot as err:
            self._rejected(profile, err)
            return None
        self._destinations[profile] = destinations
        return snapshot

    @staticmethod
    def _rejected(profile: NodeProfile, err: InconsistentSnapshot) -> None:
        # A bug in translation, not bad input: say so loudly, and keep serving the previous
        # snapshot rather than one that would leave clients warming.
        metrics.SNAPSHOT_REJECTIONS.inc()
        log.error("snapshot_inconsistent", profile=profile.describe(), error=str(err))

    def _first_snapshot(self, profile: NodeProfile) -> Snapshot | None:
        """A new profile's snapshot, or None when it cannot be built: the cache then refuses
        its streams (`UNAVAILABLE`, and Envoy keeps what it has) instead of serving an empty
        snapshot, which would delete all of it."""
        if locality_warning(profile) is not None:
            regions = _regions_in_one_tier(self.state, self._index)
            if regions:
                # A node that says nothing of where it is sees every member as elsewhere:
                # without explicit tiers, a far region shares its first tier (issue 14).
                log.warning(
                    "node_without_locality",
                    profile=profile.describe(),
                    regions=regions,
                    hint="give the node --region/--zone/--member (xdsfleet bootstrap) or "
                    "explicit failover.tiers in a TrafficPolicy",
                )
        try:
            return self._build(profile)
        except Exception as err:
            # Any failure, not only an inconsistent result: one profile's bug must not end
            # the stream (or the process) of everyone else.
            metrics.SNAPSHOT_REJECTIONS.inc()
            log.error("snapshot_build_failed", profile=profile.describe(), exc_info=err)
            return None

    def node_problem(self, profile: NodeProfile) -> str | None:
        """What makes `profile`'s configuration empty that its clients cannot tell: a gateway
        the fleet does not have."""
        if profile.gateway is None:
            return None
        if any(f"{g.namespace}/{g.name}" == profile.gateway for g in self.state.gateways):
            return None
        return f"gateway {profile.gateway} is not in the fleet: its listeners are empty"

    def publish(self, state: FleetState) -> None:
        started = time.perf_counter()
        previous, self.state = self.state, state
        ports = self._update_index(previous, state)
        if not only_members_changed(previous, state) or self._patched > self._served():
            ports = None
        profiles = self.cache.profiles()
        for gone in self._destinations.keys() - set(profiles):
            del self._destinations[gone]
        changed = 0
        for profile in profiles:
            snapshot = self._build(profile) if ports is None else self._patch(profile, ports)
            if snapshot is not None:
                changed += self.cache.set(profile, snapshot)
        if ports is None:
            # Drop the encodings this full translation did not use; patch again from here.
            self._encoder.end_generation()
            self._patched = 0
        elapsed = time.perf_counter() - started
        metrics.GENERATIONS.inc()
        metrics.TRANSLATE_SECONDS.observe(elapsed)
        log.info(
            "fleet_published",
            profiles=len(profiles),
            changed=changed,
            incremental=ports is not None,
            ms=round(elapsed * 1000, 2),
        )

    def _served(self) -> int:
        """How many resources the cached snapshots hold: what patches may add to memory before
        a full translation drops what they replaced."""
        return sum(
            len(named)
            for profile in self.cache.profiles()
            for named in self.cache.get(profile).resources.values()
        )

    def _update_index(
        self, previous: FleetState, state: FleetState
    ) -> frozenset[ServicePortKey] | None:
        """Bring the service index up to `state`; the service ports whose endpoints alone
        changed, or None when more changed (ports came, went or were renamed)."""
        before = self._index
        changes = service_changes(previous, state)
        if changes is None:
            self._index = service_index(state)
            return None
        self._index, ports = updated_index(before, state, changes)
        if all(_same_shape(before, self._index, key) for key in ports):
            return ports
        return None


def _same_shape(before: ServiceIndex, after: ServiceIndex, key: ServicePortKey) -> bool:
    """Whether the port is in both indexes, under the same name: all that listeners and
    routes see of it (rules.Planner)."""
    was, now = before.get(key), after.get(key)
    return was is not None and now is not None and was.port_name == now.port_name


def _regions_in_one_tier(state: FleetState, index: ServiceIndex) -> list[str]:
    """The regions that share a first tier for a node without locality: those of the service
    ports whose tiers follow topology (no explicit `failover.tiers`) and span several regions."""
    policies = policy_index(state.policies)
    regions: set[str] = set()
    for key, port in index.items():
        failover = policies.service(key.namespace, key.service, port.port_name).failover
        if failover is not None and failover.tiers:
            continue
        spanned = {m.member.region for m in port.members}
        if len(spanned) > 1:
            regions |= spanned
    return sorted(regions)
