"""Streams look only at what changed between consecutive snapshots, and stay correct when they
skip some (a slow client) or when nothing they hold changed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from snapshots import (
    ack,
    assignment,
    cluster,
    delta_ack,
    delta_request,
    listener,
    request,
    route,
    snapshot,
)

from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import InconsistentSnapshot, patch_snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.sotw import SotwStream

S1 = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",)})
S2 = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.3",)}).after(S1)
S3 = snapshot({"a": ("10.0.0.4",), "b": ("10.0.0.3",), "c": ("10.0.0.5",)}).after(S2)


def test_after_names_what_changed_per_type() -> None:
    assert S2.changed[ENDPOINT] == {"b"}
    assert S2.changed[CLUSTER] == frozenset()
    assert S3.changed[CLUSTER] == {"c"}


def test_changes_since_knows_the_generations_before() -> None:
    assert S2.changes_since(ENDPOINT, S1.versions[ENDPOINT]) == frozenset({"b"})
    assert S2.changes_since(ENDPOINT, S2.versions[ENDPOINT]) == frozenset()
    # Two generations back: the union of both changes.
    assert S3.changes_since(ENDPOINT, S1.versions[ENDPOINT]) == frozenset({"a", "b", "c"})
    assert S3.changes_since(CLUSTER, S1.versions[CLUSTER]) == frozenset({"c"})
    assert S3.changes_since(ENDPOINT, None) is None
    assert S3.changes_since(ENDPOINT, "a version it never had") is None


def test_departed_clusters_are_kept_as_long_as_the_history_that_removed_them() -> None:
    many: dict[str, tuple[str, ...]] = {
        f"x{i}": ("10.0.1.1",) for i in range(8)
    }  # room in the history for a few steps
    full = snapshot({**many, "b": ("10.0.0.3",), "c": ("10.0.0.5",)})
    shrunk = snapshot(many).after(full)
    assert set(shrunk.departed) == {"b", "c"}
    assert shrunk.departed["c"] is full.of(CLUSTER)["c"]  # its last version, shared
    back = snapshot({**many, "c": ("10.0.0.5",)}).after(shrunk)
    assert set(back.departed) == {"b"}  # here again: no longer departed
    latest = back
    for i in range(6, 40):
        latest = snapshot({**many, "c": (f"10.0.0.{i}",)}).after(latest)
    # The step that removed b left the history: b goes with it.
    assert latest.changes_since(CLUSTER, full.versions[CLUSTER]) is None
    assert not latest.departed


def test_history_is_bounded_by_what_the_snapshot_holds() -> None:
    latest = S3
    for i in range(6, 40):
        latest = snapshot({"a": (f"10.0.0.{i}",), "b": ("10.0.0.3",), "c": ("10.0.0.5",)}).after(
            latest
        )
    # One name changed per generation: no more generations kept than the snapshot holds
    # resources, and beyond them a full walk.
    holds = sum(len(named) for named in latest.resources.values())
    assert 0 < len(latest.earlier) <= holds
    assert latest.changes_since(ENDPOINT, S1.versions[ENDPOINT]) is None


def test_sotw_stream_following_each_snapshot_gets_each_change() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a", "b", "c"]))
    [first] = stream.next_responses(S1)
    ack(stream, first, ["a", "b", "c"])
    [second] = stream.next_responses(S2)
    ack(stream, second, ["a", "b", "c"])
    [third] = stream.next_responses(S3)
    assert [r.name for r in second.resources] == ["b"]
    assert [r.name for r in third.resources] == ["a", "c"]


def test_sotw_stream_that_skipped_a_snapshot_still_gets_everything_that_changed() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT, ["a", "b", "c"]))
    [first] = stream.next_responses(S1)
    ack(stream, first, ["a", "b", "c"])
    [update] = stream.next_responses(S3)
    assert [r.name for r in update.resources] == ["a", "b", "c"]


def test_delta_stream_following_each_snapshot_gets_each_change_and_removal() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(CLUSTER))
    [first] = stream.next_responses(S3)
    delta_ack(stream, first)
    shrunk = snapshot({"a": ("10.0.0.4",), "b": ("10.0.0.3",)}).after(S3)
    [removal] = stream.next_responses(shrunk)
    assert removal.removed == ("c",)


def test_delta_stream_that_skipped_a_snapshot_still_gets_everything_that_changed() -> None:
    stream = DeltaStream()
    stream.on_request(delta_request(ENDPOINT, ["a", "b", "c"]))
    [first] = stream.next_responses(S1)
    delta_ack(stream, first)
    [update] = stream.next_responses(S3)
    assert [r.name for r in update.resources] == ["a", "b", "c"]


def test_a_patch_is_the_snapshot_a_build_gives_and_knows_its_changes() -> None:
    patched = patch_snapshot(
        S1,
        {
            CLUSTER: {"c": cluster("c")},
            ENDPOINT: {"a": assignment("a", "10.0.0.1"), "c": assignment("c", "10.0.0.5")},
            LISTENER: {"L-r": listener("L-r", "r")},
            ROUTE: {"r": route("r", "c")},
        },
        Encoder(),
    )

    built = snapshot({"a": ("10.0.0.1",), "b": ("10.0.0.2",), "c": ("10.0.0.5",)}, {"r": "c"})
    assert patched.versions == built.versions
    assert patched.eds_names == built.eds_names
    for type_url, named in built.resources.items():
        assert [(n, e.body) for n, e in patched.of(type_url).items()] == [
            (n, e.body) for n, e in named.items()
        ]
    # "a" was patched with what it had: not a change.
    assert patched.changes_since(ENDPOINT, S1.versions[ENDPOINT]) == frozenset({"c"})
    assert patched.after(S1) is patched


def test_a_patch_naming_a_missing_resource_is_refused() -> None:
    with pytest.raises(InconsistentSnapshot, match="'L-x' needs RouteConfiguration 'x'"):
        patch_snapshot(S1, {LISTENER: {"L-x": listener("L-x", "x")}}, Encoder())
    with pytest.raises(InconsistentSnapshot, match="'c' needs ClusterLoadAssignment 'c'"):
        patch_snapshot(S1, {CLUSTER: {"c": cluster("c")}}, Encoder())


# Up to five clusters, each with one of three addresses or absent: generations that change,
# add and remove names, and come back to earlier versions.
_generation = st.dictionaries(
    st.sampled_from("abcde"), st.sampled_from(("10.0.0.1", "10.0.0.2", "10.0.0.3")), max_size=5
)


@given(st.lists(_generation, min_size=1, max_size=40))
def test_changes_since_never_misses_a_difference(generations: list[dict[str, str]]) -> None:
    """Whatever generations came between, the names `changes_since` gives cover every name
    that differs (or it says it does not know)."""
    history = [snapshot({n: (a,) for n, a in generations[0].items()})]
    for clusters in generations[1:]:
        history.append(snapshot({n: (a,) for n, a in clusters.items()}).after(history[-1]))
    latest = history[-1]
    for old in history:
        for type_url in (CLUSTER, ENDPOINT):
            names = latest.changes_since(type_url, old.versions[type_url])
            if names is None:
                continue
            now, before = latest.of(type_url), old.of(type_url)
            differ = {
                n
                for n in now.keys() | before.keys()
                if n not in now or n not in before or now[n].version != before[n].version
            }
            assert differ <= names
