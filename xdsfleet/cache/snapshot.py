"""Snapshots: one node profile's complete, consistent resource set at one generation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import (
    EMPTY_SET,
    Encoded,
    Encoder,
    encode,
    patched_set_version,
    set_version,
)
from xdsfleet.cache.uses import USERS, ListenerReferences, uses_of

# One generation's change: the versions it started from, and the names it changed, per type.
Step = tuple[Mapping[str, str], Mapping[str, frozenset[str]]]
# The resources a patch puts into one type's mapping; and the result: the patched mapping, its
# set version, the names that changed.
Patch = tuple[Encoded, ...]
Patched = tuple[Mapping[str, Encoded], str, frozenset[str]]
# Generations of change sets kept at most; fewer when they name more resources than the
# snapshot holds (walking every name is then no dearer than their union).
HISTORY = 32


class InconsistentSnapshot(ValueError):
    """A snapshot that names resources it does not hold; serving it would leave Envoy warming."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    resources: Mapping[str, Mapping[str, Encoded]]
    # Per type: the set version of all its resources (SotW `version_info`).
    versions: Mapping[str, str]
    # Cluster name -> the ClusterLoadAssignment name it warms on (rule 14).
    eds_names: Mapping[str, str] = field(default_factory=dict)
    # Listeners and routes: the clusters each one uses (`uses.uses_of`), for make before break.
    uses: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    # Per type: the versions of the snapshot this one replaced, and the names that differ from
    # it (added, changed or removed). A stream that was up to date with the previous snapshot
    # only looks at those names, so its work per change is proportional to the change.
    base_versions: Mapping[str, str] = field(default_factory=dict)
    changed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The same for the generations before, newest first (`base_versions`, `changed` of each),
    # so that a stream a few generations behind still does work in proportion to the changes
    # (under churn a stream is often two or three behind). Bounded by `_succeeded`.
    earlier: tuple[Step, ...] = ()
    # How many names `changed` and `earlier` hold together: what bounds `earlier`.
    history_size: int = 0
    # The clusters removed within that history, at their last version: a client that comes
    # back holding an older set may hold them still, with routes that use them, and must keep
    # them until those routes are replaced (rule 13; `SotwStream` reads them).
    departed: Mapping[str, Encoded] = field(default_factory=dict)

    def of(self, type_url: str) -> Mapping[str, Encoded]:
        return self.resources.get(type_url, {})

    def changes_since(self, type_url: str, version: str | None) -> frozenset[str] | None:
        """The names of `type_url` that may differ from a snapshot whose version of the type was
        `version`; None when unknown (the caller must look at every name)."""
        if version is None:
            return None
        if version == self.versions.get(type_url, ""):
            return frozenset()
        if version == self.base_versions.get(type_url):
            return self.changed.get(type_url, frozenset())
        names = set(self.changed.get(type_url, ()))
        for base, changed in self.earlier:
            names.update(changed.get(type_url, ()))
            if version == base.get(type_url):
                return frozenset(names)
        return None

    def _succeeded(
        self, changed: Mapping[str, frozenset[str]], clusters: Mapping[str, Encoded]
    ) -> dict[str, Any]:
        """The history fields of a snapshot that replaces this one with `changed` and holds
        `clusters`: this one's own step joins `earlier`, and the oldest steps go while the
        names they hold outnumber the resources (or there are more than HISTORY); the clusters
        removed are kept as long as a step that removed them."""
        size = sum(len(names) for names in changed.values())
        departed = self._departed(changed, clusters)
        if not self.base_versions:
            return {"earlier": (), "history_size": size, "departed": departed}
        steps = ((self.base_versions, self.changed), *self.earlier)
        total = size + self.history_size
        budget = sum(len(named) for named in self.resources.values())
        while steps and (total > budget or len(steps) > HISTORY):
            total -= sum(len(names) for names in steps[-1][1].values())
            steps = steps[:-1]
        if departed:
            within = set(changed.get(typeurls.CLUSTER, ()))
            for _, step in steps:
                within.update(step.get(typeurls.CLUSTER, ()))
            departed = {n: r for n, r in departed.items() if n in within}
        return {"earlier": steps, "history_size": total, "departed": departed}

    def _departed(
        self, changed: Mapping[str, frozenset[str]], clusters: Mapping[str, Encoded]
    ) -> dict[str, Encoded]:
        """The clusters removed so far and not back in `clusters`, this step's included."""
        before = self.of(typeurls.CLUSTER)
        departed = {n: r for n, r in self.departed.items() if n not in clusters}
        for name in changed.get(typeurls.CLUSTER, ()):
            if name not in clusters and name in before:
                departed[name] = before[name]
        return departed

    def after(self, previous: Snapshot) -> Snapshot:
        """This snapshot, knowing what changed since `previous`."""
        if self.base_versions and self.base_versions == previous.versions:
            return self  # a patch of `previous` (`patch_snapshot`): it knows already
        changed: dict[str, frozenset[str]] = {}
        for type_url, now in self.resources.items():
            before = previous.of(type_url)
            if self.versions.get(type_url) == previous.versions.get(type_url):
                changed[type_url] = frozenset()
                continue
            changed[type_url] = frozenset(
                name
                for name in now.keys() | before.keys()
                if (a := now.get(name)) is None
                or (b := before.get(name)) is None
                or a.version != b.version
            )
        return replace(
            self,
            base_versions=previous.versions,
            changed=changed,
            **previous._succeeded(changed, self.of(typeurls.CLUSTER)),
        )


