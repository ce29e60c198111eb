"""The SotW state machine against the rules of docs/xds-protocol.md (numbers in names)."""

from __future__ import annotations

from typing import Any

from snapshots import ack, api_listener, assignment, cluster, request, snapshot

from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xdsfleet.server.protocol import Outcome, RequestResult, Response
from xdsfleet.server.requests import Runs, SotwRequests
from xdsfleet.server.sotw import SotwStream

ONE = snapshot({"a": ("10.0.0.1",)})
TWO = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})


def names(response: Response) -> list[str]:
    return [r.name for r in response.resources]


def connect(snap: object = TWO) -> tuple[SotwStream, Response]:
    """A stream that asked for CDS (wildcard) and got the first response."""
    stream = SotwStream()
    stream.on_request(request(CLUSTER))
    [first] = stream.next_responses(snap)  # type: ignore[arg-type]
    return stream, first


def test_wildcard_cds_gets_every_cluster() -> None:
    _, first = connect()
    assert first.type_url == CLUSTER
    assert names(first) == ["a", "b"]


def test_initial_cds_request_is_answered_even_when_there_are_no_clusters() -> None:
    _, first = connect(snapshot({}))
    assert names(first) == []


def test_ack_of_latest_response_sends_nothing_more() -> None:
    stream, first = connect()
    result = stream.on_request(request(CLUSTER, nonce=first.nonce, version=first.version))
    assert result.outcome is Outcome.ACK
    assert stream.next_responses(TWO) == []


def test_rule3_stale_nonce_is_ignored() -> None:
    stream, first = connect(ONE)
    stream.on_request(request(CLUSTER, nonce=first.nonce, version=first.version))
    [second] = stream.next_responses(TWO)
    result = stream.on_request(request(CLUSTER, nonce=first.nonce, version=first.version))
    assert result.outcome is Outcome.STALE
    assert second.nonce != first.nonce
    assert stream.next_responses(TWO) == []


def test_rule5_nack_is_found_by_error_detail_even_with_the_same_version() -> None:
    stream, first = connect()
    result = stream.on_request(
        request(CLUSTER, nonce=first.nonce, version=first.version, error="bad cluster")
    )
    assert result.outcome is Outcome.NACK
    assert result.message == "bad cluster"
    assert stream.status()[CLUSTER].nack_message == "bad cluster"


def test_rule6_nacked_version_is_never_resent_but_the_next_change_is() -> None:
    stream, first = connect(ONE)
    stream.on_request(request(CLUSTER, nonce=first.nonce, error="rejected"))
    assert stream.next_responses(ONE) == []
    [update] = stream.next_responses(TWO)
    assert names(update) == ["a", "b"]


def test_rule6_nacked_endpoints_are_not_resent_to_a_later_request() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a"]))
    [sent] = stream.next_responses(ONE)
    stream.on_request(request(ENDPOINT, ["a"], nonce=sent.nonce, error="bad endpoints"))
    assert stream.next_responses(ONE) == []


def test_rule8_grown_subscription_sends_the_new_name_even_if_unchanged() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a"]))
    [first] = stream.next_responses(TWO)
    stream.on_request(request(ENDPOINT, ["a", "b"], nonce=first.nonce, version=first.version))
    [second] = stream.next_responses(TWO)
    assert names(first) == ["a"]
    assert names(second) == ["b"]


def test_rule8_resubscribing_an_endpoint_resends_it() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a", "b"]))
    [first] = stream.next_responses(TWO)
    stream.on_request(request(ENDPOINT, ["a"], nonce=first.nonce))
    assert stream.next_responses(TWO) == []
    stream.on_request(request(ENDPOINT, ["a", "b"], nonce=first.nonce))
    [again] = stream.next_responses(TWO)
    assert names(again) == ["b"]


def test_rule9_empty_names_after_explicit_ones_mean_nothing() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER, ["a"]))
    [first] = stream.next_responses(TWO)
    stream.on_request(request(CLUSTER, [], nonce=first.nonce))
    [second] = stream.next_responses(TWO)
    assert names(first) == ["a"]
    assert names(second) == []


