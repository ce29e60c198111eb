"""What a client holds (`protocol.Held`: a shared snapshot map plus differences) always reads as
the plain name -> resource dict it stands for, whatever was put, dropped, assigned or rebased."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from snapshots import ack, delta_ack, delta_request, request, snapshot

from xdsfleet.cache.resources import Encoded
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import Held, Sent, Subscribed, TypeStatus, shared_names
from xdsfleet.server.sotw import SotwStream

NAMES = [f"n{i}" for i in range(40)]


def res(name: str, version: int) -> Encoded:
    return Encoded("t", name, f"v{version}", b"", b"", b"", 0)


# Snapshot maps to share: each name at one of two versions, or absent.
MAPS = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 1), max_size=40).map(
    lambda chosen: {n: res(n, v) for n, v in sorted(chosen.items())}
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(NAMES), st.integers(0, 2)),
        st.tuples(st.just("drop"), st.sampled_from(NAMES)),
        st.tuples(st.just("rebase"), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("assign"), st.integers(0, 4)),
        st.tuples(st.just("put_source"), st.integers(0, 4)),
        st.tuples(st.just("follow"), st.integers(0, 4)),
        st.tuples(st.just("assign_sent"), st.integers(0, 4), st.integers(-1, 40), st.booleans()),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


@given(st.lists(MAPS, min_size=4, max_size=4), OPS)
def test_held_reads_as_the_dict_it_stands_for(
    maps: list[dict[str, Encoded]], ops: list[tuple[Any, ...]]
) -> None:
    held: Held = Held()
    model: dict[str, Encoded] = {}
    # A fifth map of the first's names at another version: the next snapshot's, when a member
    # lost changed every resource.
    maps = [*maps, {n: res(n, 2) for n in maps[0]}]
    # The maps as one profile's snapshots, in this order, each knowing what changed before it:
    # `follow` to an earlier one than the base's finds no history and walks every name.
    snapshots = history(maps)
    versions = [s.versions["t"] for s in snapshots]
    for op in ops:
        if op[0] == "put":
            held.put(op[1], res(op[1], op[2]))
            model[op[1]] = res(op[1], op[2])
        elif op[0] == "drop":
            held.drop(op[1])
            model.pop(op[1], None)
        elif op[0] == "rebase":
            held.rebase(maps[op[1]], force=op[2], version=versions[op[1]])
        elif op[0] == "put_source":
            # As an ACK of a response carrying every resource of a map.
            held.put_source(maps[op[1]], versions[op[1]])
            model.update(maps[op[1]])
        elif op[0] == "follow":
            held.follow(snapshots[op[1]], "t")
        elif op[0] == "assign":
            held.assign(maps[op[1]].values(), maps[op[1]])
            model = dict(maps[op[1]])
        elif op[0] == "assign_sent":
            # A full-state response's ACK: all of a map, or some of it and a placeholder.
            named = maps[op[1]]
            sent = list(named.values())[: op[2]] if op[2] >= 0 else list(named.values())
            if op[3]:
                sent.append(res("p", 7))
            held.assign_sent(Sent.of("t", "v", sent, (), named, versions[op[1]]))
            model = {r.name: r for r in sent}
        else:
            held.clear()
            model = {}
        assert sorted(held) == sorted(model)
        assert len(held) == len(model)
        assert {n: r.version for n, r in held.items()} == {n: r.version for n, r in model.items()}
        for name in NAMES:
            assert held.version(name) == (model[name].version if name in model else None)
            assert (name in held) == (name in model)


def history(maps: list[dict[str, Encoded]]) -> list[Snapshot]:
    """`maps` as successive snapshots of one type "t", each with the change sets before it."""
    snapshots: list[Snapshot] = []
    for named in maps:
        version = "|".join(f"{n}={r.version}" for n, r in sorted(named.items()))
        snap = Snapshot(resources={"t": named}, versions={"t": version})
        snapshots.append(snap.after(snapshots[-1]) if snapshots else snap)
    return snapshots


class Unwalkable(dict[str, Encoded]):
    """A snapshot's map that, once `armed`, refuses to be walked: only looked up by name."""

    armed = False

    def _walked(self) -> None:
        if self.armed:
            raise AssertionError("walked every name")

    def __iter__(self) -> Any:
        self._walked()
        return super().__iter__()

    def keys(self) -> Any:
        self._walked()
        return super().keys()

    def items(self) -> Any:
        self._walked()
        return super().items()

    def values(self) -> Any:
        self._walked()
        return super().values()


