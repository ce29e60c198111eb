"""What both protocol variants share: responses, request outcomes and per-type status.

Memory: a stream lives as long as its client, and a server holds thousands, so what the machines
keep per stream must not grow with the fleet when the client holds what everyone holds. What a
client holds is a snapshot's own map plus its differences from it (`Held`); the names it asks
for are one frozenset shared by every stream that asks for the same (`shared_names`); a response
waiting for its answer remembers names, not resources (`Sent`).

Waking: a stream's writer looks (`next_responses`) when a new snapshot comes and when a request
may have let something go on the snapshot it last looked at (`RequestResult.wakes`). Most
requests are ACKs that let nothing go: what the writer sent answered every type, and the ACK
only closes it. The machine knows: at each look it notes whether anything was left (a type held
back by an unanswered response, names forced or held back, a resuming client), and an ACK that
changes no subscription wakes the writer only then. A fan-out of a thousand streams then costs
a thousand task switches fewer (tests/test_protocol_wakes.py proves that no interleaving of
requests and publishes leaves a stream owed a response unwoken).
"""

from __future__ import annotations

import itertools
import random
import weakref
from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoded

if TYPE_CHECKING:
    from xdsfleet.cache.snapshot import Snapshot

# Rules 9 and 20: only these types know the legacy wildcard (an empty first request).
LEGACY_WILDCARD = typeurls.FULL_STATE


# The records below are made per stream and response, on the loop that serves every stream:
# plain slots dataclasses, not frozen ones, whose `__init__` sets each field through
# `object.__setattr__` at three times the cost. Nothing changes them once made.


@dataclass(slots=True)
class Response:
    type_url: str
    nonce: str
    version: str
    resources: tuple[Encoded, ...]
    removed: tuple[str, ...] = ()


class Outcome(StrEnum):
    SUBSCRIBE = "subscribe"  # a request that answers no response (the first, or a change)
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # echoes a nonce that is not the latest: nothing is sent for it
    UNSUPPORTED = "unsupported"  # a type this server does not serve


@dataclass(slots=True)
class RequestResult:
    outcome: Outcome
    type_url: str
    version: str = ""  # for ACK/NACK: the version the response carried
    message: str = ""  # for NACK: Envoy's error_detail.message
    # Whether the request may have made something sendable on the snapshot the writer last
    # looked at, so that the writer must look again (module docstring, "Waking"). False only
    # for an ACK that changed no subscription while nothing waited for it: most requests.
    wakes: bool = True


# One empty mapping, whatever it maps: per-stream state points at it rather than at an empty
# dict of its own.
_EMPTY: Mapping[str, Any] = MappingProxyType({})
NOTHING: Mapping[str, Encoded] = _EMPTY
NO_NAMES: frozenset[str] = frozenset()


@dataclass(slots=True)
class Sent:
    """A response remembered until the client answers it.

    It keeps the names it carried and the snapshot's map of the type they came from (`source`,
    shared by every stream), with the few resources that did not come from there (`own`: a
    placeholder, a listener kept at the version the client holds). A tuple of strings is
    nothing for the cyclic collector to walk; a thousand streams each holding a tuple of a
    thousand resources during a member loss's fan-out were a million references per pass.
    """

    type_url: str
    version: str
    names: tuple[str, ...]
    removed: tuple[str, ...] = ()
    source: Mapping[str, Encoded] = field(default_factory=lambda: NOTHING)
    own: Mapping[str, Encoded] = field(default_factory=lambda: NOTHING)
    # The snapshot's version of the type whose map `source` is (`Held.follow` reads it).
    source_version: str | None = None

    @classmethod
    def of(
        cls,
        type_url: str,
        version: str,
        resources: Collection[Encoded],
        removed: tuple[str, ...],
        source: Mapping[str, Encoded],
        source_version: str | None = None,
    ) -> Sent:
        names = tuple([res.name for res in resources])
        own: dict[str, Encoded] | None = None
        for res in resources:
            if source.get(res.name) is not res:
                if own is None:
                    own = {}
                own[res.name] = res
        return cls(type_url, version, names, removed, source, own or NOTHING, source_version)

    @property
    def whole(self) -> bool:
        """Whether it carried every resource of its source, and nothing else (names are unique
        in a response, and every one not in `own` came from `source`)."""
        return not self.own and len(self.names) == len(self.source)

    @property
    def resources(self) -> Iterator[Encoded]:
        own, source = self.own, self.source
        for name in self.names:
            found = own.get(name) if own else None
            yield source[name] if found is None else found