def test_rule9_legacy_wildcard_stays_wildcard_on_empty_acks() -> None:
    stream, first = connect(ONE)
    stream.on_request(request(CLUSTER, [], nonce=first.nonce))
    [second] = stream.next_responses(TWO)
    assert names(second) == ["a", "b"]


def test_rule9_explicit_star_turns_wildcard_on() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER, ["a"]))
    [first] = stream.next_responses(TWO)
    stream.on_request(request(CLUSTER, ["*", "a"], nonce=first.nonce))
    [second] = stream.next_responses(TWO)
    assert names(second) == ["a", "b"]


def test_an_ack_after_the_wildcard_was_dropped_holds_only_what_is_still_asked_for() -> None:
    # Planned under `*`, the response carried every assignment; the client dropped the
    # wildcard before it came, so its ACK keeps none of them.
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["*"]))
    [first] = stream.next_responses(TWO)
    assert names(first) == ["a", "b"]
    stream.on_request(request(ENDPOINT, [], nonce="stale"))
    ack(stream, first, [])
    assert stream.status()[ENDPOINT].held == {}


def test_rule10_full_state_response_leaves_out_deleted_clusters() -> None:
    stream, first = connect(TWO)
    stream.on_request(request(CLUSTER, nonce=first.nonce))
    [update] = stream.next_responses(ONE)
    assert names(update) == ["a"]
    assert update.removed == ("b",)


def test_rule4_version_changes_with_any_resource_of_the_type() -> None:
    _, with_one = connect(ONE)
    _, with_two = connect(TWO)
    assert with_one.version != with_two.version


def test_rule14_changed_cluster_forces_its_assignment_even_if_unchanged() -> None:
    stream, first = connect(ONE)
    stream.on_request(request(CLUSTER, nonce=first.nonce))
    stream.on_request(request(ENDPOINT, ["a"]))
    [eds] = stream.next_responses(ONE)
    stream.on_request(request(ENDPOINT, ["a"], nonce=eds.nonce))
    # Same endpoints, new cluster settings: CDS, then the same assignment again.
    changed = snapshot({"a": ("10.0.0.1",)}, timeout_ms=2000)
    cds, eds_again = stream.next_responses(changed)
    assert (cds.type_url, eds_again.type_url) == (CLUSTER, ENDPOINT)
    assert names(eds_again) == ["a"]
    assert eds_again.resources[0].version == eds.resources[0].version


def test_rule15_unknown_cluster_gets_an_empty_assignment_then_the_real_one() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["c"]))
    [empty] = stream.next_responses(ONE)
    stream.on_request(request(ENDPOINT, ["c"], nonce=empty.nonce))
    [real] = stream.next_responses(snapshot({"c": ("10.0.0.3",)}))
    assert names(empty) == ["c"]
    assert real.resources[0].version != empty.resources[0].version


def test_rule12_requested_route_is_sent_when_it_appears() -> None:
    stream = SotwStream()
    stream.on_request(request(ROUTE, ["r"]))
    assert stream.next_responses(ONE) == []
    [sent] = stream.next_responses(snapshot({"a": ("10.0.0.1",)}, {"r": "a"}))
    assert names(sent) == ["r"]


def test_rule13_types_are_sent_clusters_endpoints_listeners_routes() -> None:
    stream = SotwStream()
    wanted = {ROUTE: ["r"], LISTENER: [], ENDPOINT: ["a"], CLUSTER: []}
    for type_url, names_ in wanted.items():
        stream.on_request(request(type_url, names_))
    snap = snapshot({"a": ("10.0.0.1",)}, {"r": "a"})
    sent = stream.next_responses(snap)
    assert [r.type_url for r in sent] == [CLUSTER, ENDPOINT, LISTENER]
    # Rule 14: the route waits until the client took the new cluster's assignment.
    for response in sent:
        ack(stream, response, wanted[response.type_url])
    [route_config] = stream.next_responses(snap)
    assert route_config.type_url == ROUTE


def settle(stream: SotwStream, snap: object, wanted: dict[str, list[str]]) -> None:
    """Send and ACK until nothing more goes out."""
    while sent := stream.next_responses(snap):  # type: ignore[arg-type]
        for response in sent:
            ack(stream, response, wanted[response.type_url])