def test_following_the_snapshot_costs_the_changes_not_every_name() -> None:
    # Every stream of a profile crosses the rebase bound on the same fan-out: each following
    # the new snapshot by walking every name was the loop's longest iterations.
    names = [f"c{i:04d}" for i in range(1_000)]
    first = Unwalkable({n: res(n, 0) for n in names})
    changed = frozenset(names[:200])
    second = Unwalkable({n: res(n, 1 if n in changed else 0) for n in names})
    second.update((n, first[n]) for n in names[200:])  # unchanged: the very same objects
    before = Snapshot(resources={"t": first}, versions={"t": "v0"})
    after = Snapshot(
        resources={"t": second},
        versions={"t": "v1"},
        base_versions={"t": "v0"},
        changed={"t": changed},
    )
    held = Held()
    held.put_all(first.values())  # the first response's ACK
    held.rebase(first, force=True, version="v0")
    first.armed = second.armed = True
    held.follow(before, "t")  # nothing to follow yet
    assert held._base is first
    for name in names[:199]:  # the response's ACK: all but one of the changes
        held.put(name, second[name])
    held.drop(names[500])  # and a name the client no longer holds
    held.follow(after, "t")
    assert held._base is second
    # What it still differs in: the change it did not take, the name it dropped.
    assert held._diff == {names[199]: first[names[199]], names[500]: None}
    assert held._version == "v1"


def test_a_response_of_a_whole_map_that_removed_names_makes_it_the_base() -> None:
    # A member lost can remove clusters as it changes the rest: the ACK of a response carrying
    # all of the new map shares it at once; only the names it no longer has stay apart.
    before = {n: res(n, 0) for n in NAMES}
    after = {n: res(n, 1) for n in NAMES[:30]}
    held = Held()
    held.put_source(before, "v0")
    held.put_source(after, "v1")
    assert held._base is after
    assert held._diff == {n: before[n] for n in NAMES[30:]}
    assert held._version == "v1"


def test_a_held_map_shares_the_snapshot_it_came_from() -> None:
    snapshot = {n: res(n, 0) for n in NAMES}
    held = Held()
    for r in snapshot.values():
        held.put(r.name, r)
    held.rebase(snapshot)
    assert held._diff == {}  # nothing of its own: the snapshot's map is all it keeps
    held.put("n1", res("n1", 1))
    assert held._diff == {"n1": res("n1", 1)}


def test_status_shows_what_the_machine_holds() -> None:
    status = TypeStatus()
    status.holding.put("a", res("a", 3))
    assert status.held == {"a": "v3"}
    assert status.summary()["resources"] == 1


def test_sent_keeps_names_and_finds_resources_in_its_source() -> None:
    source = {"a": res("a", 0), "b": res("b", 0)}
    placeholder = res("c", 9)
    sent = Sent.of("t", "v", [source["a"], placeholder], (), source)
    assert sent.names == ("a", "c")
    assert list(sent.resources) == [source["a"], placeholder]
    assert dict(sent.own) == {"c": placeholder}


def test_equal_name_sets_are_one_object() -> None:
    first = shared_names([f"x{i}" for i in range(100)])
    again = shared_names([f"x{i}" for i in reversed(range(100))])
    assert again is first
    assert shared_names([]) == frozenset()


# --- A Delta stream's subscribed names (`protocol.Subscribed`) ---

SUBSCRIPTION_OPS = st.lists(
    st.tuples(
        st.sets(st.sampled_from(NAMES), max_size=12), st.sets(st.sampled_from(NAMES), max_size=6)
    ),
    max_size=30,
)