class Siblings:
    """What snapshots of one state share: profiles that differ only in their listeners and
    routes (a sidecar and a gateway in one place), or only in their assignments (two places),
    hold the very same mapping of every type that came out the same, and a patch that makes the
    same change to the same mapping is applied once for all of them (`patch_snapshot`). Saves
    the memory of a copy per profile, and a patch per profile per change.

    Made by the owner for each state it builds or patches snapshots from, and then dropped."""

    def __init__(self) -> None:
        # (type, size) -> mappings built for earlier profiles.
        self._built: dict[tuple[str, int], list[Mapping[str, Encoded]]] = {}
        # (type, id of the mapping patched) -> (that mapping, the resources patched in, the
        # result: the patched mapping, its set version, the names that changed).
        self._patched: dict[tuple[str, int], tuple[Mapping[str, Encoded], Patch, Patched]] = {}
        # Profiles of one role hold the same listener messages: unpacked once for all.
        self.listeners = ListenerReferences()

    def intern(self, type_url: str, named: dict[str, Encoded]) -> Mapping[str, Encoded]:
        """`named`, or an equal mapping of an earlier profile (same names, same encodings in
        the same order)."""
        built = self._built.setdefault((type_url, len(named)), [])
        for earlier in built:
            # Equal values are the same objects (the encoder hands them out by message), so
            # this compares identities, at C speed.
            if earlier == named and list(earlier) == list(named):
                return earlier
        built.append(named)
        return named

    def patch(
        self, type_url: str, before: Mapping[str, Encoded], version: str, encoded: Patch
    ) -> Patched:
        """`_patch_type`, done once for every profile that makes it."""
        key = (type_url, id(before))
        done = self._patched.get(key)
        if done is not None and done[0] is before and _same(done[1], encoded):
            return done[2]
        result = _patch_type(before, version, encoded)
        self._patched[key] = (before, encoded, result)
        return result


def build_snapshot(
    messages: Mapping[str, Mapping[str, Any]], encoder: Encoder, siblings: Siblings | None = None
) -> Snapshot:
    """Encode a translated resource set and check that every reference resolves."""
    eds_names = {
        name: _eds_name(name, cluster)
        for name, cluster in messages.get(typeurls.CLUSTER, {}).items()
    }
    listeners = siblings.listeners if siblings is not None else ListenerReferences()
    _check(
        eds_names,
        messages.get(typeurls.LISTENER, {}),
        lambda type_url, name: name in messages.get(type_url, {}),
        listeners,
    )
    resources: dict[str, Mapping[str, Encoded]] = {
        type_url: {name: encoder.encode(type_url, name, msg) for name, msg in sorted(named.items())}
        for type_url, named in messages.items()
    }
    if siblings is not None:
        resources = {t: siblings.intern(t, dict(named)) for t, named in resources.items()}
    return Snapshot(
        resources=resources,
        versions={t: set_version(named.values()) for t, named in resources.items()},
        eds_names={c: e for c, e in eds_names.items() if e is not None},
        uses=uses_of(messages, listeners),
    )


