"""The Delta state machine against the rules of docs/xds-protocol.md (numbers in names)."""

from __future__ import annotations

from snapshots import delta_ack, delta_request, snapshot

from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import Outcome, Response

ONE = snapshot({"a": ("10.0.0.1",)})
TWO = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})
TWO_MOVED = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.9",)})


def names(response: Response) -> list[str]:
    return [r.name for r in response.resources]


def test_rule20_empty_first_request_is_the_legacy_wildcard() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    [first] = stream.next_responses(TWO)
    assert names(first) == ["a", "b"]
    assert first.removed == ()


def test_rule20_star_subscribes_to_everything() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, ["*"]))
    [first] = stream.next_responses(TWO)
    assert names(first) == ["a", "b"]


def test_only_what_changed_is_sent() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a", "b"]))
    [first] = stream.next_responses(TWO)
    stream.on_request(delta_request(ENDPOINT, nonce=first.nonce))
    [update] = stream.next_responses(TWO_MOVED)
    assert names(update) == ["b"]
    assert stream.next_responses(TWO_MOVED) == []


def test_rule17_deleted_resource_goes_in_removed_resources() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    [first] = stream.next_responses(TWO)
    delta_ack(stream, first)
    [update] = stream.next_responses(ONE)
    assert names(update) == []
    assert update.removed == ("b",)


def test_rule17_subscribed_name_that_does_not_exist_is_reported_once() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a", "missing"]))
    [first] = stream.next_responses(ONE)
    assert names(first) == ["a"]
    assert first.removed == ("missing",)
    assert stream.next_responses(ONE) == []


def test_rule17_missing_name_is_sent_when_it_appears() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["b"]))
    [absent] = stream.next_responses(ONE)
    delta_ack(stream, absent)
    [later] = stream.next_responses(TWO)
    assert names(later) == ["b"]


def test_rule18_subscription_change_counts_even_with_a_stale_nonce() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a"]))
    [first] = stream.next_responses(TWO)
    delta_ack(stream, first)
    result = stream.on_request(delta_request(ENDPOINT, ["b"], nonce="no-such-nonce"))
    [grown] = stream.next_responses(TWO)
    assert result.outcome is Outcome.STALE
    assert names(grown) == ["b"]


def test_rule18_resubscribing_resends_the_resource() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a"]))
    [first] = stream.next_responses(ONE)
    stream.on_request(delta_request(ENDPOINT, ["a"], nonce=first.nonce))
    [again] = stream.next_responses(ONE)
    assert names(again) == ["a"]


def test_rule18_unsubscribed_resource_is_no_longer_sent() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a", "b"]))
    stream.next_responses(TWO)
    stream.on_request(delta_request(ENDPOINT, unsubscribe=["b", "never-subscribed"]))
    assert stream.next_responses(TWO_MOVED) == []


def test_rule19_initial_versions_that_match_are_not_resent() -> None:
    first_stream = DeltaStream()
    first_stream.on_request(delta_request(CLUSTER))
    [held] = first_stream.next_responses(ONE)
    versions = {r.name: r.version for r in held.resources}
    reconnected = DeltaStream()
    reconnected.on_request(delta_request(CLUSTER, initial=versions))
    [update] = reconnected.next_responses(TWO)
    assert names(update) == ["b"]


def test_rule19_initial_version_of_a_deleted_resource_is_removed() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER, initial={"gone": "v1"}))
    [sent] = stream.next_responses(ONE)
    # Not before the client has said what else it holds: a route of its may use "gone" (rule 13);
    # its first answer comes after all its first requests.
    assert (names(sent), sent.removed) == (["a"], ())
    delta_ack(stream, sent)
    [removal] = stream.next_responses(ONE)
    assert (names(removal), removal.removed) == ([], ("gone",))


