"""Turns each new fleet state into per-profile snapshots in the cache.

Only profiles that some stream watches are translated. When only endpoints changed (the common
case by far), each profile's previous snapshot is patched with the clusters and assignments of
the changed service ports alone, so the work per state is proportional to the change; any other
change translates every watched profile again, through memoised builders and an encoder keyed by
message identity. Both ways give the same snapshot (tests/test_incremental_publish.py).

Profiles translated from one state share what they have in common: each role's plan (listeners,
routes, the destinations they use) and each destination's placement, cluster and assignment is
built once per role or locality view (`translate.snapshot.DestinationTable`), and profiles whose
mappings of a type came out the same hold one mapping and patch it once
(`cache.snapshot.Siblings`): a change costs one assignment per locality view, not one per
profile, and a full translation two plans, not twelve.

Memos and encodings are dropped by generation, and only full translations end one: a patch
must not drop what everything unchanged is made of, or the next full translation (a route
change, say) would cost a cold start. What patches add meanwhile is bounded: once they have
encoded as many new resources as the snapshots hold (shared mappings counted once), the next
state is translated in full, which ends the generation. Memory then stays within about twice
the served set, for one full translation per that many patched resources.

A publish is a generator of small steps, so that it never holds the event loop: `serve` runs it
with `publish_in_slices` (the loop handed back every `SLICE_SECONDS`; a member lost rebuilds
every assignment of every profile), and a new profile's first snapshot with `prepare`; the CLI,
tests and the translation benchmark run it in one go (`publish`). No step is long: plans yield
every few routes or services (`translate.steps`), destinations are translated a few at a time,
and what a generation of memos and encodings drops is freed a few entries per step once every
profile has its snapshot (freeing 12,000 assignments at once took 10-20 ms at E = 100,000;
`python -m benchmarks.steps` lists the longest steps). The memos belong to the publisher
(`translate.memo.Memo`), made current around each slice. While a publish runs in slices, no
stream is woken (`SnapshotCache.holding`): between two slices the loop runs only what was
already under way, and the streams are woken onto the new snapshots once they are all set.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import (
    InconsistentSnapshot,
    Siblings,
    Snapshot,
    build_snapshot,
    patch_snapshot,
)
from xdsfleet.cache.typeurls import LISTENER
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile, locality_warning
from xdsfleet.telemetry import metrics
from xdsfleet.translate.changes import only_members_changed, service_changes
from xdsfleet.translate.memo import Memo
from xdsfleet.translate.rules import Destination
from xdsfleet.translate.services import (
    ServiceIndex,
    ServicePortKey,
    indexing,
    service_index,
    updated_index,
)
from xdsfleet.translate.snapshot import (
    DestinationTable,
    Resources,
    policy_index,
    translate_destinations,
)
from xdsfleet.translate.steps import Steps, finish, released

log = structlog.get_logger(__name__)
T = TypeVar("T")

Destinations = Mapping[ServicePortKey, tuple[Destination, ...]]


# The longest stretch a publish runs on the event loop before letting streams be served:
# grpc.aio moves no byte while the loop is held (BENCHMARKS.md, finding 2.1).
SLICE_SECONDS = 0.01
# Destinations translated between two looks at the clock.
_STEP = 16
# Services re-indexed between two looks at the clock (~25 us each at E = 100,000).
_SERVICES_STEP = 64
# Planned resources encoded between two looks at the clock (~10 us a listener).
_ENCODE_STEP = 64


@dataclass(frozen=True, slots=True)
class _Done:
    profiles: int
    changed: int
    incremental: bool


class Publisher:
    def __init__(self, state: FleetState) -> None:
        self.state = state
        # The fleet as loaded lives until replaced: out of the collector's full passes, as
        # after every publish (`publish_in_slices`), before deriving its index and snapshots
        # (~500,000 objects at E = 100,000 that those passes would walk again and again).
        gc.freeze()
        self._index = service_index(state)
        # This publisher's translation memos: nothing else shares them.
        self._memo = Memo()
        with self._memo.active():
            self._table = DestinationTable(state, self._index)
        # What the profiles' snapshots of `state` share (`cache.snapshot.Siblings`).
        self._siblings = Siblings()
        self._encoder = Encoder()
        # Per profile whose cached snapshot was made from `self.state`: the clusters each
        # service port gave it. A profile missing here is translated in full.
        self._destinations: dict[NodeProfile, Destinations] = {}
        # New resources patched in since the last full translation, and how many may be
        # before the next (`_served` then; first snapshots add to it).
        self._patched = 0
        self._budget = 0
        # Whether the ports the current patch rebuilds changed their clusters too.
        self._clusters_changed = False
        # The CPU time of the last publish's own work (its slices, not what ran between them).
        self.last_cpu = 0.0
        # One first build at a time (`prepare`): each is sliced, but the slices of builds run
        # side by side all land in the same loop iterations.
        self._preparing = asyncio.Lock()
        # Set when a publish raised: what it left half-done (index, destinations) is not
        # trusted, and the next publish translates everything from scratch.
        self._broken = False
        self.cache = SnapshotCache(self._first_snapshot)
        gc.freeze()  # and so does its index

    def publish(self, state: FleetState) -> None:
        """Publish `state` in one go: for callers with no streams to keep serving (the CLI,
        tests, benchmarks that measure translation itself)."""
        started, cpu = time.perf_counter(), time.thread_time()
        done = self._run(self._publishing(state))
        self._published(done, started, time.thread_time() - cpu)

    async def publish_in_slices(self, state: FleetState) -> None:
        """Publish `state`, handing the loop back every `SLICE_SECONDS` so that streams keep
        being served while a large change (a member lost: every assignment of every profile)
        is translated. Profiles are set as they are done. Never run two at once."""
        started = time.perf_counter()
        # No stream is woken meanwhile (why: pipeline/fanout.py).
        with self.cache.holding():
            done, cpu = await self._sliced(self._publishing(state))
        # What the publish built lives until a later one replaces it: out of the collector's
        # full passes, which otherwise walk the whole fleet (100-500 ms at E = 20,000, finding
        # nothing) and hold the loop. Freezing is O(1); a frozen object is still freed when its
        # last reference goes, only a cycle formed after freezing is not collected.
        gc.freeze()
        self._published(done, started, cpu)

    async def prepare(self, profile: NodeProfile) -> None:
        """Build the first snapshot of a profile that a stream has just started watching, in
        slices: at E = 100,000 a profile takes ~0.3 s to translate, which would otherwise hold
        the loop when a new kind of client connects (the cache builds synchronously for any
        other caller). Returns once the profile has a snapshot of the latest state, or when
        the build fails: the cache's own build then decides (and refuses the stream)."""
        if self.cache.peek(profile) is not None:
            return
        self._warn_without_locality(profile)
        # One build at a time, whoever asks. Side by side, the builds of the profiles of a
        # fleet's clients connecting at once (a replica's start) each yielded after its slice
        # into the same next iteration: 12 profiles at E = 100,000 held the loop 0.1-0.34 s
        # (the hold watch's `event_loop_held`, issue 10, eighth pass), and the streams of one
        # profile each built it. In turn, the later ones find it built.
        async with self._preparing:
            while self.cache.peek(profile) is None:
                state = self.state
                try:
                    snapshot, _ = await self._sliced(self._build(profile))
                except Exception:  # logged when the cache's build meets it again
                    return
                if snapshot is None:
                    return
                if self.cache.peek(profile) is None and self.state is state:
                    self.cache.set(profile, snapshot)
                    self._budget = self._served()
                    gc.freeze()  # as after a publish

    async def _sliced(self, steps: Steps[T]) -> tuple[T, float]:
        """Run `steps` to the end in slices of at most `SLICE_SECONDS`; its result and the CPU
        time of its own slices."""
        cpu = 0.0
        while True:
            deadline = time.perf_counter() + SLICE_SECONDS
            slice_started = time.thread_time()
            try:
                with self._memo.active():
                    next(steps)  # at least one step per slice, however short the slice
                    while time.perf_counter() < deadline:
                        next(steps)
            except StopIteration as end:
                return end.value, cpu + time.thread_time() - slice_started
            cpu += time.thread_time() - slice_started
            await asyncio.sleep(0)

    def _first_snapshot(self, profile: NodeProfile) -> Snapshot | None:
        """A new profile's snapshot, or None when it cannot be built: the cache then refuses
        its streams (`UNAVAILABLE`, and Envoy keeps what it has) instead of serving an empty
        snapshot, which would delete all of it."""
        self._warn_without_locality(profile)
        try:
            snapshot = self._run(self._build(profile))
            if snapshot is not None:
                self._budget = self._served(snapshot)
            gc.freeze()  # as after a publish
            return snapshot
        except Exception as err:
            # Any failure, not only an inconsistent result: one profile's bug must not end
            # the stream (or the process) of everyone else.
            metrics.SNAPSHOT_REJECTIONS.inc()
            log.error("snapshot_build_failed", profile=profile.describe(), exc_info=err)
            return None

    def _warn_without_locality(self, profile: NodeProfile) -> None:
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

    def node_problem(self, profile: NodeProfile) -> str | None:
        """What makes `profile`'s configuration empty that its clients cannot tell: a gateway
        the fleet does not have."""
        if profile.gateway is None:
            return None
        if any(f"{g.namespace}/{g.name}" == profile.gateway for g in self.state.gateways):
            return None
        return f"gateway {profile.gateway} is not in the fleet: its listeners are empty"

    def _run(self, steps: Steps[T]) -> T:
        """Run `steps` to the end without interruption; its result."""
        with self._memo.active():
            return finish(steps)

    def _publishing(self, state: FleetState) -> Steps[_Done]:
        """The work of a publish, yielding wherever it may be interrupted. If it raises, the
        cache still holds complete snapshots (each profile's old or new one), and the next
        publish translates in full."""
        try:
            return (yield from self._publishing_steps(state))
        except Exception:
            self._broken = True
            self._destinations.clear()
            raise

    def _publishing_steps(self, state: FleetState) -> Steps[_Done]:
        previous = self.state
        ports: frozenset[ServicePortKey] | None = None
        if self._broken:
            index = yield from indexing(state)
        else:
            index, ports = yield from self._updated_index(previous, state)
            if not only_members_changed(previous, state) or self._patched > self._budget:
                ports = None
            # A cluster depends on its port's endpoints only through `http2`: when none of the
            # changed ports turned it, patches rebuild assignments alone.
            self._clusters_changed = ports is not None and any(
                self._index[key].http2 != index[key].http2 for key in ports
            )
        # The state and its index change together, once the index is done: a first snapshot
        # built while it was being updated (`prepare`, `_first_snapshot`) was built from the
        # previous state throughout, and is patched below like every other.
        self.state, self._index = state, index
        self._table = DestinationTable(state, self._index)
        self._siblings = Siblings()
        profiles = self.cache.profiles()
        for gone in self._destinations.keys() - set(profiles):
            del self._destinations[gone]
        changed = 0
        for profile in profiles:
            yield
            if self.cache.peek(profile) is None:
                continue  # its first snapshot is being prepared (`prepare`), from this state
            if ports is None:
                snapshot = yield from self._build(profile)
            else:
                snapshot = yield from self._patch(profile, ports)
            if snapshot is not None:
                changed += self.cache.set(profile, snapshot)
        dropped = []
        if ports is None:
            # Drop the encodings this full translation did not use; patch again from here.
            dropped.append(self._encoder.end_generation())
            self._patched = 0
            self._budget = self._served()
            self._broken = False
        # Every profile has its snapshot: free what the memos and the encoder dropped, a few
        # entries per step.
        yield from released(dropped)
        yield from self._memo.releasing()
        return _Done(len(profiles), changed, incremental=ports is not None)

    def _published(self, done: _Done, started: float, cpu: float) -> None:
        elapsed = time.perf_counter() - started
        self.last_cpu = cpu
        metrics.GENERATIONS.inc()
        metrics.TRANSLATE_SECONDS.observe(cpu)
        metrics.PUBLISH_SECONDS.observe(elapsed)
        log.info(
            "fleet_published",
            profiles=done.profiles,
            changed=done.changed,
            incremental=done.incremental,
            ms=round(elapsed * 1000, 2),
            cpu_ms=round(cpu * 1000, 2),
        )

    def _build(self, profile: NodeProfile) -> Steps[Snapshot | None]:
        self._destinations.pop(profile, None)
        # A publish may start while this one is suspended: build from one state throughout.
        state, index, table, siblings = self.state, self._index, self._table, self._siblings
        planned = yield from table.plan(profile)
        resources = planned.resources()
        yield from self._planned_encoded(planned.planned, siblings)
        yield from self._translate(resources, state, index, table, profile, planned.used)
        try:
            snapshot = build_snapshot(resources, self._encoder, siblings)
        except InconsistentSnapshot as err:
            self._rejected(profile, err)
            return None
        self._destinations[profile] = planned.by_port
        return snapshot

    def _patch(
        self, profile: NodeProfile, ports: Collection[ServicePortKey]
    ) -> Steps[Snapshot | None]:
        """The profile's snapshot with the clusters and assignments of `ports` rebuilt: all
        that a change of endpoints alone can change."""
        destinations = self._destinations.pop(profile, None)
        if destinations is None:
            return (yield from self._build(profile))
        used = [d for key in sorted(ports) for d in destinations.get(key, ())]
        patch: Resources = {}
        encoded = self._encoder.encoded
        yield from self._translate(
            patch, self.state, self._index, self._table, profile, used, self._clusters_changed
        )
        self._patched += self._encoder.encoded - encoded
        try:
            # The profile's snapshot as it is now: a stream may have built it meanwhile.
            snapshot = patch_snapshot(self.cache.get(profile), patch, self._encoder, self._siblings)
        except InconsistentSnapshot as err:
            self._rejected(profile, err)
            return None
        self._destinations[profile] = destinations
        return snapshot

    def _planned_encoded(self, planned: Resources, siblings: Siblings) -> Steps[None]:
        """Encode the planned listeners, routes and secrets, and read what each listener refers
        to, a few at a time: `build_snapshot` then only looks them up (a proxyless client has
        a listener per service port: 1,000 at E = 100,000). Once per plan and state."""
        done = 0
        for type_url, named in planned.items():
            for name, message in named.items():
                self._encoder.encode(type_url, name, message)
                if type_url == LISTENER:
                    siblings.listeners.of(message)
                done += 1
                if done % _ENCODE_STEP == 0:
                    yield
        yield  # a route table of a large fleet takes a few milliseconds to serialize

    def _translate(
        self,
        resources: Resources,
        state: FleetState,
        index: ServiceIndex,
        table: DestinationTable,
        profile: NodeProfile,
        used: Sequence[Destination],
        clusters: bool = True,
    ) -> Steps[None]:
        """Add the clusters (unless not `clusters`) and assignments of `used` to `resources`,
        encoded, a few at a time. The encoder remembers each message, so building the snapshot
        then only looks them up."""
        for start in range(0, len(used), _STEP):
            chunk = used[start : start + _STEP]
            translated = translate_destinations(
                state, profile, index, chunk, table, clusters=clusters
            )
            for type_url, named in translated.items():
                resources.setdefault(type_url, {}).update(named)
                for name, message in named.items():
                    self._encoder.encode(type_url, name, message)
            yield

    @staticmethod
    def _rejected(profile: NodeProfile, err: InconsistentSnapshot) -> None:
        # A bug in translation, not bad input: say so loudly, and keep serving the previous
        # snapshot rather than one that would leave clients warming.
        metrics.SNAPSHOT_REJECTIONS.inc()
        log.error("snapshot_inconsistent", profile=profile.describe(), error=str(err))

    def _served(self, *new: Snapshot) -> int:
        """About how many resources the cached snapshots (and `new` ones) hold, each mapping
        that profiles share counted once: what patches may add to memory before a full
        translation drops what they replaced. Builds nothing."""
        snapshots = [self.cache.peek(profile) for profile in self.cache.profiles()]
        mappings = {
            id(named): len(named)
            for snapshot in (*snapshots, *new)
            if snapshot is not None
            for named in snapshot.resources.values()
        }
        return sum(mappings.values())

    def _updated_index(
        self, previous: FleetState, state: FleetState
    ) -> Steps[tuple[ServiceIndex, frozenset[ServicePortKey] | None]]:
        """The service index of `state`, from that of `previous`, a few services at a time (a
        member lost or restored changes every service it runs: 25-50 ms at E = 100,000 in one
        go); and the service ports whose endpoints alone changed, or None when more changed
        (ports came, went or were renamed)."""
        before = self._index
        changes = service_changes(previous, state)
        if changes is None:
            return (yield from indexing(state)), None
        # Each service in one update, with every member it changed in: an index updated for
        # some of the services is that of a state that differs from `state` in the others only.
        names = sorted({name for services in changes.values() for name in services})
        index, ports = before, frozenset[ServicePortKey]()
        for start in range(0, len(names), _SERVICES_STEP):
            chunk = frozenset(names[start : start + _SERVICES_STEP])
            part = {
                position: services & chunk
                for position, services in changes.items()
                if not services.isdisjoint(chunk)
            }
            index, rebuilt = updated_index(index, state, part)
            ports |= rebuilt
            yield
        if all(_same_shape(before, index, key) for key in ports):
            return index, ports
        return index, None


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