def patch_snapshot(
    previous: Snapshot,
    patch: Mapping[str, Mapping[str, Any]],
    encoder: Encoder,
    siblings: Siblings | None = None,
) -> Snapshot:
    """`previous` with some resources replaced or added: the snapshot `build_snapshot` would
    give for the whole patched set, in O(patch). With `siblings`, a patch of a mapping that an
    earlier profile's patch already made the same way gives that profile's result.

    Only the references of the patched resources are checked: the others were checked when
    `previous` was built, and nothing they name can have gone since the patch removes nothing.
    """
    eds_names = {name: _eds_name(name, c) for name, c in patch.get(typeurls.CLUSTER, {}).items()}

    def present(type_url: str, name: str) -> bool:
        return name in patch.get(type_url, {}) or name in previous.of(type_url)

    listeners = siblings.listeners if siblings is not None else ListenerReferences()
    _check(eds_names, patch.get(typeurls.LISTENER, {}), present, listeners)
    resources = dict(previous.resources)
    versions = dict(previous.versions)
    changed = {type_url: frozenset[str]() for type_url in previous.resources}
    for type_url, named in patch.items():
        before = previous.of(type_url)
        encoded = tuple(encoder.encode(type_url, name, msg) for name, msg in named.items())
        version = versions.get(type_url, EMPTY_SET)
        if siblings is None:
            result = _patch_type(before, version, encoded)
        else:
            result = siblings.patch(type_url, before, version, encoded)
        if result[2]:
            resources[type_url], versions[type_url], changed[type_url] = result
    eds = previous.eds_names
    if eds_names:
        eds = dict(eds)
        for name, eds_name in eds_names.items():
            if eds_name is None:
                eds.pop(name, None)
            else:
                eds[name] = eds_name
    uses = previous.uses
    if any(patch.get(type_url) for type_url in USERS):
        uses = dict(uses)
        for type_url, named in uses_of(patch, listeners).items():
            if not patch.get(type_url):
                continue
            merged = dict(uses.get(type_url, {}))
            for name in patch[type_url]:
                merged.pop(name, None)
            merged.update(named)
            uses[type_url] = merged
    return Snapshot(
        resources,
        versions,
        eds,
        uses=uses,
        base_versions=previous.versions,
        changed=changed,
        **previous._succeeded(changed, resources.get(typeurls.CLUSTER, {})),
    )


def _same(a: Patch, b: Patch) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _patch_type(before: Mapping[str, Encoded], version: str, encoded: Patch) -> Patched:
    """One type's mapping with `encoded` replaced or added: the new mapping, its set version
    and the names that changed (none: `before` and `version` as they were)."""
    new = [e for e in encoded if (old := before.get(e.name)) is None or old.version != e.version]
    if not new:
        return before, version, frozenset()
    replaced = [before[e.name] for e in new if e.name in before]
    return (
        _patched(before, new),
        patched_set_version(version, replaced, new),
        frozenset(e.name for e in new),
    )


def _patched(before: Mapping[str, Encoded], new: list[Encoded]) -> dict[str, Encoded]:
    now = dict(before)
    now.update((e.name, e) for e in new)
    if len(now) != len(before):
        now = dict(sorted(now.items()))  # names were added: keep build_snapshot's order
    return now


def _check(
    eds_names: Mapping[str, str | None],
    listeners: Mapping[str, Any],
    present: Callable[[str, str], bool],
    references: ListenerReferences,
) -> None:
    """Refuse a snapshot whose clusters or listeners name an assignment or a route it lacks."""
    problems = [
        f"cluster {c!r} needs ClusterLoadAssignment {e!r}, which is missing"
        for c, e in eds_names.items()
        if e is not None and not present(typeurls.ENDPOINT, e)
    ]
    problems += [
        f"listener {listener!r} needs RouteConfiguration {route!r}, which is missing"
        for listener, msg in listeners.items()
        for route in references.of(msg).routes
        if not present(typeurls.ROUTE, route)
    ]
    if problems:
        raise InconsistentSnapshot("; ".join(problems))


def _eds_name(name: str, cluster: Any) -> str | None:
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return str(cluster.eds_cluster_config.service_name) or name


@lru_cache(maxsize=4096)
def empty_assignment(name: str) -> Encoded:
    """The answer to an EDS request for a cluster we do not know (rule 15): withholding it
    would leave the requesting cluster warming forever (envoy#9934)."""
    return encode(typeurls.ENDPOINT, name, endpoint_pb2.ClusterLoadAssignment(cluster_name=name))