def test_rule6_nacked_resource_is_not_resent_and_the_nack_is_recorded() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a"]))
    [first] = stream.next_responses(ONE)
    result = stream.on_request(delta_request(ENDPOINT, nonce=first.nonce, error="bad"))
    assert result.outcome is Outcome.NACK
    assert stream.next_responses(ONE) == []
    assert stream.status()[ENDPOINT].nacks == 1
    assert stream.status()[ENDPOINT].nack_message == "bad"


def test_ack_is_counted_against_the_nonce_it_echoes() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    [first] = stream.next_responses(ONE)
    result = stream.on_request(delta_request(CLUSTER, nonce=first.nonce))
    assert result.outcome is Outcome.ACK
    assert stream.status()[CLUSTER].in_sync


def test_rule14_changed_cluster_forces_its_assignment() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    stream.on_request(delta_request(ENDPOINT, ["a"]))
    for response in stream.next_responses(ONE):
        delta_ack(stream, response)
    cds, eds = stream.next_responses(snapshot({"a": ("10.0.0.1",)}, timeout_ms=2000))
    assert (cds.type_url, names(cds)) == (CLUSTER, ["a"])
    assert (eds.type_url, names(eds)) == (ENDPOINT, ["a"])


def settle(stream: DeltaStream, snap: object) -> None:
    """Send and ACK until nothing more goes out."""
    while sent := stream.next_responses(snap):  # type: ignore[arg-type]
        for response in sent:
            delta_ack(stream, response)


def test_rule13_cluster_and_endpoint_removals_come_after_routes() -> None:
    before = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)}, {"r": "b"})
    after = snapshot({"a": ("10.0.0.1",)}, {"r": "a"}).after(before)
    stream = DeltaStream()
    for type_url, wanted in ((CLUSTER, []), (ENDPOINT, ["a", "b"]), (LISTENER, []), (ROUTE, ["r"])):
        stream.on_request(delta_request(type_url, wanted))
    settle(stream, before)
    [route_update] = stream.next_responses(after)
    assert route_update.type_url == ROUTE
    delta_ack(stream, route_update)
    [cluster_removal] = stream.next_responses(after)
    assert (cluster_removal.type_url, cluster_removal.removed) == (CLUSTER, ("b",))
    delta_ack(stream, cluster_removal)
    [assignment_removal] = stream.next_responses(after)
    assert (assignment_removal.type_url, assignment_removal.removed) == (ENDPOINT, ("b",))


def test_rule13_a_client_back_with_a_deleted_cluster_keeps_it_until_its_route_goes() -> None:
    """Make before break across a reconnect (rule 19): the client says it holds route r -> b,
    and b was deleted meanwhile: b is removed only once the route is replaced."""
    before = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)}, {"r": "b"})
    after = snapshot({"a": ("10.0.0.1",)}, {"r": "a"}).after(before)
    wanted = {CLUSTER: [], ENDPOINT: ["a", "b"], LISTENER: [], ROUTE: ["r"]}
    stream = DeltaStream()
    for type_url, names_ in wanted.items():
        held = {
            r.name: r.version
            for n in names_ or before.of(type_url)
            for r in [before.of(type_url)[n]]
        }
        stream.on_request(delta_request(type_url, names_, initial=held))
    route_replaced = False
    removed: list[tuple[str, tuple[str, ...]]] = []
    while sent := stream.next_responses(after):
        for response in sent:
            if response.removed:
                removed.append((response.type_url, response.removed))
                assert route_replaced, f"{response.removed} went before the route"
            route_replaced = route_replaced or response.type_url == ROUTE
            delta_ack(stream, response)
    assert removed == [(CLUSTER, ("b",)), (ENDPOINT, ("b",))]


def test_status_forgets_removed_resources_once_acked() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    [first] = stream.next_responses(TWO)
    stream.on_request(delta_request(CLUSTER, nonce=first.nonce))
    [removal] = stream.next_responses(ONE)
    stream.on_request(delta_request(CLUSTER, nonce=removal.nonce))
    assert set(stream.status()[CLUSTER].held) == {"a"}