class Held:
    """What a client holds of one type, name -> resource, as its answers tell.

    Most clients hold what their profile's snapshot has (Envoy's wildcard CDS and LDS, its EDS
    for every cluster): they share that snapshot's map (`_base`) and keep only their differences
    from it (`_diff`: a name's resource, or None for a name of the base they do not hold). When
    the differences grow, `follow` moves to the newest snapshot's map. A thousand streams then
    hold one map of a thousand names between them, not a thousand copies, and the collector
    walks a few small dicts per stream.
    """

    __slots__ = ("_base", "_diff", "_version")

    def __init__(self) -> None:
        self._base: Mapping[str, Encoded] = NOTHING
        self._diff: dict[str, Encoded | None] = {}
        # The version of the type in the snapshot whose map `_base` is; None when not known.
        self._version: str | None = None

    def get(self, name: str) -> Encoded | None:
        diff = self._diff
        if diff and name in diff:
            return diff[name]
        return self._base.get(name)

    def version(self, name: str) -> str | None:
        found = self.get(name)
        return None if found is None else found.version

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        diff = self._diff
        for name in self._base:
            if name not in diff:
                yield name
        for name, res in diff.items():
            if res is not None:
                yield name

    def __len__(self) -> int:
        base = self._base
        return len(base) + sum((r is not None) - (n in base) for n, r in self._diff.items())

    def __bool__(self) -> bool:
        return len(self) > 0

    def items(self) -> Iterator[tuple[str, Encoded]]:
        diff = self._diff
        for name, res in self._base.items():
            if name not in diff:
                yield name, res
        for name, found in diff.items():
            if found is not None:
                yield name, found

    def names(self) -> set[str]:
        return set(self)

    def put(self, name: str, res: Encoded) -> None:
        base = self._base.get(name)
        if base is not None and base.version == res.version:
            self._diff.pop(name, None)
        else:
            self._diff[name] = res

    def put_all(self, resources: Iterable[Encoded]) -> None:
        """`put` of each: the ACK of a large response, in one pass."""
        base, diff = self._base, self._diff
        for res in resources:
            found = base.get(res.name)
            if found is not None and found.version == res.version:
                if diff:
                    diff.pop(res.name, None)
            else:
                diff[res.name] = res

    def put_source(self, source: Mapping[str, Encoded], version: str | None = None) -> None:
        """`put` of every resource of `source` (a snapshot's map of the type, at `version`), as
        an ACK of a response that carried all of it does (a member lost or restored changes
        every assignment, and may add or remove some): `source` becomes the base at once, for
        the cost of the names held beyond it, instead of a `put` of every name and a difference
        per name until the writer next looks."""
        base, diff = self._base, self._diff
        # Every name of `source` is now held as it is there; any other keeps what it had.
        kept: dict[str, Encoded | None] = (
            {n: r for n, r in diff.items() if r is not None and n not in source} if diff else {}
        )
        if base is not source and base.keys() != source.keys():
            for name in base.keys() - source.keys():
                if name not in diff:
                    kept[name] = base[name]
        self._base, self._diff, self._version = source, kept, version

    def put_sent(self, sent: Sent) -> None:
        """`put` of every resource `sent` carried, in one step when that is all of its source
        (`put_source`: a member lost changes every assignment)."""
        if sent.whole:
            self.put_source(sent.source, sent.source_version)
        else:
            self.put_all(sent.resources)
            if self._base is NOTHING:
                # A first response: its map is shared at once (for the cost of the put), not
                # copied per stream until the writer next looks (2,000 streams just connected).
                self.rebase(sent.source, version=sent.source_version)

    def differing(self, resources: list[Encoded]) -> list[Encoded]:
        """Those of `resources` the client does not hold at their version, in order."""
        base, diff = self._base, self._diff
        if not diff:
            return [
                r
                for r in resources
                if (h := base.get(r.name)) is not r and (h is None or h.version != r.version)
            ]
        return [
            r
            for r in resources
            if (h := diff[r.name] if r.name in diff else base.get(r.name)) is not r
            and (h is None or h.version != r.version)
        ]

    def drop(self, name: str) -> None:
        if name in self._base:
            self._diff[name] = None
        else:
            self._diff.pop(name, None)

    def clear(self) -> None:
        self._base, self._diff, self._version = NOTHING, {}, None

    def assign_sent(self, sent: Sent) -> None:
        """Hold exactly what a full-state response carried: the snapshot's map itself when it
        carried all of it, as a CDS or LDS response mostly does. Every SotW stream ACKs a new
        set of clusters at once, and building each its own map of them was a walk of every
        cluster per stream, hundreds in one loop iteration."""
        if sent.whole:
            self._base, self._diff, self._version = sent.source, {}, sent.source_version
        else:
            self.assign(sent.resources, sent.source)

    def assign(self, resources: Iterable[Encoded], source: Mapping[str, Encoded]) -> None:
        """Hold exactly `resources` (a full-state response), sharing `source` where it can."""
        self._base, self._diff, self._version = NOTHING, {r.name: r for r in resources}, None
        self.rebase(source, force=True)

    def follow(self, snapshot: Snapshot, type_url: str) -> None:
        """Share the snapshot's map of the type once the differences outgrow an eighth of the
        base: for the cost of the differences and of the names the snapshot's history says
        changed since the base's version, not of every name. Every stream of a profile takes
        the same responses, so all cross that bound on the same fan-out; walking every name
        there (a SotW EDS ACK 190 µs at E = 100,000, 1,000 streams at once) made the loop's
        longest iterations. Called before the writer looks at a snapshot, when no response of
        the type is unanswered. The bound also bounds what an old base keeps alive, and what a
        stream keeps of its own: an eighth of the names, and the response since."""
        diff = self._diff
        if len(diff) <= _SLACK + len(self._base) // 8:
            return
        source = snapshot.of(type_url)
        if source is self._base:
            return
        version = snapshot.versions.get(type_url, "")
        since = self._version
        changes = None if since is None else snapshot.changes_since(type_url, since)
        if changes is None:
            # Beyond the history (or never known): the walk of every name, once.
            self.rebase(source, force=True, version=version)
            return
        base = self._base
        new: dict[str, Encoded | None] = {}
        for name, res in diff.items():
            found = source.get(name)
            if res is None:
                if found is not None:
                    new[name] = None  # still not held
            elif found is not res and (found is None or found.version != res.version):
                new[name] = res
        # Any other name is held as the base has it, and the base as the source (unchanged).
        for name in changes:
            if name in diff:
                continue
            res, found = base.get(name), source.get(name)
            if res is found:
                continue
            if res is None:
                new[name] = None
            elif found is None or found.version != res.version:
                new[name] = res
        self._base, self._diff, self._version = source, new, version

    def rebase(
        self, source: Mapping[str, Encoded], *, force: bool = False, version: str | None = None
    ) -> None:
        """Share `source` (a snapshot's map of the type, at `version` if known) if that leaves
        fewer differences, walking every name held. Unless forced, looked at only once the
        differences outgrow 1/8 of the base."""
        diff = self._diff
        if source is self._base or not diff:
            return
        if not force and len(diff) <= _SLACK + len(self._base) // 8:
            return
        limit = len(diff)
        if abs(len(source) - len(self)) >= limit:
            return  # at least that many names differ: no gain
        base = self._base
        new: dict[str, Encoded | None] = {}
        held = itertools.chain(
            ((n, r) for n, r in base.items() if n not in diff),
            ((n, r) for n, r in diff.items() if r is not None),
        )
        for name, res in held:
            found = source.get(name)
            if found is not res and (found is None or found.version != res.version):
                new[name] = res
                if len(new) >= limit:
                    return
        for name in source:
            if (diff[name] if name in diff else base.get(name)) is None:
                new[name] = None
                if len(new) >= limit:
                    return
        self._base, self._diff, self._version = source, new, version


