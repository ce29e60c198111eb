"""Streams look only at what changed between consecutive snapshots, and stay correct when they
skip some (a slow client) or when nothing they hold changed."""

from __future__ import annotations

from snapshots import delta_request, request, snapshot

from xdsfleet.cache.types import CLUSTER, ENDPOINT
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.sotw import SotwStream

S1 = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})
S2 = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.3",)}).after(S1)
S3 = snapshot({"a": ("10.0.0.4",), "b": ("10.0.0.3",), "c": ("10.0.0.5",)}).after(S2)


def test_after_names_what_changed_per_type() -> None:
    assert S2.changed[ENDPOINT] == {"b"}
    assert S2.changed[CLUSTER] == frozenset()
    assert S3.changed[CLUSTER] == {"c"}


def test_changes_since_knows_only_the_previous_snapshot() -> None:
    assert S2.changes_since(ENDPOINT, S1.versions[ENDPOINT]) == frozenset({"b"})
    assert S2.changes_since(ENDPOINT, S2.versions[ENDPOINT]) == frozenset()
    assert S3.changes_since(ENDPOINT, S1.versions[ENDPOINT]) is None
    assert S3.changes_since(ENDPOINT, None) is None


def test_sotw_stream_following_each_snapshot_gets_each_change() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a", "b", "c"]))
    stream.next_responses(S1)
    [second] = stream.next_responses(S2)
    [third] = stream.next_responses(S3)
    assert [r.name for r in second.resources] == ["b"]
    assert [r.name for r in third.resources] == ["a", "c"]


def test_sotw_stream_that_skipped_a_snapshot_still_gets_everything_that_changed() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a", "b", "c"]))
    stream.next_responses(S1)
    [update] = stream.next_responses(S3)
    assert [r.name for r in update.resources] == ["a", "b", "c"]


def test_delta_stream_following_each_snapshot_gets_each_change_and_removal() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    stream.next_responses(S3)
    shrunk = snapshot({"a": ("10.0.0.4",), "b": ("10.0.0.3",)}).after(S3)
    [removal] = stream.next_responses(shrunk)
    assert removal.removed == ("c",)


def test_delta_stream_that_skipped_a_snapshot_still_gets_everything_that_changed() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a", "b", "c"]))
    stream.next_responses(S1)
    [update] = stream.next_responses(S3)
    assert [r.name for r in update.resources] == ["a", "b", "c"]