def test_rule13_removed_cluster_outlives_the_route_that_used_it() -> None:
    before = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)}, {"r": "b"})
    after = snapshot({"a": ("10.0.0.1",)}, {"r": "a"}).after(before)
    stream = SotwStream()
    wanted = {CLUSTER: [], ENDPOINT: ["a", "b"], LISTENER: [], ROUTE: ["r"]}
    for type_url, names_ in wanted.items():
        stream.on_request(request(type_url, names_))
    settle(stream, before, wanted)
    [route_update] = stream.next_responses(after)
    assert route_update.type_url == ROUTE
    ack(stream, route_update, wanted[ROUTE])
    [removal] = stream.next_responses(after)
    assert (removal.type_url, names(removal), removal.removed) == (CLUSTER, ["a"], ("b",))


def test_rule26_nothing_more_of_a_type_until_the_client_answers() -> None:
    stream, first = connect(ONE)
    assert stream.next_responses(TWO) == []
    stream.on_request(request(CLUSTER, nonce=first.nonce, version=first.version))
    [second] = stream.next_responses(TWO)
    assert names(second) == ["a", "b"]


def test_unsupported_type_is_reported_and_ignored() -> None:
    stream = SotwStream()
    result = stream.on_request(request("type.googleapis.com/some.Other"))
    assert result.outcome is Outcome.UNSUPPORTED
    assert stream.next_responses(ONE) == []


def test_status_tracks_what_the_client_holds_and_refused() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a", "b"]))
    [first] = stream.next_responses(TWO)
    stream.on_request(request(ENDPOINT, ["a", "b"], nonce=first.nonce, version=first.version))
    moved = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.9",)})
    [second] = stream.next_responses(moved)
    stream.on_request(request(ENDPOINT, ["a", "b"], nonce=second.nonce, error="no"))
    status = stream.status()[ENDPOINT]
    assert status.held == {r.name: r.version for r in first.resources}
    assert status.refused == {"b": (second.resources[0].version, "no")}
    assert status.summary()["refused"] == 1


def test_a_second_request_with_the_same_nonce_only_changes_the_subscription() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a"]))
    [first] = stream.next_responses(TWO)
    ack = stream.on_request(request(ENDPOINT, ["a"], nonce=first.nonce, version=first.version))
    grow = stream.on_request(request(ENDPOINT, ["a", "b"], nonce=first.nonce))
    assert (ack.outcome, grow.outcome) == (Outcome.ACK, Outcome.SUBSCRIBE)
    assert stream.status()[ENDPOINT].acks == 1


def test_rule13_a_type_waiting_for_an_answer_holds_back_the_types_after_it() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER))
    stream.on_request(request(LISTENER))
    first = snapshot({"a": ("10.0.0.1",)})
    cds, lds = stream.next_responses(first)
    ack(stream, lds)
    # Clusters and listeners change; the client has not answered the clusters yet.
    changed = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)}, {"r": "b"}).after(first)
    assert stream.next_responses(changed) == []
    ack(stream, cds)
    assert [r.type_url for r in stream.next_responses(changed)] == [CLUSTER, LISTENER]


def resumed(held: Snapshot, wanted: dict[str, list[str]]) -> SotwStream:
    """A new stream of a client that asked for `wanted` on an earlier one, took everything of
    `held` there, and now asks again with the versions it holds."""
    versions = held_versions(held, wanted)
    stream = SotwStream()
    for type_url, names_ in wanted.items():
        stream.on_request(request(type_url, names_, version=versions[type_url]))
    return stream


def held_versions(held: Snapshot, wanted: dict[str, list[str]]) -> dict[str, str]:
    """The version per type of a client that asked for `wanted` and took everything of `held`."""
    earlier = SotwStream()
    for type_url, names_ in wanted.items():
        earlier.on_request(request(type_url, names_))
    versions: dict[str, str] = {}
    while sent := earlier.next_responses(held):
        for response in sent:
            ack(earlier, response, wanted[response.type_url])
            versions[response.type_url] = response.version
    return versions