@given(SUBSCRIPTION_OPS)
def test_subscribed_names_read_as_the_set_they_stand_for(
    requests: list[tuple[set[str], set[str]]],
) -> None:
    names = Subscribed()
    model: set[str] = set()
    for subscribe, unsubscribe in requests:
        for name in sorted(subscribe):
            names.add(name)
            model.add(name)
        for name in sorted(unsubscribe):
            names.discard(name)
            model.discard(name)
        names.settle()
        assert set(names) == model
        assert len(names) == len(model)
        assert names.frozen() == model
        assert (names | {"x"}) == model | {"x"}
        assert names.issuperset(model)
        assert names.issuperset(model | {"n0"}) == ("n0" in model)
        for name in NAMES:
            assert (name in names) == (name in model)


def test_a_name_subscribed_by_itself_does_not_copy_every_name_subscribed() -> None:
    # A client subscribing one assignment per request (gRPC-style, or hostile) made each
    # request copy the tens of thousands already subscribed, on the loop that serves everyone.
    names = Subscribed()
    for i in range(10_000):
        names.add(f"c{i}")
    names.settle()
    shared = names.frozen()
    assert shared is shared_names({f"c{i}" for i in range(10_000)})  # one set for all streams
    for i in range(100):
        names.add(f"x{i}")
        names.discard(f"c{i}")
        names.settle()
        assert names._base is shared  # a change kept apart, nothing copied
    assert len(names) == 10_000
    for i in range(1_000):
        names.add(f"y{i}")
        names.settle()
    assert names._base is not shared  # folded in once the changes outgrew a sixteenth
    assert len(names._added or ()) < 1_000  # what came after is kept apart again
    assert len(names) == 11_000


FLEET: dict[str, tuple[str, ...]] = {f"c{i:02d}": (f"10.0.0.{i}",) for i in range(40)}
MOVED: dict[str, tuple[str, ...]] = dict.fromkeys(FLEET, ("10.9.9.9",))  # every assignment


def subscribe(stream: Any, *, delta: bool) -> None:
    """Wildcard CDS and EDS for every cluster, as Envoy asks."""
    if delta:
        stream.on_request(delta_request(CLUSTER))
        stream.on_request(delta_request(ENDPOINT, sorted(FLEET)))
    else:
        stream.on_request(request(CLUSTER))
        stream.on_request(request(ENDPOINT, sorted(FLEET)))


def answer_all(stream: Any, snap: Any, *, delta: bool) -> None:
    """Every response of `snap` sent and ACKed."""
    while responses := stream.next_responses(snap):
        for response in responses:
            if delta:
                delta_ack(stream, response)
            else:
                ack(stream, response, sorted(FLEET) if response.type_url == ENDPOINT else ())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_streams_that_hold_what_the_profile_has_share_the_snapshot(delta: bool) -> None:
    first, moved = snapshot(FLEET), snapshot(MOVED)
    streams = [DeltaStream() if delta else SotwStream() for _ in range(2)]
    for stream in streams:
        subscribe(stream, delta=delta)
        answer_all(stream, first, delta=delta)
    for stream in streams:
        for type_url in (CLUSTER, ENDPOINT):
            # Nothing of its own: the snapshot's map is what it holds.
            held = stream._types[type_url].held
            assert held._base is first.of(type_url)
            assert held._diff == {}
    # One set of names between them (Delta: the shared set under each stream's own changes).
    first_names, second_names = (stream._types[ENDPOINT].names for stream in streams[:2])
    if isinstance(first_names, Subscribed) and isinstance(second_names, Subscribed):
        first_names, second_names = first_names.frozen(), second_names.frozen()
    assert first_names is second_names
    for stream in streams:
        answer_all(stream, moved, delta=delta)  # a member lost: every assignment changed
        held = stream._types[ENDPOINT].held
        assert held._base is moved.of(ENDPOINT)
        assert held._diff == {}
        assert stream.status()[ENDPOINT].held == {
            n: r.version for n, r in moved.of(ENDPOINT).items()
        }
