"""The incremental (Delta) protocol of one ADS stream, as pure code.

Same shape as `sotw.SotwStream`: requests in, responses out, no I/O. The client's holdings are
tracked per resource, so only what changed is sent and deletions are explicit.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoded
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.server.protocol import (
    Inflight,
    Nonces,
    Outcome,
    RequestResult,
    Response,
    Sent,
    TypeStatus,
)


@dataclass(slots=True)
class _TypeState:
    requested: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    # name -> version the client holds, as far as we know (rule 19 seeds it).
    known: dict[str, str] = field(default_factory=dict)
    # Subscribed names already reported absent (rule 17), so it is said once.
    reported_absent: set[str] = field(default_factory=set)
    forced: set[str] = field(default_factory=set)
    rejected: set[tuple[str, str]] = field(default_factory=set)
    # The snapshot version of the type last looked at; names subscribed since; and whether the
    # subscription changed so much (first request, wildcard) that every name must be looked at.
    checked: str | None = None
    fresh: set[str] = field(default_factory=set)
    recheck: bool = True
    status: TypeStatus = field(default_factory=TypeStatus)


@dataclass(frozen=True, slots=True)
class _DeltaSent(Sent):
    # What the client held before this response, to restore on a NACK.
    previous: tuple[tuple[str, str | None], ...] = ()


class DeltaStream:
    def __init__(self) -> None:
        self._types = {t: _TypeState() for t in typeurls.ORDER}
        self._nonces = Nonces()
        self._inflight = Inflight()

    def status(self) -> dict[str, TypeStatus]:
        return {t: s.status for t, s in self._types.items() if s.requested}

    # Requests

    def on_request(self, request: Any) -> RequestResult:
        type_url = request.type_url
        state = self._types.get(type_url)
        if state is None:
            return RequestResult(Outcome.UNSUPPORTED, type_url)
        # Rule 18: subscription changes count even on a stale nonce.
        self._subscribe(state, request)
        nonce = request.response_nonce
        if not nonce:
            return RequestResult(Outcome.SUBSCRIBE, type_url)
        sent = self._inflight.pop(nonce)
        if sent is None:
            return RequestResult(Outcome.STALE, type_url)
        if request.HasField("error_detail"):
            assert isinstance(sent, _DeltaSent)
            self._reject(state, sent, request.error_detail.message)
            return RequestResult(Outcome.NACK, type_url, sent.version, request.error_detail.message)
        state.status.accept(sent, full_state=False)
        return RequestResult(Outcome.ACK, type_url, sent.version)

    def _subscribe(self, state: _TypeState, request: Any) -> None:
        subscribe = list(request.resource_names_subscribe)
        unsubscribe = list(request.resource_names_unsubscribe)
        if not state.requested:
            # Rule 20: both lists empty on the first request is the legacy wildcard.
            state.wildcard = not subscribe and not unsubscribe
            # Rule 19: what the client already holds from an earlier stream.
            state.known.update(request.initial_resource_versions)
            state.requested = True
        for name in subscribe:
            if name == "*":
                state.wildcard = state.recheck = True
                continue
            state.fresh.add(name)
            if name in state.names:
                # Rule 18: subscribing again asks for the resource again.
                state.forced.add(name)
            state.names.add(name)
            state.reported_absent.discard(name)
        for name in unsubscribe:
            if name == "*":
                state.wildcard = False
            elif name in state.names:
                state.names.discard(name)
                state.known.pop(name, None)
                state.forced.discard(name)
                state.status.forget(name)
            # Unsubscribing a name never subscribed is ignored (rule 18).

    def _reject(self, state: _TypeState, sent: _DeltaSent, message: str) -> None:
        state.rejected.update((r.name, r.version) for r in sent.resources)
        for name, version in sent.previous:
            if version is None:
                state.known.pop(name, None)
            else:
                state.known[name] = version
        state.status.refuse(sent, message)

    # Responses

    def next_responses(self, snapshot: Snapshot) -> list[Response]:
        """What to send now, in rule-13 order. Removals of clusters and their endpoints wait for
        the last responses, after listeners and routes have stopped using them (make before
        break)."""
        held = (typeurls.CLUSTER, typeurls.ENDPOINT)
        passes = [(t, t in held) for t in typeurls.ORDER] + [(t, False) for t in held]
        out = []
        for type_url, hold in passes:
            response = self._respond(type_url, snapshot, hold_removals=hold)
            if response is not None:
                out.append(response)
        for type_url, state in self._types.items():
            if state.requested:
                state.checked = snapshot.versions.get(type_url, "")
                state.recheck = False
                state.fresh.clear()
        return out

    def _respond(
        self, type_url: str, snapshot: Snapshot, *, hold_removals: bool
    ) -> Response | None:
        state = self._types[type_url]
        if not state.requested:
            return None
        available = snapshot.of(type_url)
        changes = None if state.recheck else snapshot.changes_since(type_url, state.checked)
        candidates: Collection[str]
        if changes is None:
            candidates = state.names | state.known.keys()
            if state.wildcard:
                candidates |= available.keys()
        else:
            candidates = changes | state.forced | state.fresh
        changed: list[Encoded] = []
        removed: list[str] = []
        for name in sorted(candidates):
            res = available.get(name)
            if res is None:
                # Rule 17: held by the client and gone (waiting, when asked to, until nothing
                # uses it), or subscribed and never there (said once, at once).
                if name in state.known:
                    if not hold_removals:
                        removed.append(name)
                elif name in state.names and name not in state.reported_absent:
                    removed.append(name)
                continue
            if not (state.wildcard or name in state.names):
                continue
            unchanged = state.known.get(name) == res.version and name not in state.forced
            if unchanged or (name, res.version) in state.rejected:
                continue
            changed.append(res)
        if not changed and not removed:
            return None
        return self._commit(type_url, state, snapshot, changed, removed)

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
            # Rule 14: every changed cluster needs a fresh assignment to leave warming.
            endpoints = self._types[typeurls.ENDPOINT]
            for res in changed:
                eds_name = snapshot.eds_names.get(res.name)
                if eds_name:
                    endpoints.forced.add(eds_name)
        previous = tuple((r.name, state.known.get(r.name)) for r in changed)
        for res in changed:
            state.known[res.name] = res.version
            state.forced.discard(res.name)
        for name in removed:
            state.known.pop(name, None)
            if name in state.names:
                state.reported_absent.add(name)
        version = snapshot.versions.get(type_url, "")
        state.status.sent_version = version
        state.status.sent_nonce = nonce
        state.status.responses += 1
        sent = _DeltaSent(type_url, version, tuple(changed), tuple(removed), previous=previous)
        self._inflight.add(nonce, sent)
        return Response(type_url, nonce, version, tuple(changed), tuple(removed))