def test_rule13_a_client_back_with_a_deleted_cluster_keeps_it_until_its_route_goes() -> None:
    """Make before break across a reconnect: the client holds route r -> b, and b was deleted
    meanwhile. The versions its first requests carry and the snapshot's history say it holds
    b: b stays, and no placeholder empties its assignment, until the route is replaced."""
    before = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)}, {"r": "b"})
    after = snapshot({"a": ("10.0.0.1",)}, {"r": "a"}).after(before)
    wanted = {CLUSTER: [], ENDPOINT: ["a", "b"], LISTENER: [], ROUTE: ["r"]}
    stream = resumed(before, wanted)
    route_replaced = False
    clusters: list[tuple[list[str], tuple[str, ...]]] = []
    while sent := stream.next_responses(after):
        for response in sent:
            if response.type_url == CLUSTER:
                clusters.append((names(response), response.removed))
                assert route_replaced or "b" in names(response), "b went before the route"
            if response.type_url == ENDPOINT:
                assert "b" not in names(response)  # no placeholder for what the client holds
            route_replaced = route_replaced or response.type_url == ROUTE
            ack(stream, response, wanted[response.type_url])
    assert clusters[-1] == (["a"], ("b",))
    assert "b" not in stream.status()[CLUSTER].held


def test_a_client_back_from_an_earlier_stream_keeps_its_listener_while_its_clusters_warm() -> None:
    """A gRPC client asks again, with its versions, for a listener whose inline routes use
    cluster c, and for c. c warms again on this stream; the listener waits for it, but it is
    not left out of a response meanwhile: a full set without it would remove it there."""
    snap = build_snapshot(
        {
            CLUSTER: {"c": cluster("c")},
            ENDPOINT: {"c": assignment("c", "10.0.0.1")},
            LISTENER: {"L": api_listener("L", "c")},
        },
        Encoder(),
    )
    wanted = {LISTENER: ["L"], CLUSTER: ["c"], ENDPOINT: ["c"]}
    stream = resumed(snap, wanted)
    listeners = []
    while sent := stream.next_responses(snap):
        for response in sent:
            if response.type_url == LISTENER:
                listeners.append(names(response))
            ack(stream, response, wanted[response.type_url])
    assert listeners == [["L"]]


def nack_first_response(
    held: Snapshot, wanted: dict[str, list[str]], first: str
) -> tuple[SotwStream, Response]:
    """A client back with what it took of `held`: its request for `first` arrives alone, it
    refuses the response to it, then its other first requests arrive."""
    versions = held_versions(held, wanted)
    stream = SotwStream()
    stream.on_request(request(first, wanted[first], version=versions[first]))
    [response] = stream.next_responses(held)
    assert response.type_url == first
    for type_url, names_ in wanted.items():
        if type_url != first:
            stream.on_request(request(type_url, names_, version=versions[type_url]))
    nack = request(first, wanted[first], nonce=response.nonce, version=versions[first], error="no")
    assert stream.on_request(nack).outcome is Outcome.NACK
    return stream, response


def test_rule13_an_envoy_back_that_refuses_its_assignments_keeps_them_for_its_route() -> None:
    """Found by the property tests. An Envoy back with route r -> a and clusters a, b refuses
    the first response (EDS a, b): it kept what it had (rule 6). Then r moves to c, and a and
    b are deleted. Neither a placeholder for a nor a set without a may reach it before the new
    route: the NACK must not make the server forget that the client holds a."""
    before = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)}, {"r": "a"})
    after = snapshot({"c": ("10.0.0.3",)}, {"r": "c"}).after(before)
    wanted = {CLUSTER: [], ENDPOINT: ["a", "b"], LISTENER: [], ROUTE: ["r"]}
    stream, refused = nack_first_response(before, wanted, ENDPOINT)
    eds_nonce = refused.nonce
    route_replaced = False
    clusters = []
    while sent := stream.next_responses(after):
        for response in sent:
            ack(stream, response, wanted[response.type_url])
            if response.type_url == CLUSTER:
                clusters.append(names(response))
                assert route_replaced or "a" in names(response), "a went before the route"
                # Envoy asks for the assignments of the clusters it now holds.
                wanted[ENDPOINT] = names(response)
                stream.on_request(request(ENDPOINT, wanted[ENDPOINT], nonce=eds_nonce))
            if response.type_url == ENDPOINT:
                eds_nonce = response.nonce
                assert "a" not in names(response), "a placeholder drained a"
            route_replaced = route_replaced or response.type_url == ROUTE
    assert route_replaced
    assert clusters[-1] == ["c"]