# Differences a `Held` keeps before it looks for a base that leaves fewer.
_SLACK = 8


def in_order(names: Collection[str], available: Mapping[str, Encoded]) -> list[str]:
    """`names`, sorted. A snapshot's maps are built in name order, so when `names` are most of
    one (a member lost changes every assignment), walking the map gives them (nearly) in order,
    and sorting what is already in order is linear."""
    if len(names) * 4 < len(available):
        return sorted(names)
    ordered = [n for n in available if n in names]
    if len(ordered) < len(names):
        ordered += [n for n in names if n not in available]
    ordered.sort()
    return ordered


# Name sets that streams ask for, shared: the streams of one profile ask for the same names.
_SHARED_NAMES: weakref.WeakValueDictionary[int, frozenset[str]] = weakref.WeakValueDictionary()


def shared_names(names: Iterable[str]) -> frozenset[str]:
    """`names` as a frozenset, the very one another stream holds if it asked for the same: a
    thousand EDS names are ~100 KiB per stream otherwise (fresh strings from each request)."""
    frozen = names if isinstance(names, frozenset) else frozenset(names)
    if not frozen:
        return NO_NAMES
    key = hash(frozen)
    found = _SHARED_NAMES.get(key)
    if found is not None and found == frozen:
        return found
    if found is None:
        _SHARED_NAMES[key] = frozen
    return frozen


