"""A Delta request the reader tells changes no subscription (`requests.read_delta`) is taken by
the machine without reading its names again: it must be taken exactly as one read in full.

Hypothesis drives two Delta machines through the same requests, one told by the reader and
one not, mixing what clients send: ACKs and NACKs alone, ACKs that subscribe or unsubscribe at
the same time, subscriptions with no nonce or a stale one, a first request carrying another
stream's nonce, and new snapshots between, of assignments and of clusters (whose empty first
request is the legacy wildcard). Each request's outcome, and every response either sends, must
be the same.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from snapshots import assignment, cluster, delta_request

from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import RequestResult, Response
from xdsfleet.server.requests import read_delta

NAMES = ("a", "b", "c", "d")
ANSWERS = ("none", "ack", "nack", "stale")
STEPS = st.lists(
    st.tuples(
        st.sampled_from(ANSWERS),
        st.lists(st.sampled_from((*NAMES, "*")), max_size=2),  # subscribed
        st.lists(st.sampled_from((*NAMES, "*")), max_size=2),  # unsubscribed
        st.dictionaries(st.sampled_from(NAMES), st.integers(0, 2)),  # a new snapshot, if any
    ),
    max_size=25,
)


def _shown(responses: list[Response]) -> list[tuple[Any, ...]]:
    """A response as a client sees it, but its nonce (each machine has its own)."""
    return [
        (r.type_url, r.version, [(x.name, x.version) for x in r.resources], r.removed)
        for r in responses
    ]


def _result(result: RequestResult) -> tuple[Any, ...]:
    return (result.outcome, result.type_url, result.version, result.message, result.wakes)


@settings(max_examples=300, deadline=None)
@given(
    type_url=st.sampled_from((ENDPOINT, CLUSTER)),  # CDS: an empty first request is a wildcard
    first=st.lists(st.sampled_from((*NAMES, "*")), max_size=3),
    resumed=st.booleans(),
    steps=STEPS,
)
def test_a_request_told_unchanged_by_the_reader_is_taken_as_one_read_in_full(
    type_url: str,
    first: list[str],
    resumed: bool,
    steps: list[tuple[str, list[str], list[str], dict[str, int]]],
) -> None:
    encoder = Encoder()

    def snapshot(world: dict[str, int], before: Snapshot | None) -> Snapshot:
        def message(name: str, version: int) -> Any:
            if type_url == CLUSTER:
                return cluster(name, timeout_ms=1000 + version)
            return assignment(name, f"10.0.{version}.1")

        resources = {type_url: {n: message(n, v) for n, v in sorted(world.items())}}
        if type_url == CLUSTER:  # each cluster's assignment, unchanged
            resources[ENDPOINT] = {n: assignment(n, "10.0.0.1") for n in sorted(world)}
        built = build_snapshot(resources, encoder)
        return built if before is None else built.after(before)

    told, plain = DeltaStream(), DeltaStream()
    nonces = {id(told): "", id(plain): ""}
    stale = {id(told): "", id(plain): ""}
    current = snapshot({"a": 0, "b": 0}, None)

    def take(request: Any, machine: DeltaStream, reader: bool) -> tuple[Any, ...]:
        if reader:
            return _result(machine.on_request(*read_delta(request)))
        return _result(machine.on_request(request))

    for machine, reader in ((told, True), (plain, False)):
        # A client back from another stream may carry that stream's last nonce.
        take(delta_request(type_url, first, nonce="7" if resumed else ""), machine, reader)
    for answer, subscribe, unsubscribe, world in steps:
        if world:
            current = snapshot(world, current)
        sent = []
        for machine in (told, plain):
            responses = machine.next_responses(current)
            sent.append(_shown(responses))
            if responses:
                stale[id(machine)] = nonces[id(machine)] or responses[-1].nonce
                nonces[id(machine)] = responses[-1].nonce
        assert sent[0] == sent[1]
        taken = []
        for machine, reader in ((told, True), (plain, False)):
            nonce = {"none": "", "stale": stale[id(machine)]}.get(answer, nonces[id(machine)])
            error = "refused" if answer == "nack" else None
            request = delta_request(type_url, subscribe, unsubscribe, nonce=nonce, error=error)
            taken.append(take(request, machine, reader))
        assert taken[0] == taken[1]
    assert _shown(told.next_responses(current)) == _shown(plain.next_responses(current))


def test_a_request_naming_what_it_holds_or_answering_nothing_is_not_told_unchanged() -> None:
    # The machine ignores initial_resource_versions once a type is requested, so only this
    # tells the reader's clause apart: a request told unchanged skips the size check.
    assert read_delta(delta_request(ENDPOINT, nonce="n"))[1] is True
    assert read_delta(delta_request(ENDPOINT, nonce="n", initial={"a": "1"}))[1] is False
    assert read_delta(delta_request(ENDPOINT, ["a"], nonce="n"))[1] is False
    assert read_delta(delta_request(ENDPOINT, (), ["a"], nonce="n"))[1] is False
    assert read_delta(delta_request(ENDPOINT))[1] is False  # no nonce: answers nothing