def test_rule13_a_grpc_client_back_that_refuses_its_clusters_keeps_them_for_its_listener() -> None:
    """Found by the property tests. A gRPC client back with listener L (inline route to a)
    and cluster a refuses the first response (CDS a): it kept what it had (rule 6). Then
    everything is deleted. a stays until the listener is gone: the NACK must not make the
    server forget that the client holds a."""
    before = build_snapshot(
        {
            CLUSTER: {"a": cluster("a")},
            ENDPOINT: {"a": assignment("a", "10.0.0.1")},
            LISTENER: {"L": api_listener("L", "a")},
        },
        Encoder(),
    )
    after = build_snapshot({CLUSTER: {}, ENDPOINT: {}, LISTENER: {}}, Encoder()).after(before)
    wanted = {CLUSTER: ["a"], ENDPOINT: ["a"], LISTENER: ["L"]}
    stream, _ = nack_first_response(before, wanted, CLUSTER)
    listener_gone = False
    clusters = []
    while sent := stream.next_responses(after):
        for response in sent:
            if response.type_url == CLUSTER:
                clusters.append(names(response))
                assert listener_gone or "a" in names(response), "a went before the listener"
            if response.type_url == ENDPOINT:
                assert "a" not in names(response), "a placeholder drained a"
            ack(stream, response, wanted[response.type_url])
            listener_gone = listener_gone or response.type_url == LISTENER
    assert listener_gone
    assert clusters == [[]]


# An unchanged list of names is told by its bytes when the server reads a request
# (`server/requests.py`) and reaches the machine as `same_names`; these hold the same rules for
# long lists read so as the short lists above.
MANY = snapshot({f"c{i:03d}": (f"10.1.{i // 250}.{i % 250}",) for i in range(100)})
LONG = [f"c{i:03d}" for i in range(80)]


class Read:
    """A stream whose requests are read from their bytes, as the server reads them."""

    def __init__(self) -> None:
        self.stream = SotwStream()
        self._read = SotwRequests(Runs(), 10_000).read

    def on_request(self, req: Any) -> RequestResult:
        return self.stream.on_request(*self._read(req.SerializeToString()))


def long_subscription() -> tuple[Read, Response]:
    stream = Read()
    stream.on_request(request(ENDPOINT, LONG))
    [first] = stream.stream.next_responses(MANY)
    assert names(first) == LONG
    return stream, first


def test_a_long_unchanged_subscription_acked_wakes_nothing_and_sends_nothing() -> None:
    stream, first = long_subscription()
    result = stream.on_request(request(ENDPOINT, LONG, nonce=first.nonce, version=first.version))
    assert result.outcome is Outcome.ACK
    assert not result.wakes
    assert stream.stream.next_responses(MANY) == []
    # The same names in another order are the same subscription.
    stream.on_request(request(ENDPOINT, LONG[::-1], nonce=first.nonce, version=first.version))
    assert stream.stream.next_responses(MANY) == []


def test_rule8_a_long_subscription_grown_or_with_a_name_swapped_sends_the_new_names() -> None:
    stream, first = long_subscription()
    grown = [*LONG, "c090"]
    stream.on_request(request(ENDPOINT, grown, nonce=first.nonce, version=first.version))
    [second] = stream.stream.next_responses(MANY)
    assert names(second) == ["c090"]
    swapped = [*LONG[1:], "c091", "c090"]  # as long as `grown`, c000 gone, c091 new
    result = stream.on_request(
        request(ENDPOINT, swapped, nonce=second.nonce, version=second.version)
    )
    assert result.wakes
    [third] = stream.stream.next_responses(MANY)
    assert names(third) == ["c091"]
    assert "c000" not in stream.stream.status()[ENDPOINT].held
