"""Request sequences that once broke the protocol machines (issue 8), one test each, driven with
snapshots chained by `Snapshot.after` as the cache chains them."""

from __future__ import annotations

from typing import Any

import pytest
from snapshots import ack, delta_ack, delta_request, request, snapshot
from xds_model import Client, Link, World

from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import Outcome, Response
from xdsfleet.server.sotw import SotwStream


def names(response: Response) -> list[str]:
    return [r.name for r in response.resources]


class Chain:
    """Snapshots as the cache hands them out: each one knows what changed since the last."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Snapshot:
        snap = snapshot(*args, **kwargs)
        self.current = snap if self.current is None else snap.after(self.current)
        return self.current


# Defect 1: a stale request's names were dropped.


def test_sotw_names_of_stale_requests_count() -> None:
    chain = Chain()
    stream = SotwStream()
    stream.on_request(request(ROUTE, ["r0", "r1"]))
    [first] = stream.next_responses(chain({"a": ("1",), "b": ("2",)}, {"r0": "a", "r1": "a"}))
    ack(stream, first, ["r0", "r1"])
    [second] = stream.next_responses(chain({"a": ("1",), "b": ("2",)}, {"r0": "a", "r1": "b"}))
    assert names(second) == ["r1"]
    # Still on the first response, the client drops a listener (and r0), then takes it back.
    stale = stream.on_request(request(ROUTE, ["r1"], nonce=first.nonce))
    stream.on_request(request(ROUTE, ["r0", "r1"], nonce=first.nonce))
    ack(stream, second, ["r0", "r1"])
    [again] = stream.next_responses(chain.current)  # type: ignore[arg-type]
    assert stale.outcome is Outcome.STALE
    assert names(again) == ["r0"]


def test_sotw_name_asked_for_while_pushes_overtake_the_request_is_sent() -> None:
    """The issue's second case. With Envoy's ACKs (which repeat the names) the old machine
    sent `c` too once the pushes stopped; kept as a check of the interleaving."""
    chain = Chain()
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a"]))
    [last] = stream.next_responses(chain({"a": ("10.0.0.0",), "c": ("10.0.0.9",)}))
    sent = set(names(last))
    for push in range(1, 6):
        # The client asks for c echoing the response it has seen, while a push is on its way.
        ack(stream, last, ["a"])
        for response in stream.next_responses(chain({"a": (f"10.0.0.{push}",), "c": ("9",)})):
            stream.on_request(request(ENDPOINT, ["a", "c"], nonce=last.nonce))
            last = response
            sent |= set(names(response))
    ack(stream, last, ["a", "c"])
    for response in stream.next_responses(chain.current):  # type: ignore[arg-type]
        sent |= set(names(response))
    assert "c" in sent


# Defect 2: a NACK blacklisted every (name, version) it carried, for good.


def test_sotw_forced_assignment_goes_out_even_if_that_version_was_refused() -> None:
    chain = Chain()
    stream = SotwStream()
    stream.on_request(request(CLUSTER))
    stream.on_request(request(ENDPOINT, ["a", "b"]))
    for response in stream.next_responses(chain({"a": ("1",), "b": ("2",)})):
        ack(stream, response, ["a", "b"] if response.type_url == ENDPOINT else [])
    [refused] = stream.next_responses(chain({"a": ("3",), "b": ("4",)}))
    stream.on_request(request(ENDPOINT, ["a", "b"], nonce=refused.nonce, error="b is bad"))
    # a's cluster changes: it warms only on a fresh assignment, even the refused one (rule 14).
    cds, eds = stream.next_responses(chain({"a": ("3",), "b": ("4",)}, timeout_ms=2000))
    assert (cds.type_url, eds.type_url) == (CLUSTER, ENDPOINT)
    assert names(eds) == ["a", "b"]


def test_sotw_version_refused_once_is_sent_again_after_another_was_taken() -> None:
    chain = Chain()
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a"]))
    ack(stream, stream.next_responses(chain({"a": ("1",)}))[0], ["a"])
    [bad] = stream.next_responses(chain({"a": ("2",)}))
    stream.on_request(request(ENDPOINT, ["a"], nonce=bad.nonce, error="no"))
    assert stream.next_responses(chain({"a": ("2",)})) == []  # no NACK loop (rule 6)
    ack(stream, stream.next_responses(chain({"a": ("3",)}))[0], ["a"])
    [back] = stream.next_responses(chain({"a": ("2",)}))
    assert back.resources[0].version == bad.resources[0].version


def test_sotw_cluster_set_refused_once_is_sent_again_after_another_was_taken() -> None:
    chain = Chain()
    stream = SotwStream()
    stream.on_request(request(CLUSTER))
    ack(stream, stream.next_responses(chain({"a": ("1",)}))[0])
    [bad] = stream.next_responses(chain({"a": ("1",), "b": ("2",)}))
    stream.on_request(request(CLUSTER, nonce=bad.nonce, error="no"))
    ack(stream, stream.next_responses(chain({"c": ("3",)}))[0])
    [again] = stream.next_responses(chain({"a": ("1",), "b": ("2",)}))
    assert again.version == bad.version


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_refusals_are_remembered_once_per_name(protocol: str) -> None:
    chain = Chain()
    stream: Any = SotwStream() if protocol == "sotw" else DeltaStream()
    stream.on_request(
        request(ENDPOINT, ["a"]) if protocol == "sotw" else delta_request(ENDPOINT, ["a"])
    )
    for version in range(50):
        [response] = stream.next_responses(chain({"a": (f"10.0.0.{version}",)}))
        nack = request(ENDPOINT, ["a"], nonce=response.nonce, error="no")
        if protocol == "delta":
            nack = delta_request(ENDPOINT, nonce=response.nonce, error="no")
        stream.on_request(nack)
    assert len(stream._types[ENDPOINT].rejected) == 1  # bounded by the names, not the NACKs


# Defect 3: a Delta NACK rewound below what the client holds.


def test_delta_nack_never_rewinds_past_a_later_response() -> None:
    chain = Chain()
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a"]))
    [v0] = stream.next_responses(chain({"a": ("0",)}))
    delta_ack(stream, v0)
    [v1] = stream.next_responses(chain({"a": ("1",)}))
    # v2 cannot overtake v1: nothing more of the type until the client answers (rule 26).
    assert stream.next_responses(chain({"a": ("2",)})) == []
    stream.on_request(delta_request(ENDPOINT, nonce=v1.nonce, error="no"))
    [v2] = stream.next_responses(chain.current)  # type: ignore[arg-type]
    delta_ack(stream, v2)
    [back] = stream.next_responses(chain({"a": ("0",)}))
    assert back.resources[0].version == v0.resources[0].version


# Defect 4: Delta left a first wildcard request with nothing to send unanswered.


@pytest.mark.parametrize("type_url", [CLUSTER, LISTENER])
@pytest.mark.parametrize("subscribe", [[], ["*"]])
def test_delta_first_wildcard_request_is_answered_even_empty(
    type_url: str, subscribe: list[str]
) -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(type_url, subscribe))
    [first] = stream.next_responses(snapshot({}))
    assert (first.type_url, first.resources, first.removed) == (type_url, (), ())
    delta_ack(stream, first)
    assert stream.next_responses(snapshot({})) == []


# Defect 5: make before break missed new clusters.


@pytest.mark.parametrize("delta", [False, True])
def test_route_moves_to_a_new_cluster_only_once_it_is_warm(delta: bool) -> None:
    before = World((("a", 0, 0),), (("r", "a", True),))
    after = World((("c", 0, 0),), (("r", "c", True),))
    client = Client(delta=delta)
    link = Link.open(client)
    first = before.snapshot()
    link.settle(first)
    moved = after.snapshot().after(first)
    seen: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for _ in range(20):
        while link.to_server:
            link.deliver_request()
        link.server_writes(moved)
        if not link.to_client:
            break
        while link.to_client:
            response = link.to_client[0]
            seen.append((response.type_url, tuple(names(response)), response.removed))
            link.deliver_response(nack=False)  # the model client checks warming as it goes
    cluster_c = next(i for i, (t, n, _) in enumerate(seen) if t == CLUSTER and "c" in n)
    assignment_c = next(i for i, (t, n, _) in enumerate(seen) if t == ENDPOINT and "c" in n)
    route_c = next(i for i, (t, n, _) in enumerate(seen) if t == ROUTE)
    gone = next(i for i, (t, _, r) in enumerate(seen) if t == CLUSTER and "a" in r)
    assert cluster_c < assignment_c < route_c < gone
    client.check_settled(moved)


# Smaller ones


def test_delta_unsubscribing_a_name_the_wildcard_covers_is_answered() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, ["*"]))
    snap = snapshot({"a": ("1",)})
    delta_ack(stream, stream.next_responses(snap)[0])
    stream.on_request(delta_request(CLUSTER, ["a"]))
    assert stream.next_responses(snap) == []  # held already
    stream.on_request(delta_request(CLUSTER, unsubscribe=["a", "gone"]))
    [restated] = stream.next_responses(snap)
    assert names(restated) == ["a"]


def test_delta_wildcard_dropped_then_asked_again_sends_what_only_it_covered() -> None:
    # Unsubscribing "*" makes the client drop what it held through the wildcard alone (no
    # removal is sent); a wildcard asked for again must send those resources again.
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, ["*", "b"]))
    snap = snapshot({"a": ("1",), "b": ("2",)})
    delta_ack(stream, stream.next_responses(snap)[0])
    stream.on_request(delta_request(CLUSTER, unsubscribe=["*"]))
    assert stream.next_responses(snap) == []  # "b" is still asked for and held
    stream.on_request(delta_request(CLUSTER, ["*"]))
    [again] = stream.next_responses(snap)
    assert names(again) == ["a"]
    assert not again.removed


def test_sotw_star_then_an_empty_list_means_nothing() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER, ["*"]))
    snap = snapshot({"a": ("1",)})
    [first] = stream.next_responses(snap)
    stream.on_request(request(CLUSTER, [], nonce=first.nonce, version=first.version))
    [second] = stream.next_responses(snap)
    assert (names(first), names(second), second.removed) == (["a"], [], ("a",))


def test_sotw_first_request_of_a_type_carrying_a_nonce_is_served() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER))
    stream.on_request(request(ENDPOINT, ["a"], nonce="41", version="from-another-replica"))
    sent = stream.next_responses(snapshot({"a": ("1",)}))
    assert [(r.type_url, names(r)) for r in sent] == [(CLUSTER, ["a"]), (ENDPOINT, ["a"])]


@pytest.mark.parametrize("type_url", [ENDPOINT, ROUTE])
def test_legacy_empty_wildcard_is_only_for_listeners_and_clusters(type_url: str) -> None:
    snap = snapshot({"a": ("1",)}, {"a": "a"})
    sotw = SotwStream()
    sotw.on_request(request(type_url, []))
    delta = DeltaStream()
    delta.on_request(delta_request(type_url))
    assert sotw.next_responses(snap) == []
    assert delta.next_responses(snap) == []


def test_sotw_reconnect_with_the_current_wildcard_version_sends_nothing_again() -> None:
    snap = snapshot({"a": ("1",), "b": ("2",)})
    first = SotwStream()
    first.on_request(request(CLUSTER))
    [held] = first.next_responses(snap)
    current = SotwStream()
    current.on_request(request(CLUSTER, version=held.version))
    older = SotwStream()
    older.on_request(request(CLUSTER, version="0123456789abcdef"))
    assert current.next_responses(snap) == []
    assert [names(r) for r in older.next_responses(snap)] == [["a", "b"]]


def test_a_client_back_with_the_current_config_is_shown_in_sync() -> None:
    snap = snapshot({"a": ("1",)})
    first = DeltaStream()
    first.on_request(delta_request(CLUSTER))
    [held] = first.next_responses(snap)
    delta = DeltaStream()
    delta.on_request(delta_request(CLUSTER, initial={r.name: r.version for r in held.resources}))
    sotw = SotwStream()
    sotw.on_request(request(CLUSTER, version=held.version))
    for stream in (delta, sotw):
        stream.next_responses(snap)
        assert stream.status()[CLUSTER].in_sync
        assert stream.status()[CLUSTER].held == {"a": held.resources[0].version}


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_back_to_what_the_client_holds_after_a_refusal_closes_the_refusal(protocol: str) -> None:
    """The rejected change is undone: the client's copy is current again, but its refusal stays
    on record (ours and Envoy's) unless something is sent and accepted. Sent once, not again."""
    chain = Chain()
    stream: Any = SotwStream() if protocol == "sotw" else DeltaStream()
    stream.on_request(
        request(ENDPOINT, ["a"]) if protocol == "sotw" else delta_request(ENDPOINT, ["a"])
    )

    def answer(response: Response, error: str | None = None) -> None:
        if protocol == "sotw":
            stream.on_request(request(ENDPOINT, ["a"], nonce=response.nonce, error=error))
        else:
            stream.on_request(delta_request(ENDPOINT, nonce=response.nonce, error=error))

    [good] = stream.next_responses(chain({"a": ("1",)}))
    answer(good)
    [bad] = stream.next_responses(chain({"a": ("2",)}))
    answer(bad, error="no")
    assert stream.status()[ENDPOINT].refused
    [again] = stream.next_responses(chain({"a": ("1",)}))
    answer(again)
    assert again.resources[0].version == good.resources[0].version
    assert not stream.status()[ENDPOINT].refused
    assert stream.next_responses(chain.current) == []


def test_delta_client_back_from_another_replica_keeps_a_cluster_its_route_still_uses() -> None:
    """While it was away, its route moved from a to a new cluster c and a was deleted. The new
    stream answers its cluster request before its route request has even arrived: a must stay
    until the route has moved (the model client checks every step)."""
    before = World((("a", 0, 0),), (("r", "a", True),)).snapshot()
    client = Client(delta=True)
    link = Link.open(client)
    link.settle(before)
    moved = World((("c", 0, 0),), (("r", "c", True),)).snapshot().after(before)
    link = Link.open(client)
    link.deliver_request()  # only the cluster request so far
    link.server_writes(moved)
    [first] = link.to_client
    assert (first.type_url, names(first), first.removed) == (CLUSTER, ["c"], ())
    link.settle(moved)
    client.check_settled(moved)
    assert set(client.held[CLUSTER]) == {"c"}


def test_delta_client_back_without_listeners_has_its_deleted_clusters_removed() -> None:
    """It asks for clusters only: an empty response draws the answer that says so."""
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, initial={"gone": "v1"}))
    snap = snapshot({})
    [probe] = stream.next_responses(snap)
    assert (probe.resources, probe.removed) == ((), ())
    delta_ack(stream, probe)
    [removal] = stream.next_responses(snap)
    assert removal.removed == ("gone",)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_nonce_carried_from_an_earlier_stream_answers_nothing_on_a_new_one(delta: bool) -> None:
    # Rule 2: a client that carries its previous stream's last nonce into a later request of
    # the new stream (a raw client; found by tests/test_protocol_subscriptions.py) must not be
    # taken to accept a response it has not seen: with a counter per stream, both streams'
    # first nonce was "1", and the machine recorded the client as holding what it refused.
    snap = snapshot({"a": ("10.0.0.1",)})
    old: SotwStream | DeltaStream = DeltaStream() if delta else SotwStream()
    new: SotwStream | DeltaStream = DeltaStream() if delta else SotwStream()
    first = delta_request(ENDPOINT, ["a"]) if delta else request(ENDPOINT, ["a"])
    old.on_request(first)
    [gone] = old.next_responses(snap)  # the old stream's last response, then it broke
    new.on_request(first)
    [unseen] = new.next_responses(snap)
    if delta:
        result = new.on_request(delta_request(ENDPOINT, ["b"], nonce=gone.nonce))
    else:
        result = new.on_request(request(ENDPOINT, ["a", "b"], nonce=gone.nonce))
    assert result.outcome is not Outcome.ACK
    assert new.status()[ENDPOINT].held == {}
    assert unseen.nonce != gone.nonce
