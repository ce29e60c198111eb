"""The incremental (Delta) protocol of one ADS stream, as pure code.

Same shape as `sotw.SotwStream`: requests in, responses out, no I/O. The client's holdings are
tracked per resource, so only what changed is sent and deletions are explicit. As in SotW, at
most one response per type is unanswered (rule 26), so a NACK never rewinds past a later
response and what the client holds is known exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Container
from dataclasses import dataclass, field
from typing import Any, cast

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoded
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.uses import USERS
from xdsfleet.server.protocol import (
    LEGACY_WILDCARD,
    Everything,
    Held,
    Nonces,
    Outcome,
    Pending,
    RequestResult,
    Response,
    Sending,
    Sent,
    Subscribed,
    TypeStatus,
    Warming,
    anything_left,
    clusters_ready,
    free_to_send,
    in_order,
    uses_of,
)

# In `rejected`: the client refused a response that removed the name.
_REMOVAL = "\0removal"


@dataclass(slots=True)
class _TypeState:
    requested: bool = False
    wildcard: bool = False
    # Shared with the streams that subscribed to the same names (`protocol.Subscribed`).
    names: Subscribed = field(default_factory=Subscribed)
    # What the client holds, as its answers tell (rule 19 seeds it with versions only).
    held: Held = field(default_factory=Held)
    uses: dict[str, frozenset[str]] = field(default_factory=dict)  # of held listeners, routes
    # Listeners and routes held from an earlier stream, until their version is seen here.
    unknown_uses: set[str] = field(default_factory=set)
    pending: Pending | None = None
    # Subscribed names already reported absent (rule 17), so it is said once.
    reported_absent: set[str] = field(default_factory=set)
    forced: set[str] = field(default_factory=set)
    # Rule 6: the last rejected version of each name, forgotten once another goes out.
    rejected: dict[str, str] = field(default_factory=dict)
    deferred: set[str] = field(default_factory=set)  # held back (make before break)
    answer_first: bool = False  # rule 20: the first wildcard request is answered, even empty
    # The snapshot version of the type last looked at; names subscribed since; and whether the
    # subscription changed so much (first request, wildcard) that every name must be looked at.
    checked: str | None = None
    fresh: set[str] = field(default_factory=set)
    recheck: bool = True
    status: TypeStatus = field(default_factory=TypeStatus)

    def left(self) -> bool:
        """Something an answer may let go (`protocol.anything_left`)."""
        return bool(self.forced or self.fresh or self.deferred or self.recheck or self.answer_first)

    def __post_init__(self) -> None:
        self.status.holding = self.held


def _resumed(type_url: str, name: str, version: str) -> Encoded:
    """What a reconnecting client says it holds (rule 19): a version, never sent back."""
    return Encoded(type_url, name, version, b"", b"", b"", 0)


class DeltaStream:
    def __init__(self) -> None:
        self._types = {t: _TypeState() for t in typeurls.ORDER}
        self._nonces = Nonces()
        self._warming = Warming()
        # The assignment each cluster sent uses, so that it is removed after the cluster: only
        # those named otherwise than their cluster (`_in_use` counts every cluster's own name).
        self._eds_of: dict[str, str] = {}
        # The client came back holding resources: until it has said which listeners and routes
        # it holds (rule 19) and what they use is known, no cluster is removed (rule 13).
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
        """`same_names`: the request subscribes, unsubscribes and says it holds nothing, as the
        reader told (`requests.read_delta`), so those fields need not be read again."""
        type_url = request.type_url
        state = self._types.get(type_url)
        if state is None:
            return RequestResult(Outcome.UNSUPPORTED, type_url)
        if not (same_names and state.requested):
            # Rule 18: subscription changes count even on a stale nonce.
            self._subscribe(type_url, state, request)
        nonce = request.response_nonce
        pending = state.pending
        if not nonce:
            return RequestResult(Outcome.SUBSCRIBE, type_url)
        if pending is None or nonce != pending.nonce:
            return RequestResult(Outcome.STALE, type_url)
        state.pending = None
        self._answered = True
        sent = pending.sent
        if request.HasField("error_detail"):
            # The client kept what it had; these versions are not sent again (rule 6).
            state.rejected.update((r.name, r.version) for r in sent.resources)
            state.rejected.update((name, _REMOVAL) for name in sent.removed)
            state.status.refuse(sent, request.error_detail.message)
            return RequestResult(Outcome.NACK, type_url, sent.version, request.error_detail.message)
        state.status.accept(sent)
        if type_url == typeurls.ENDPOINT and self._warming:
            self._warming.accepted(pending.names(), pending.nonce)
        held, rejected, uses = state.held, state.rejected, state.uses
        if not (rejected or uses or pending.uses or state.unknown_uses) and (
            state.wildcard or state.names.issuperset(sent.names)
        ):
            # The common case, in one pass.
            held.put_sent(sent)
        else:
            self._accept_each(state, pending)
        for name in sent.removed:
            held.drop(name)
            state.uses.pop(name, None)
            state.rejected.pop(name, None)
            state.unknown_uses.discard(name)
            if type_url == typeurls.CLUSTER:
                # Its assignment may go now (not before: the client may refuse to let it go).
                self._eds_of.pop(name, None)
        # The ACK of an unchanged subscription with nothing held back: the snapshot last looked
        # at has nothing more for this stream (a new one wakes it anyway).
        wakes = self._waits or (
            not same_names
            and bool(request.resource_names_subscribe or request.resource_names_unsubscribe)
        )
        return RequestResult(Outcome.ACK, type_url, sent.version, wakes=wakes)

    @staticmethod
    def _accept_each(state: _TypeState, pending: Pending) -> None:
        held, rejected, uses = state.held, state.rejected, state.uses
        for res in pending.sent.resources:
            if rejected and rejected.get(res.name) != res.version:
                rejected.pop(res.name, None)
            if state.unknown_uses:
                state.unknown_uses.discard(res.name)
            # Unless the client stopped asking for it meanwhile, and so dropped it.
            if state.wildcard or res.name in state.names:
                pending.keep(held, uses, res)

    def _subscribe(self, type_url: str, state: _TypeState, request: Any) -> None:
        subscribe = request.resource_names_subscribe
        unsubscribe = request.resource_names_unsubscribe
        if not state.requested:
            # Rule 20: both lists empty on the first request is the legacy wildcard.
            legacy = not subscribe and not unsubscribe and type_url in LEGACY_WILDCARD
            state.wildcard = legacy or "*" in subscribe
            # Rule 19: what the client already holds from an earlier stream.
            for name, version in request.initial_resource_versions.items():
                state.held.put(name, _resumed(type_url, name, version))
            if state.held:
                state.status.resume()
                self._resuming = True
                if type_url in USERS:
                    state.unknown_uses.update(state.held)
            # Rule 20; a client that holds some already has had its first answer.
            fresh = not state.held
            state.answer_first = fresh and state.wildcard and type_url in typeurls.FULL_STATE
            state.requested = True
        if not subscribe and not unsubscribe:
            return  # an ACK: most requests are
        names = state.names
        for name in subscribe:
            if name == "*":
                state.wildcard = state.recheck = True
                continue
            state.fresh.add(name)
            if name in names:
                # Rule 18: subscribing again asks for the resource again.
                state.forced.add(name)
            else:
                names.add(name)
            state.reported_absent.discard(name)
        for name in unsubscribe:
            if name == "*":
                if state.wildcard and "*" not in subscribe:
                    # The client drops what it held through the wildcard alone, and no removal
                    # is sent for it: forget it too, so that a wildcard asked for again sends
                    # it again.
                    for dropped in [held for held in state.held if held not in names]:
                        self._forget(type_url, state, dropped)
                state.wildcard = False
                state.recheck = True
                continue
            if name not in names:
                continue  # never subscribed: ignored (rule 18)
            names.discard(name)
            state.reported_absent.discard(name)
            state.rejected.pop(name, None)
            if state.wildcard:
                # The client drops its copy, yet the wildcard still covers the name: tell it
                # again what the name is (or that it does not exist).
                state.held.drop(name)
                state.forced.add(name)
                continue
            self._forget(type_url, state, name)
        names.settle()

    def _forget(self, type_url: str, state: _TypeState, name: str) -> None:
        """The client no longer holds `name` nor wants it, without a removal from us."""
        state.held.drop(name)
        state.uses.pop(name, None)
        state.forced.discard(name)
        state.status.forget(name)
        if type_url == typeurls.CLUSTER:
            self._eds_of.pop(name, None)

    # Responses

    def next_responses(self, snapshot: Snapshot) -> list[Response]:
        """What to send now, in rule-13 order, one response per type at most and none for a
        type whose last response is unanswered. A route waits for its new clusters to be warm;
        clusters and assignments leave only once nothing the client holds uses them."""
        if self._resuming:
            self._learn_uses(snapshot)
        out = []
        versions = snapshot.versions
        for type_url, state in free_to_send(self._types, snapshot):
            version = versions.get(type_url, "")
            if state.checked == version and not state.left():
                # Quiet: looked at on this version, nothing forced, fresh or held back since
                # (most types of most looks: a change touches one type), as `_respond` finds.
                continue
            response = self._respond(type_url, state, snapshot)
            if response is not None:
                out.append(response)
            state.checked = version
            state.recheck = False
            if state.fresh:
                state.fresh = set()  # a set keeps the table it grew to: let it go
        self._waits = anything_left(self._types, snapshot, resuming=self._resuming)
        return out

    def _respond(self, type_url: str, state: _TypeState, snapshot: Snapshot) -> Response | None:
        changes = None if state.recheck else snapshot.changes_since(type_url, state.checked)
        if changes is not None and not (
            changes or state.forced or state.fresh or state.deferred or state.answer_first
        ):
            # Nothing changed nor asked for, nothing held back: no name to look at (most types
            # of most looks: a change touches one type).
            return None
        state.held.follow(snapshot, type_url)
        available = snapshot.of(type_url)
        uses = snapshot.uses.get(type_url, {})
        candidates: Collection[str]
        if changes is None:
            candidates = state.names | state.held.names() | state.forced
            if state.wildcard:
                candidates |= available.keys()
        elif state.forced or state.fresh or state.deferred:
            candidates = changes | state.forced | state.fresh | state.deferred
        else:
            candidates = changes
        order = in_order(candidates, available)
        found = [available.get(name) for name in order]
        if not (state.forced or state.rejected or uses) and None not in found:
            # Nothing forced or refused, nothing waits on clusters, every name is there: what
            # differs from what the client holds is all there is to send (a member lost: every
            # assignment, in one pass).
            if state.deferred:
                state.deferred = set()
            present = cast(list[Encoded], found)
            if not state.wildcard:
                names = state.names
                present = [r for r in present if r.name in names]
            changed = state.held.differing(present)
            if not (changed or state.answer_first):
                return None
            return self._commit(type_url, state, snapshot, changed, [])
        changed = []
        removed: list[str] = []
        retried: list[str] = []
        deferred = set()
        in_use: Container[str] | None = None
        for name, res in zip(order, found, strict=True):
            if res is None:
                # Rule 17: held by the client and gone, or subscribed and never there (said
                # once, at once).
                if name in state.held:
                    if in_use is None:
                        in_use = self._in_use(type_url)
                    if name in in_use:
                        deferred.add(name)  # rule 13: something the client holds uses it
                    elif state.rejected.get(name) == _REMOVAL and name not in state.forced:
                        retried.append(name)
                    else:
                        removed.append(name)
                elif (name in state.names or (state.wildcard and name in state.forced)) and (
                    name not in state.reported_absent
                ):
                    removed.append(name)
                continue
            if not (state.wildcard or name in state.names):
                continue
            refused = state.rejected.get(name)
            # Back to what the client holds: sent again only after a refusal, so that the
            # client's answer closes it on both sides.
            held = state.held.version(name)
            known = refused == res.version or (held == res.version and not refused)
            if known and name not in state.forced:
                continue
            if name in uses and not self._ready(uses[name], snapshot):
                deferred.add(name)
                continue
            changed.append(res)
        if changed or removed:
            # A removal the client refused goes again only with something else (rule 6).
            removed += retried
        else:
            deferred.update(retried)
        state.deferred = deferred
        if not (changed or removed or state.answer_first or self._probe(type_url, deferred)):
            return None
        return self._commit(type_url, state, snapshot, changed, removed)

    def _probe(self, type_url: str, deferred: set[str]) -> bool:
        """Whether to send an empty response to a resuming client so that its answer tells the
        first requests are all in (a client with no listeners would otherwise never say):
        only when clusters wait for that and nothing else is on its way."""
        waiting = type_url == typeurls.CLUSTER and bool(deferred) and self._resuming
        idle = all(s.pending is None for s in self._types.values())
        return waiting and not self._answered and idle

    def _ready(self, clusters: Collection[str], snapshot: Snapshot) -> bool:
        cds = self._types[typeurls.CLUSTER]
        subscribed: Container[str] | None = None
        if cds.requested:
            subscribed = Everything() if cds.wildcard else cds.names
        # What the client will hold once it takes the response on its way, if any.
        sent: Container[str] = cds.held if cds.pending is None else Sending(cds.held, cds.pending)
        return clusters_ready(
            clusters,
            subscribed=subscribed,
            available=snapshot.of(typeurls.CLUSTER),
            sent=sent,
            warming=self._warming,
        )

    def _learn_uses(self, snapshot: Snapshot) -> None:
        """What the listeners and routes held from an earlier stream use, where the snapshot
        has their version; and whether the client has said all it holds."""
        for user in USERS:
            state = self._types[user]
            available = snapshot.of(user)
            uses = snapshot.uses.get(user, {})
            for name in list(state.unknown_uses):
                res = available.get(name)
                if name not in state.held or name in state.rejected:
                    # Gone, or the client refused what would have told (its replacement or
                    # removal): nothing more can be learnt, and waiting would keep every
                    # deleted cluster for good.
                    state.unknown_uses.discard(name)
                elif res is not None and res.version == state.held.version(name):
                    state.unknown_uses.discard(name)
                    if name in uses:
                        state.uses[name] = uses[name]
        listeners, routes = self._types[typeurls.LISTENER], self._types[typeurls.ROUTE]
        # A client answers only after its first requests, so by its first answer it has said
        # what it holds; before, until it asked for listeners and for the routes they name.
        said = self._answered or (listeners.requested and (routes.requested or not listeners.held))
        if said and not listeners.unknown_uses and not routes.unknown_uses:
            self._resuming = False

    def _in_use(self, type_url: str) -> Container[str]:
        """What the client holds (or is being sent) that still needs a resource of the type:
        clusters are used by listeners and routes, assignments by clusters."""
        if type_url == typeurls.ENDPOINT:
            # A cluster has an assignment of its own name unless it names another
            # (`eds_cluster_config`, kept in `_eds_of`); one held from an earlier stream (rule
            # 19) was never seen here, so its own name is all there is to go by.
            cds = self._types[typeurls.CLUSTER]
            assignments = set(self._eds_of.values()) | cds.held.names()
            if cds.pending is not None:
                assignments |= cds.pending.names()
            return assignments
        if type_url != typeurls.CLUSTER:
            return ()
        if self._resuming:
            return Everything()
        used: set[str] = set()
        for user in USERS:
            state = self._types[user]
            for clusters in state.uses.values():
                used |= clusters
            if state.pending is not None:
                for clusters in state.pending.uses.values():
                    used |= clusters
        return used

    def _commit(
        self,
        type_url: str,
        state: _TypeState,
        snapshot: Snapshot,
        changed: list[Encoded],
        removed: list[str],
    ) -> Response:
        nonce = self._nonces.next()
        if type_url == typeurls.CLUSTER:
            # Rule 14: every changed cluster needs a fresh assignment to leave warming; a new
            # one is not ready for routes until then.
            endpoints = self._types[typeurls.ENDPOINT]
            for res in changed:
                eds_name = snapshot.eds_names.get(res.name)
                if eds_name:
                    endpoints.forced.add(eds_name)
                    if eds_name != res.name:
                        self._eds_of[res.name] = eds_name
                    elif self._eds_of:
                        self._eds_of.pop(res.name, None)
                    if res.name not in state.held:
                        self._warming.start(res.name, eds_name, nonce)
                elif self._eds_of:
                    self._eds_of.pop(res.name, None)
            for name in removed:
                self._warming.stop(name)
        if state.forced:
            state.forced.difference_update(r.name for r in changed)
            state.forced.difference_update(removed)
            if not state.forced:
                state.forced = set()  # a set keeps the table it grew to: let it go
        if removed:
            state.reported_absent.update(n for n in removed if n in state.names)
        state.answer_first = False
        version = snapshot.versions.get(type_url, "")
        state.status.sent_version = version
        state.status.sent_nonce = nonce
        state.status.responses += 1
        resources, gone = tuple(changed), tuple(removed)
        state.pending = Pending(
            nonce,
            Sent.of(type_url, version, resources, gone, snapshot.of(type_url), version),
            uses_of(resources, snapshot.uses.get(type_url)),
        )
        return Response(type_url, nonce, version, resources, gone)
