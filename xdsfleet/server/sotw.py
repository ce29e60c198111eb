"""The state-of-the-world protocol of one ADS stream, as pure code.

Feed it requests (`on_request`) and ask it what to send for a snapshot (`next_responses`); it
does no I/O, so every rule of docs/xds-protocol.md is a table test away. Rule numbers below
refer to that file.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoded, set_version
from xdsfleet.cache.snapshot import Snapshot, empty_assignment
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
    ever_named: bool = False
    names: set[str] = field(default_factory=set)
    latest_nonce: str = ""
    # What the client was last sent, by name: our view of what it holds.
    sent: dict[str, Encoded] = field(default_factory=dict)
    sent_set: str | None = None  # full-state types: the set version last sent
    forced: set[str] = field(default_factory=set)
    force_all: bool = False
    rejected: set[tuple[str, str]] = field(default_factory=set)  # (name, version)
    rejected_sets: set[str] = field(default_factory=set)
    # The snapshot version of the type last looked at, and the names last requested, so that
    # unchanged types and repeated requests cost next to nothing.
    checked: str | None = None
    last_request: tuple[str, ...] | None = None
    recheck: bool = False  # the subscription changed: look at every name once
    status: TypeStatus = field(default_factory=TypeStatus)


@dataclass(frozen=True, slots=True)
class _Plan:
    type_url: str
    version: str
    resources: tuple[Encoded, ...]
    removed: tuple[str, ...] = ()


class SotwStream:
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
        nonce = request.response_nonce
        nack = request.HasField("error_detail")
        sent = self._inflight.pop(nonce) if nonce else None
        if nonce and nonce != state.latest_nonce:
            # Rule 3: stale: nothing is sent for it. What it says of an older response is still
            # true, though: record its NACK (rule 6) or ACK, or status lags under churn.
            if sent is not None and nack:
                self._reject(state, sent, request)
            elif sent is not None:
                state.status.accept(sent, full_state=type_url in typeurls.FULL_STATE)
            return RequestResult(Outcome.STALE, type_url, request.version_info)
        # A request echoing a nonce already answered only changes the subscription: Envoy sends
        # one whenever its set of names changes between responses.
        result = RequestResult(Outcome.SUBSCRIBE, type_url)
        if sent is not None and nack:
            # Rule 5: a NACK is an error_detail, whatever version it carries.
            self._reject(state, sent, request)
            result = RequestResult(
                Outcome.NACK, type_url, request.version_info, request.error_detail.message
            )
        elif sent is not None:
            state.status.accept(sent, full_state=type_url in typeurls.FULL_STATE)
            result = RequestResult(Outcome.ACK, type_url, request.version_info)
        self._subscribe(type_url, state, list(request.resource_names))
        return result

    def _reject(self, state: _TypeState, sent: Sent, request: Any) -> None:
        # Rule 6: never send these versions again; the next change gets through.
        state.rejected.update((r.name, r.version) for r in sent.resources)
        if sent.type_url in typeurls.FULL_STATE:
            state.rejected_sets.add(sent.version)
        state.status.refuse(sent, request.error_detail.message)

    def _subscribe(self, type_url: str, state: _TypeState, resource_names: list[str]) -> None:
        requested = tuple(resource_names)
        if requested == state.last_request:
            return  # an ACK of an unchanged subscription: most requests are
        state.last_request = requested
        state.recheck = True
        names = set(requested)
        star = "*" in names
        names.discard("*")
        if not state.requested:
            wildcard = star or not names
        else:
            # Rule 9: an empty list keeps the legacy wildcard only on a stream that never named
            # anything; after an explicit name it means "nothing".
            wildcard = star or (not names and state.wildcard and not state.ever_named)
        if wildcard and not state.wildcard:
            state.force_all = True
        # Rule 8: newly requested names are sent even if unchanged.
        state.forced |= names - state.names
        if type_url not in typeurls.FULL_STATE and not wildcard:
            for gone in state.names - names:
                # Forget it, so that asking again later gets it again.
                state.sent.pop(gone, None)
                state.status.forget(gone)
        state.requested = True
        state.wildcard = wildcard
        state.ever_named = state.ever_named or bool(names)
        state.names = names

    # Responses

    def next_responses(self, snapshot: Snapshot) -> list[Response]:
        """What to send now, in rule-13 order. Removed clusters stay in the first CDS response
        while listeners and routes stop using them, and go in a last one (make before break)."""
        out: list[Response] = []
        cds = self._plan(typeurls.CLUSTER, snapshot)
        two_phase = bool(cds and cds.removed) and bool(
            self._plan(typeurls.LISTENER, snapshot) or self._plan(typeurls.ROUTE, snapshot)
        )
        if two_phase and cds is not None:
            cds = self._plan(typeurls.CLUSTER, snapshot, retain=cds.removed)
        if cds is not None:
            out.append(self._commit(cds, snapshot))
        # Every other type in rule-13 order (ORDER starts with CDS, sent above).
        for type_url in typeurls.ORDER[1:]:
            plan = self._plan(type_url, snapshot)
            if plan is not None:
                out.append(self._commit(plan, snapshot))
        if two_phase:
            plan = self._plan(typeurls.CLUSTER, snapshot)
            if plan is not None:
                out.append(self._commit(plan, snapshot))
        for type_url, state in self._types.items():
            if state.requested:
                state.checked = snapshot.versions.get(type_url, "")
                state.force_all = state.recheck = False
        return out

    def _plan(
        self, type_url: str, snapshot: Snapshot, retain: tuple[str, ...] = ()
    ) -> _Plan | None:
        state = self._types[type_url]
        if not state.requested:
            return None
        available = snapshot.of(type_url)
        recheck = state.force_all or state.recheck
        changes = None if recheck else snapshot.changes_since(type_url, state.checked)
        if type_url in typeurls.FULL_STATE:
            if changes is not None and not changes and not state.forced and not retain:
                return None
            return self._plan_full(type_url, state, available, retain)
        wanted: Collection[str] = available.keys() if state.wildcard else state.names
        if changes is not None:
            wanted = {n for n in changes | state.forced if n in wanted}
        resources = []
        for name in sorted(wanted):
            res = available.get(name)
            if res is None:
                if type_url != typeurls.ENDPOINT or name in state.sent:
                    # Known before and gone now: its cluster is on its way out.
                    continue
                res = empty_assignment(name)  # rule 15
            previous = state.sent.get(name)
            unchanged = previous is not None and previous.version == res.version
            if (unchanged and name not in state.forced) or (name, res.version) in state.rejected:
                continue
            resources.append(res)
        if not resources:
            return None
        return _Plan(type_url, snapshot.versions.get(type_url, ""), tuple(resources))

    @staticmethod
    def _plan_full(
        type_url: str,
        state: _TypeState,
        available: Any,
        retain: tuple[str, ...],
    ) -> _Plan | None:
        wanted = set(available) if state.wildcard else state.names & set(available)
        resources = [available[name] for name in wanted]
        resources += [state.sent[name] for name in retain if name in state.sent]
        resources.sort(key=lambda r: r.name)
        version = set_version(resources)
        unchanged = version == state.sent_set and not state.force_all
        if unchanged or version in state.rejected_sets:
            return None
        removed = tuple(sorted(state.sent.keys() - {r.name for r in resources}))
        return _Plan(type_url, version, tuple(resources), removed)

    def _commit(self, plan: _Plan, snapshot: Snapshot) -> Response:
        state = self._types[plan.type_url]
        nonce = self._nonces.next()
        if plan.type_url == typeurls.CLUSTER:
            # Rule 14: a changed cluster warms only on a fresh assignment, changed or not.
            endpoints = self._types[typeurls.ENDPOINT]
            for res in plan.resources:
                previous = state.sent.get(res.name)
                eds_name = snapshot.eds_names.get(res.name)
                if eds_name and (previous is None or previous.version != res.version):
                    endpoints.forced.add(eds_name)
        if plan.type_url in typeurls.FULL_STATE:
            state.sent = {r.name: r for r in plan.resources}
            state.sent_set = plan.version
        else:
            state.sent.update((r.name, r) for r in plan.resources)
        state.forced.difference_update(r.name for r in plan.resources)
        state.latest_nonce = nonce
        state.status.sent_version = plan.version
        state.status.sent_nonce = nonce
        state.status.responses += 1
        self._inflight.add(nonce, Sent(plan.type_url, plan.version, plan.resources, plan.removed))
        return Response(plan.type_url, nonce, plan.version, plan.resources, plan.removed)