class Subscribed:
    """A Delta stream's subscribed names: a frozenset shared with the streams that subscribed the
    same (`shared_names`) and this stream's changes since (`_added`, `_removed`). Shared again
    once the changes outgrow a sixteenth of it: a request that subscribes one name must not
    copy the tens of thousands already subscribed (a client sending one name per request made
    every request cost them all, on the loop that serves every stream)."""

    __slots__ = ("_added", "_base", "_removed")

    def __init__(self) -> None:
        self._base: frozenset[str] = NO_NAMES
        self._added: set[str] | None = None  # not in `_base`
        self._removed: set[str] | None = None  # in `_base`

    def __contains__(self, name: object) -> bool:
        if self._added is not None and name in self._added:
            return True
        return name in self._base and (self._removed is None or name not in self._removed)

    def __len__(self) -> int:
        added, removed = self._added, self._removed
        return len(self._base) + (len(added) if added else 0) - (len(removed) if removed else 0)

    def __iter__(self) -> Iterator[str]:
        removed = self._removed
        for name in self._base:
            if removed is None or name not in removed:
                yield name
        if self._added:
            yield from self._added

    def __or__(self, other: Iterable[str]) -> frozenset[str]:
        return self.frozen() | frozenset(other)

    def frozen(self) -> frozenset[str]:
        """The names as a frozenset (the shared one when nothing changed since)."""
        if not (self._added or self._removed):
            return self._base
        return frozenset(self)

    def issuperset(self, names: Iterable[str]) -> bool:
        if not (self._added or self._removed):
            return self._base.issuperset(names)
        return all(name in self for name in names)

    def add(self, name: str) -> None:
        if self._removed is not None and name in self._removed:
            self._removed.discard(name)
        elif name not in self._base:
            if self._added is None:
                self._added = set()
            self._added.add(name)

    def discard(self, name: str) -> None:
        if self._added is not None and name in self._added:
            self._added.discard(name)
        elif name in self._base:
            if self._removed is None:
                self._removed = set()
            self._removed.add(name)

    def settle(self) -> None:
        """After a request's changes: fold them in, sharing the result with the streams that
        hold the same, once they outgrow what keeping them apart saves (a first subscription
        at once; single names once a sixteenth of the names have changed)."""
        changes = len(self._added or ()) + len(self._removed or ())
        if changes > _SLACK + len(self._base) // 16:
            self._base = shared_names(self)
            self._added = self._removed = None


