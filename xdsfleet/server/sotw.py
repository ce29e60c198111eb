"""The state-of-the-world protocol of one ADS stream, as pure code.

Feed it requests (`on_request`) and ask it what to send for a snapshot (`next_responses`); it
does no I/O, so every rule of docs/xds-protocol.md is a table test away. Rule numbers below
refer to that page.

At most one response per type is unanswered at a time (rule 26): what the client holds is then
known exactly (its ACK says it took the response, its NACK that it kept what it had), and no
later response can overtake the one a NACK speaks of.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoded, set_version
from xdsfleet.cache.snapshot import Snapshot, empty_assignment
from xdsfleet.cache.uses import USERS
from xdsfleet.server.protocol import (
    LEGACY_WILDCARD,
    NO_NAMES,
    Everything,
    Held,
    Nonces,
    Outcome,
    Pending,
    RequestResult,
    Response,
    Sent,
    TypeStatus,
    Warming,
    anything_left,
    clusters_ready,
    free_to_send,
    in_order,
    shared_names,
    uses_of,
)


@dataclass(slots=True)
class _TypeState:
    requested: bool = False
    wildcard: bool = False
    explicit: bool = False  # ever named a resource, `*` included (rule 9)
    # The names asked for (shared with the streams that ask for the same), `*` left out; and
    # the last request's names, `*` included, to tell an unchanged subscription at once.
    names: frozenset[str] = NO_NAMES
    last_request: frozenset[str] | None = None
    # `names` when the pending response was planned, every name it carries among them (None:
    # planned under a wildcard, which `names` does not hold).
    names_planned: frozenset[str] | None = None
    # What the client holds, by name, as its answers tell; for LDS and CDS, the set's version.
    held: Held = field(default_factory=Held)
    held_set: str | None = None
    uses: dict[str, frozenset[str]] = field(default_factory=dict)  # of held listeners, routes
    # A reconnecting client's `version_info` for a wildcard LDS or CDS (rule 7).
    resumed: str = ""
    # A reconnecting client's first `version_info` of the type (it holds what it got then),
    # looked at once (`SotwStream._learn`): of listeners and routes, those it may hold at a
    # version whose uses are not known here (None: which ones is not known either). Of
    # clusters and assignments, what it holds from before stays known as held until an answer
    # says otherwise, and a NACK does not (rule 6: it kept what it had): assignments unchanged
    # since go in `held` at once; `held_before` names those changed or deleted since (no
    # placeholder replaces them, rule 15), and, asked for by name, the clusters it first asked
    # for (`_resume_clusters` holds each as it departs, for rule 13).
    inherited: str = ""
    learnt: bool = False
    unknown_uses: frozenset[str] | None = NO_NAMES
    held_before: frozenset[str] = NO_NAMES
    pending: Pending | None = None
    latest_nonce: str = ""
    forced: set[str] = field(default_factory=set)
    force_all: bool = False
    # Rule 6: the last rejected version of each name (and of the set, for LDS and CDS): never
    # sent again, forgotten once another version goes out. Bounded by the names subscribed.
    rejected: dict[str, str] = field(default_factory=dict)
    rejected_set: str | None = None
    # Names held back (make before break) or kept for a route: looked at again every time.
    deferred: set[str] = field(default_factory=set)
    # The snapshot version of the type last looked at, so that unchanged types cost nothing.
    checked: str | None = None
    recheck: bool = False  # the subscription changed: look at every name once
    status: TypeStatus = field(default_factory=TypeStatus)

    def left(self) -> bool:
        """Something an answer may let go (`protocol.anything_left`)."""
        return bool(self.forced or self.deferred or self.recheck or self.force_all)

    def __post_init__(self) -> None:
        self.status.holding = self.held


def _answered_for(state: _TypeState, sent: Sent) -> None:
    """The client answered `sent`: the listeners or routes it held from an earlier stream that
    it names (all of them, for a full set or when which ones is not known) no longer wait to be
    learnt."""
    if state.unknown_uses is not None and not state.unknown_uses:
        return  # nothing waits to be learnt (the common case)
    if sent.type_url in typeurls.FULL_STATE or state.unknown_uses is None:
        state.unknown_uses = NO_NAMES
    else:
        state.unknown_uses = state.unknown_uses.difference(sent.names)


@dataclass(slots=True)  # not frozen: made per stream and response (protocol.Response)
class _Plan:
    type_url: str
    version: str
    resources: tuple[Encoded, ...]
    removed: tuple[str, ...] = ()


class SotwStream:
    def __init__(self) -> None:
        self._types = {t: _TypeState() for t in typeurls.ORDER}
        self._nonces = Nonces()
        self._warming = Warming()
        # The client came back holding resources from an earlier stream: until it has said which
        # listeners and routes it holds and what they use is known, no cluster it holds is
        # removed (rule 13), as on a Delta stream.
        self._resuming = False
        self._answered = False
        # Whether something was left for a request to let go of at the last look
        # (`anything_left`): until then, an ACK that changes no subscription has nothing to
        # wake the writer for.
        self._waits = True

    def status(self) -> dict[str, TypeStatus]:
        return {t: s.status for t, s in self._types.items() if s.requested}

    def subscribed(self, type_url: str) -> int:
        """How many names the client asks for of the type (a wildcard counts none)."""
        state = self._types.get(type_url)
        return 0 if state is None else len(state.names)

    # Requests

    def on_request(self, request: Any, same_names: bool = False) -> RequestResult:
        """`same_names`: the request names what the last request of its type named, and its
        `resource_names` were left undecoded (`server/requests.py` tells so from the bytes)."""
        type_url = request.type_url
        state = self._types.get(type_url)
        if state is None:
            return RequestResult(Outcome.UNSUPPORTED, type_url)
        nonce = request.response_nonce
        pending = state.pending
        version = request.version_info
        outcome = Outcome.SUBSCRIBE
        message = ""
        if pending is not None and nonce == pending.nonce:
            state.pending = None
            self._answered = True
            if request.HasField("error_detail"):
                # Rule 5: a NACK is an error_detail, whatever version it carries.
                outcome, message = Outcome.NACK, request.error_detail.message
                self._reject(state, pending, message)
            else:
                outcome = Outcome.ACK
                self._accept(type_url, state, pending)
        elif state.latest_nonce and nonce != state.latest_nonce:
            # Rule 3: written before the client saw our latest response: nothing is sent in
            # reply. Its names still count below: the client will not repeat them.
            outcome = Outcome.STALE
        # A first request may carry a nonce of another stream (a client resuming): it is not
        # stale, nothing was sent on this one.
        first = not state.requested
        if not same_names:
            self._subscribe(type_url, state, request.resource_names)
        if first and state.wildcard and type_url in typeurls.FULL_STATE:
            state.resumed = version
        if first and version:
            state.inherited = version
            self._resuming = True
        if outcome is not Outcome.ACK:
            return RequestResult(
                outcome, type_url, "" if outcome is Outcome.SUBSCRIBE else version, message
            )
        # The ACK of an unchanged subscription with nothing held back: the snapshot last looked
        # at has nothing more for this stream (a new one wakes it anyway).
        wakes = self._waits or state.recheck or bool(state.forced)
        return RequestResult(outcome, type_url, version, wakes=wakes)

    def _accept(self, type_url: str, state: _TypeState, pending: Pending) -> None:
        sent = pending.sent
        if type_url == typeurls.ENDPOINT and self._warming:
            self._warming.accepted(pending.names(), pending.nonce)
        state.status.accept(sent)
        # What a listener or route held from an earlier stream uses is known once it is
        # replaced here.
        _answered_for(state, sent)
        if type_url in typeurls.FULL_STATE:
            state.held.assign_sent(sent)
            state.held_set = sent.version
            state.held_before = NO_NAMES  # the set it holds now is known exactly
            state.uses = dict(pending.uses)
            state.rejected_set = None
            return
        held, rejected, uses = state.held, state.rejected, state.uses
        if not (rejected or uses or pending.uses) and (
            # The subscription unchanged since the response was planned (the same set, as
            # `_subscribe` replaces it) asks for all it carried, without looking at each name.
            state.wildcard
            or state.names is state.names_planned
            or state.names.issuperset(sent.names)
        ):
            # The common case, in one pass. No rebase here: the writer's `follow` does it for
            # the cost of the changes, out of the iterations that read a fan-out's ACKs.
            held.put_sent(sent)
            return
        for res in sent.resources:
            if rejected and rejected.get(res.name) != res.version:
                rejected.pop(res.name, None)
            # Unless the client stopped asking for it meanwhile, and so dropped it.
            if state.wildcard or res.name in state.names:
                pending.keep(held, uses, res)

    def _reject(self, state: _TypeState, pending: Pending, message: str) -> None:
        # Rule 6: the client kept what it had; these versions are not sent again.
        sent = pending.sent
        if sent.type_url in typeurls.FULL_STATE:
            state.rejected_set = sent.version
        else:
            state.rejected.update((r.name, r.version) for r in sent.resources)
        # The client refused what would have told what the old ones use: nothing more can be
        # learnt of those, and waiting would keep every deleted cluster for good.
        _answered_for(state, sent)
        state.status.refuse(sent, message)

    def _subscribe(self, type_url: str, state: _TypeState, resource_names: Any) -> None:
        requested = frozenset(resource_names)
        if requested == state.last_request:
            return  # the same names, or the same in another order
        requested = shared_names(requested)
        state.last_request = requested
        state.recheck = True
        star = "*" in requested
        names = shared_names(requested - {"*"}) if star else requested
        if not state.requested:
            wildcard = star or (not names and type_url in LEGACY_WILDCARD)
        else:
            # Rule 9: an empty list keeps the legacy wildcard only on a stream that never named
            # anything (`*` included); after an explicit name it means "nothing".
            wildcard = star or (not names and state.wildcard and not state.explicit)
        if wildcard and not state.wildcard and state.requested:
            state.force_all = True  # re-subscribing sends everything again (rule 8)
        # Rule 8: newly requested names are sent even if unchanged.
        state.forced |= names - state.names
        if type_url not in typeurls.FULL_STATE and not wildcard:
            for gone in state.held.names() - names:
                # The client drops what it no longer asks for: asking again gets it again.
                state.held.drop(gone)
                state.uses.pop(gone, None)
                state.status.forget(gone)
            dropped = state.names - names
            for gone in dropped:
                state.rejected.pop(gone, None)
                state.forced.discard(gone)
            if state.held_before:
                state.held_before = state.held_before - dropped
        state.requested = True
        state.wildcard = wildcard
        state.explicit = state.explicit or star or bool(names)
        state.names = names

    # Responses

    def next_responses(self, snapshot: Snapshot) -> list[Response]:
        """What to send now, in rule-13 order, one response per type at most and none for a
        type whose last response is unanswered. A route waits for its new clusters to be warm;
        a cluster leaves only once no listener or route the client holds uses it."""
        if self._resuming:
            self._learn(snapshot)
        out: list[Response] = []
        versions = snapshot.versions
        for type_url, state in free_to_send(self._types, snapshot):
            version = versions.get(type_url, "")
            if state.checked == version and not state.left():
                # Quiet: looked at on this version, nothing forced or held back since (most
                # types of most looks: a change touches one type), as `_plan` would find.
                continue
            plan = self._plan(type_url, state, snapshot)
            if plan is not None:
                out.append(self._commit(plan, snapshot))
            state.checked = version
            state.force_all = state.recheck = False
        if not out and self._resuming:
            probe = self._probe()
            if probe is not None:
                out.append(self._commit(probe, snapshot))
        self._waits = anything_left(self._types, snapshot, resuming=self._resuming)
        return out

    def _plan(self, type_url: str, state: _TypeState, snapshot: Snapshot) -> _Plan | None:
        recheck = state.force_all or state.recheck
        changes = None if recheck else snapshot.changes_since(type_url, state.checked)
        if changes is not None and not (changes or state.forced or state.deferred):
            return None  # quiet
        if type_url in typeurls.FULL_STATE:
            return self._plan_full(type_url, state, snapshot)
        state.held.follow(snapshot, type_url)
        available = snapshot.of(type_url)
        wanted: Collection[str] = available.keys() if state.wildcard else state.names
        if changes is not None:
            if state.forced or state.deferred:
                changes = changes | state.forced | state.deferred
            wanted = {n for n in changes if n in wanted}
        order = in_order(wanted, available)
        found = [available.get(name) for name in order]
        if not (state.forced or state.rejected or snapshot.uses.get(type_url)) and (
            None not in found
        ):
            # Nothing forced or refused, nothing waits on clusters, every name is there: what
            # differs from what the client holds is all there is to send (a member lost: every
            # assignment, in one pass).
            if state.deferred:
                state.deferred = set()
            changed = state.held.differing(cast(list[Encoded], found))
            if not changed:
                return None
            return _Plan(type_url, snapshot.versions.get(type_url, ""), tuple(changed))
        deferred = set()
        resources = []
        for name, res in zip(order, found, strict=True):
            if res is None:
                if type_url != typeurls.ENDPOINT or name in state.held or name in state.held_before:
                    # Known before and gone now: its cluster is on its way out.
                    continue
                res = empty_assignment(name)  # rule 15
            if name not in state.forced:
                previous = state.held.get(name)
                refused = state.rejected.get(name)
                if refused == res.version:
                    continue
                # Back to what the client holds: sent again only after a refusal, so that the
                # client's answer closes it (and Envoy's own error state) on both sides.
                if previous is not None and previous.version == res.version and refused is None:
                    continue
            if not self._ready(snapshot.uses.get(type_url, {}).get(name, ()), snapshot):
                deferred.add(name)
                continue
            resources.append(res)
        state.deferred = deferred
        if not resources:
            return None
        return _Plan(type_url, snapshot.versions.get(type_url, ""), tuple(resources))

    def _plan_full(self, type_url: str, state: _TypeState, snapshot: Snapshot) -> _Plan | None:
        available = snapshot.of(type_url)
        uses = snapshot.uses.get(type_url, {})
        if type_url == typeurls.CLUSTER and state.inherited and state.held_set is None:
            self._resume_clusters(state, snapshot)
        wanted = available.keys() if state.wildcard else state.names & available.keys()
        chosen: dict[str, Encoded] = {}
        deferred = set()
        # A client back from an earlier stream may hold listeners this one has not answered yet.
        unknown = bool(state.inherited) and state.held_set is None
        for name in wanted:
            if name in uses and not self._ready(uses[name], snapshot):
                # A listener whose new clusters are not warm yet keeps its old version.
                deferred.add(name)
                kept = state.held.get(name)
                if kept is not None:
                    chosen[name] = kept
                elif unknown:
                    # Which version the client holds is not known here: leaving it out would
                    # remove it (a full set), so nothing of the type goes until it can.
                    state.deferred = deferred
                    return None
                continue
            chosen[name] = available[name]
        if type_url == typeurls.CLUSTER:
            subscribed = Everything() if state.wildcard else state.names
            gone = [(n, r) for n, r in state.held.items() if n not in chosen and n in subscribed]
            if gone:
                # Rule 13: a deleted cluster stays while a listener or route the client holds
                # (or is being sent) uses it.
                in_use = self._in_use()
                for name, res in gone:
                    if name in in_use:
                        deferred.add(name)
                        chosen[name] = res
        state.deferred = deferred
        resources = tuple(sorted(chosen.values(), key=lambda r: r.name))
        version = set_version(resources)
        if state.held_set is None and state.resumed == version:
            # Rule 7: a client back from another replica with this very set holds it already.
            state.held.assign(resources, available)
            state.held_set = version
            state.held_before = NO_NAMES
            state.uses = {r.name: uses[r.name] for r in resources if r.name in uses}
            state.status.resume()
            state.status.acked_version = version
        state.resumed = ""
        if not state.force_all:
            if version == state.rejected_set:
                return None
            if version == state.held_set and state.rejected_set is None:
                return None
        removed = tuple(sorted(state.held.names() - chosen.keys()))
        return _Plan(type_url, version, resources, removed)

    @staticmethod
    def _resume_clusters(state: _TypeState, snapshot: Snapshot) -> None:
        """A client back with clusters from an earlier stream, that has not taken a set here,
        holds those the snapshot's history tells it had and that are deleted since (by the
        set's version for a wildcard, by the names it first asked for otherwise): hold them
        here too, so that rule 13 keeps them while a listener or route the client holds may
        use them, as on a stream that saw them go. Looked at again on every new snapshot: its
        NACK of the set sent here leaves it holding what it had (rule 6)."""
        if not state.learnt:
            state.learnt = True
            if not state.wildcard:
                state.held_before = state.names  # shared, not copied
        names: Collection[str] | None = state.held_before
        if state.wildcard:
            names = snapshot.changes_since(typeurls.CLUSTER, state.inherited)
        if not names:
            return  # the same set, or one the history no longer tells: nothing to keep
        available, departed, held = snapshot.of(typeurls.CLUSTER), snapshot.departed, state.held
        for name in names:
            if name not in available and name in departed and name not in held:
                held.put(name, departed[name])

    @staticmethod
    def _resume_assignments(
        state: _TypeState, available: Mapping[str, Encoded], changes: Collection[str]
    ) -> None:
        names = state.names
        state.held.put_all(available[n] for n in names if n in available and n not in changes)
        state.held.rebase(available, force=True)
        state.held_before = frozenset(n for n in changes if n in names)

    def _learn(self, snapshot: Snapshot) -> None:
        """What a reconnecting client holds from its earlier stream, from the versions its first
        requests carried and the snapshot's history; and whether it has said all it holds."""
        for type_url in (*USERS, typeurls.ENDPOINT):
            state = self._types[type_url]
            if not state.inherited or state.learnt:
                continue
            state.learnt = True
            changes = snapshot.changes_since(type_url, state.inherited)
            if type_url == typeurls.ENDPOINT:
                if changes is not None:
                    # It holds those unchanged since its version as they are now, as if taken
                    # here (so a NACK leaves them held, rule 6), and those changed or deleted
                    # since at a version whose bytes this stream does not have.
                    self._resume_assignments(state, snapshot.of(type_url), changes)
            elif changes is None:
                # Any of them may be at a version whose uses this replica never saw.
                state.unknown_uses = None if state.wildcard else state.names
            else:
                state.unknown_uses = frozenset(
                    n for n in changes if state.wildcard or n in state.names
                )
        listeners, routes = self._types[typeurls.LISTENER], self._types[typeurls.ROUTE]
        if routes.unknown_uses:
            # Routes the client no longer asks for, it dropped.
            routes.unknown_uses = routes.unknown_uses & routes.names
        # A client answers only after its first requests, so by its first answer it has said
        # what it holds; before, once it asked for listeners and for the routes they name.
        said = self._answered or (
            listeners.requested and (routes.requested or not listeners.inherited)
        )
        if said and all(self._types[t].unknown_uses == NO_NAMES for t in USERS):
            self._resuming = False

    def _probe(self) -> _Plan | None:
        """The clusters a resuming client holds, sent again so that its answer tells its first
        requests are all in: only when clusters are kept for that and nothing is on its way (a
        client that holds no routes, or whose routes are all current, would otherwise never
        say)."""
        cds = self._types[typeurls.CLUSTER]
        if self._answered or not cds.deferred or cds.held_set is None:
            return None
        if any(s.pending is not None for s in self._types.values()):
            return None
        resources = tuple(sorted((r for _, r in cds.held.items()), key=lambda r: r.name))
        return _Plan(typeurls.CLUSTER, cds.held_set, resources)

    def _ready(self, clusters: Collection[str], snapshot: Snapshot) -> bool:
        if not clusters:
            return True
        cds = self._types[typeurls.CLUSTER]
        subscribed: Container[str] | None = None
        if cds.requested:
            subscribed = Everything() if cds.wildcard else cds.names
        # What the client will hold once it takes the response on its way, if any.
        sent: Container[str] = cds.held if cds.pending is None else cds.pending.names()
        return clusters_ready(
            clusters,
            subscribed=subscribed,
            available=snapshot.of(typeurls.CLUSTER),
            sent=sent,
            warming=self._warming,
        )

    def _in_use(self) -> Container[str]:
        """The clusters that the listeners and routes the client holds or is being sent use
        (any, while what those held from an earlier stream use is not known)."""
        if self._resuming:
            return Everything()
        used: set[str] = set()
        for type_url in (typeurls.LISTENER, typeurls.ROUTE):
            state = self._types[type_url]
            for clusters in state.uses.values():
                used |= clusters
            if state.pending is not None:
                for clusters in state.pending.uses.values():
                    used |= clusters
        return used

    def _commit(self, plan: _Plan, snapshot: Snapshot) -> Response:
        state = self._types[plan.type_url]
        nonce = self._nonces.next()
        if plan.type_url == typeurls.CLUSTER:
            self._clusters_sent(state, plan, snapshot.eds_names, nonce)
        if state.forced:
            state.forced.difference_update(r.name for r in plan.resources)
            if not state.forced:
                state.forced = set()  # a set keeps the table it grew to: let it go
        state.latest_nonce = nonce
        state.names_planned = None if state.wildcard else state.names
        state.status.sent_version = plan.version
        state.status.sent_nonce = nonce
        state.status.responses += 1
        source = snapshot.of(plan.type_url)
        state.pending = Pending(
            nonce,
            Sent.of(
                plan.type_url,
                plan.version,
                plan.resources,
                plan.removed,
                source,
                snapshot.versions.get(plan.type_url, ""),
            ),
            uses_of(plan.resources, snapshot.uses.get(plan.type_url)),
        )
        return Response(plan.type_url, nonce, plan.version, plan.resources, plan.removed)

    def _clusters_sent(
        self, state: _TypeState, plan: _Plan, eds_names: Mapping[str, str], nonce: str
    ) -> None:
        # Rule 14: a changed cluster warms only on a fresh assignment, changed or not; a new one
        # is not ready for routes until then.
        endpoints = self._types[typeurls.ENDPOINT]
        for res in plan.resources:
            previous = state.held.get(res.name)
            eds_name = eds_names.get(res.name)
            if eds_name and (previous is None or previous.version != res.version):
                endpoints.forced.add(eds_name)
                if previous is None:
                    self._warming.start(res.name, eds_name, nonce)
        for name in plan.removed:
            self._warming.stop(name)