@dataclass(slots=True)
class TypeStatus:
    """Per stream and type, what an SRE asks: what was sent, what the client holds, and why it
    refused the last thing it refused."""

    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nack_version: str = ""
    nack_message: str = ""
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    # What the client holds (the machine's own record, seen through `held`), and per resource
    # what it refused with its message.
    holding: Held = field(default_factory=Held, repr=False)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    # The client came back holding what it needed: nothing had to be sent (rules 7 and 19).
    resumed: bool = False

    @property
    def in_sync(self) -> bool:
        if self.sent_nonce == "":
            return self.resumed
        return self.sent_version == self.acked_version

    @property
    def held(self) -> dict[str, str]:
        """Per resource, the version the client accepted: made when asked (status pages, the
        Gateway status writer), from the machine's own record."""
        return {name: res.version for name, res in self.holding.items()}

    def resume(self) -> None:
        """A reconnecting client said what it holds."""
        self.resumed = True

    def accept(self, sent: Sent) -> None:
        self.acked_version = sent.version
        self.acks += 1
        if self.refused:
            for name in sent.names:
                self.refused.pop(name, None)

    def refuse(self, sent: Sent, message: str) -> None:
        self.nacks += 1
        self.nack_version = sent.version
        self.nack_message = message
        for res in sent.resources:
            self.refused[res.name] = (res.version, message)

    def forget(self, name: str) -> None:
        """The client no longer asks for `name`."""
        self.refused.pop(name, None)

    def summary(self) -> dict[str, object]:
        """The scalar fields, for listings where per-resource maps would be too long."""
        return {
            "sentVersion": self.sent_version,
            "ackedVersion": self.acked_version,
            "inSync": self.in_sync,
            "nackVersion": self.nack_version,
            "nackMessage": self.nack_message,
            "responses": self.responses,
            "acks": self.acks,
            "nacks": self.nacks,
            "resources": len(self.holding),
            "refused": len(self.refused),
        }


NO_USES: Mapping[str, frozenset[str]] = _EMPTY


def uses_of(
    resources: Iterable[Encoded], uses: Mapping[str, frozenset[str]] | None
) -> Mapping[str, frozenset[str]]:
    """What `resources` use of a type's `uses` (the snapshot's), for a pending response; the
    one shared empty map when nothing (most responses), so a stream keeps no dict per response."""
    if not uses:
        return NO_USES
    return {r.name: uses[r.name] for r in resources if r.name in uses} or NO_USES


class Pending:
    """The one response of a type that the client has not answered yet (rule 26): nothing more
    of that type is sent until it does, so an ACK or NACK always speaks of the latest response
    and what the client holds is known exactly.

    Every stream holds one per response until its answer comes, across a whole fan-out, so it
    is kept small: the sets of its names are made only when first asked (a route or listener
    checked while clusters are on their way, `_ready`), which most responses never are."""

    __slots__ = ("_name_set", "_removed_set", "nonce", "sent", "uses")

    def __init__(
        self, nonce: str, sent: Sent, uses: Mapping[str, frozenset[str]] = NO_USES
    ) -> None:
        self.nonce = nonce
        self.sent = sent
        # Listeners and routes: the clusters each resource of the response uses.
        self.uses = uses
        self._name_set: frozenset[str] | None = None
        self._removed_set: frozenset[str] | None = None

    def names(self) -> frozenset[str]:
        if self._name_set is None:
            self._name_set = frozenset(self.sent.names)
        return self._name_set

    def removes(self, name: str) -> bool:
        if not self.sent.removed:
            return False
        if self._removed_set is None:
            self._removed_set = frozenset(self.sent.removed)
        return name in self._removed_set

    def keep(self, held: Held, uses: dict[str, frozenset[str]], res: Encoded) -> None:
        """The client accepted `res` of this response: it holds it, and what it uses."""
        held.put(res.name, res)
        used = self.uses.get(res.name)
        if used is not None:
            uses[res.name] = used
        elif uses:
            uses.pop(res.name, None)


class Sending:
    """What a Delta client will hold of a type once it takes the response on its way: what it
    holds, with the response's resources and without its removals. Asked per name, so that
    checking each route does not copy every cluster name."""

    __slots__ = ("_held", "_pending")

    def __init__(self, held: Held, pending: Pending) -> None:
        self._held, self._pending = held, pending

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        pending = self._pending
        if pending.removes(name):
            return False
        return name in pending.names() or name in self._held


def clusters_ready(
    clusters: Collection[str],
    *,
    subscribed: Container[str] | None,
    available: Container[str],
    sent: Container[str],
    warming: Container[str],
) -> bool:
    """Whether a route or listener using `clusters` may go out now (rules 13 and 14): every one
    of them the client will be sent without the route (`subscribed`: the names it asks for, or
    None when it asks for none; a wildcard subscription contains every name) has been sent, and
    its assignment after it. A client that asks for clusters only once a route names them
    (gRPC) gets the route first: waiting would deadlock it."""
    if subscribed is None:
        return True
    return all(
        c in sent and c not in warming for c in clusters if c in available and c in subscribed
    )


class Warming:
    """Clusters sent to a client that did not have them, until it accepts an assignment sent
    after them (rule 14): until then they are warming there, and a route naming one would fail
    its requests, so it waits."""

    def __init__(self) -> None:
        self._clusters: dict[str, tuple[str, int]] = {}

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._clusters

    def __bool__(self) -> bool:
        return bool(self._clusters)

    def start(self, cluster: str, eds_name: str, nonce: str) -> None:
        self._clusters[cluster] = (eds_name, int(nonce))

    def stop(self, cluster: str) -> None:
        self._clusters.pop(cluster, None)

    def accepted(self, assignments: Collection[str], nonce: str) -> None:
        """The client accepted the response `nonce`, carrying these assignments."""
        sent = int(nonce)
        # A new dict, not deletions: a dict keeps the table it grew to (every cluster warms
        # once at the start of a stream), and this one lives as long as the stream.
        self._clusters = {
            cluster: (eds_name, since)
            for cluster, (eds_name, since) in self._clusters.items()
            if not (since < sent and eds_name in assignments)
        }


def news(state: Any, changes: Collection[str] | None) -> bool:
    """Whether a type has something to send: its snapshot changed since it last looked
    (`changes`; None when unknown), or its client asked for more."""
    asked = state.recheck or any(n in state.names for n in state.forced)
    return changes is None or bool(changes) or asked


def anything_left(types: Mapping[str, Any], snapshot: Snapshot, *, resuming: bool) -> bool:
    """Whether an answer (or anything but a new snapshot) may let more go on `snapshot`: a
    client still saying what it holds (`resuming`), a requested type not looked at on it (held
    back by an unanswered response, rule 26), or one whose state says something is left
    (`left()`: names forced or held back by make before break, rule 13, a subscription or a
    first answer not looked at). Otherwise every type has nothing to send on `snapshot`, and an
    ACK that changes no subscription need not wake the writer."""
    if resuming:
        return True
    versions = snapshot.versions
    for type_url, state in types.items():  # a loop, not any(): it runs on every look
        if state.requested and (state.checked != versions.get(type_url, "") or state.left()):
            return True
    return False


S = TypeVar("S")


def free_to_send(types: Mapping[str, S], snapshot: Snapshot) -> Iterator[tuple[str, S]]:
    """The requested types that may respond now, in rule-13 order. What comes earlier in a push
    goes first, so a type that has news but waits for an answer (rule 26) holds back the types
    after it. The caller responds for each before asking for the next."""
    held_back = False
    for type_url in typeurls.ORDER:
        state: Any = types[type_url]
        if not state.requested:
            continue
        if state.pending is not None:
            held_back = held_back or news(state, snapshot.changes_since(type_url, state.checked))
            continue
        if not held_back:
            yield type_url, types[type_url]


class Everything:
    """The names a wildcard subscription covers: all of them."""

    def __contains__(self, name: object) -> bool:
        return True


# One counter for every stream of the process, from a random start: a stream's nonces increase
# (`Warming` compares them), and a nonce a client carries over from its previous stream, or from
# another replica, is never one this stream sent (rule 2). With a counter per stream, every
# stream's first nonce was "1": a raw client repeating its old stream's last nonce on the new
# one was taken to accept a response it had not seen.
_NONCES = itertools.count(random.randrange(1 << 32, 1 << 48))


class Nonces:
    """A stream's nonces: fresh on the stream and, as far as can be, on any other."""

    def next(self) -> str:
        return str(next(_NONCES))
