"""The store coalesces bursts of states, but lets endpoint removals through at once."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import eventually

from xdsfleet.model.fleet import Endpoint, EndpointSlice, FleetState, Member, MemberState
from xdsfleet.pipeline.debounce import Debouncer, loses_member, removes_endpoints


def fleet(*pods: tuple[str, bool]) -> FleetState:
    slice_ = EndpointSlice(
        namespace="default",
        name="shop-1",
        service_name="shop",
        ports=(),
        endpoints=tuple(Endpoint(addresses=(a,), ready=ready) for a, ready in pods),
    )
    member = MemberState(
        member=Member(name="zone-a", region="r", zone="z"), endpoint_slices=(slice_,)
    )
    return FleetState(name="f", members=(member,))


class Published(list[FleetState]):
    """The states published, in order; a publish takes `seconds` (yielding to the loop)."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.running = 0
        self.overlapped = False

    async def __call__(self, state: FleetState) -> None:
        self.running += 1
        self.overlapped |= self.running > 1
        await asyncio.sleep(self.seconds)
        self.append(state)
        self.running -= 1


def test_a_pod_going_unready_is_a_removal() -> None:
    assert removes_endpoints(fleet(("10.0.0.1", True)), fleet(("10.0.0.1", False)))


def test_a_pod_added_is_not_a_removal() -> None:
    assert not removes_endpoints(
        fleet(("10.0.0.1", True)), fleet(("10.0.0.1", True), ("10.0.0.2", True))
    )


def test_a_member_gone_with_ready_pods_is_a_removal() -> None:
    assert removes_endpoints(fleet(("10.0.0.1", True)), FleetState(name="f", members=()))


async def test_a_burst_of_additions_is_published_once_as_its_last_state() -> None:
    published = Published()
    store = Debouncer(published, quiet=0.05, current=fleet(("10.0.0.1", True)))
    grown = [fleet(*((f"10.0.0.{i}", True) for i in range(1, n + 2))) for n in range(1, 5)]
    for state in grown:
        store.update(state)
    assert published == []
    await eventually(lambda: bool(published))
    assert published == [grown[-1]]


async def test_a_removal_is_published_without_waiting_for_quiet() -> None:
    published = Published()
    # A quiet period far longer than any test: only the removal path can publish in time.
    store = Debouncer(published, quiet=3600, max_delay=3600, current=fleet(("10.0.0.1", True)))
    store.update(fleet(("10.0.0.1", False)))
    await eventually(lambda: bool(published))
    assert published == [fleet(("10.0.0.1", False))]


async def test_an_unchanged_state_is_not_published_again() -> None:
    published = Published()
    same = fleet(("10.0.0.1", True))
    store = Debouncer(published, quiet=0.01, current=same)
    store.update(fleet(("10.0.0.1", True)))
    store.update(fleet(("10.0.0.1", False)))
    store.update(same)
    await eventually(lambda: not store.pending)
    assert published == []


async def test_removals_during_a_publish_wait_for_it_and_only_the_latest_goes_out() -> None:
    published = Published(seconds=0.2)
    everything = fleet(*((f"10.0.0.{i}", True) for i in range(1, 6)))
    store = Debouncer(published, quiet=3600, max_delay=3600, current=everything)
    # Removals, one after another, while the first publish runs.
    states = [fleet(*((f"10.0.0.{i}", i > n) for i in range(1, 6))) for n in range(1, 5)]
    for state in states:
        store.update(state)
        await asyncio.sleep(0.01)
    await eventually(lambda: not store.pending)
    assert not published.overlapped
    assert published == [states[0], states[-1]]


async def test_the_next_publish_waits_for_the_last_to_settle() -> None:
    published = Published()
    settled = asyncio.Event()
    settling: list[float] = []

    async def settle(event_at: float) -> None:
        settling.append(event_at)
        await settled.wait()

    store = Debouncer(
        published,
        quiet=3600,
        max_delay=3600,
        current=fleet(("10.0.0.1", True), ("10.0.0.2", True)),
        settle=settle,
    )
    before = asyncio.get_running_loop().time()
    store.update(fleet(("10.0.0.1", False), ("10.0.0.2", True)))
    after = asyncio.get_running_loop().time()
    await eventually(lambda: bool(settling))
    store.update(fleet(("10.0.0.1", False), ("10.0.0.2", False)))  # a removal: "at once"
    for _ in range(5):  # the loop iterations a flush and a publish task would need
        await asyncio.sleep(0)
    assert len(published) == 1
    settled.set()
    await eventually(lambda: len(published) == 2)
    # The event time handed to settle is the loop time of the state's first update.
    assert before <= settling[0] <= after


async def _settling_forever() -> tuple[Published, list[float], FleetState, Debouncer]:
    """A debouncer whose settling never ends (only a member lost can go out past it), after a
    first removal published and settling: what it published, the event times handed to settle,
    the state before, the debouncer."""
    published = Published()
    settled = asyncio.Event()  # never set
    settling: list[float] = []

    async def settle(event_at: float) -> None:
        settling.append(event_at)
        await settled.wait()

    before = fleet(("10.0.0.1", True), ("10.0.0.2", True))
    store = Debouncer(published, quiet=3600, max_delay=3600, current=before, settle=settle)
    store.update(fleet(("10.0.0.1", False), ("10.0.0.2", True)))
    await eventually(lambda: bool(settling))
    return published, settling, before, store


async def test_a_member_lost_does_not_wait_for_the_last_publish_to_settle() -> None:
    published, settling, before, store = await _settling_forever()
    lost = FleetState(name="f", members=(MemberState(member=before.members[0].member),))
    store.update(lost)  # the member's EndpointSlices are gone
    await eventually(lambda: len(published) == 2)
    assert published[-1] == lost
    assert not published.overlapped
    await eventually(lambda: len(settling) == 2)  # the loss is settled in its turn
    await store.stop()


async def test_a_member_lost_after_a_removal_that_waits_for_the_settling_goes_at_once() -> None:
    published, _, before, store = await _settling_forever()
    store.update(fleet(("10.0.0.1", False), ("10.0.0.2", False)))  # a removal: it waits
    # Its flush was scheduled with call_soon: the loop runs it before resuming this task, which
    # yields once (FIFO order, not timing), so the removal now waits for the settling.
    await asyncio.sleep(0)
    lost = FleetState(name="f", members=(MemberState(member=before.members[0].member),))
    store.update(lost)  # then the member's EndpointSlices are gone
    await eventually(lambda: len(published) == 2)
    assert published[-1] == lost
    await store.stop()


def test_a_member_lost_is_all_its_slices_gone_not_its_endpoints_unready() -> None:
    ready = fleet(("10.0.0.1", True))
    member = ready.members[0].member
    assert loses_member(ready, FleetState(name="f", members=(MemberState(member=member),)))
    assert loses_member(ready, FleetState(name="f", members=()))
    assert not loses_member(ready, fleet(("10.0.0.1", False)))  # a removal, not a loss
    unready = fleet(("10.0.0.1", False))
    assert not loses_member(unready, FleetState(name="f", members=()))  # nothing ready to lose


def reference_removes(old: FleetState, new: FleetState) -> bool:
    """The definition: some (namespace, service, address) ready in a member of `old` is not
    ready in that member of `new` (or the member is gone)."""

    def ready(member: MemberState) -> set[tuple[str, str, str]]:
        return {
            (s.namespace, s.service_name, a)
            for s in member.endpoint_slices
            for e in s.endpoints
            if e.ready
            for a in e.addresses
        }

    after = {m.member.name: ready(m) for m in new.members}
    return any(ready(m) - after.get(m.member.name, set()) for m in old.members)


_endpoints = st.lists(
    st.builds(
        lambda address, ready: Endpoint(addresses=(address,), ready=ready),
        st.sampled_from(("10.0.0.1", "10.0.0.2", "10.0.0.3")),
        st.booleans(),
    ),
    max_size=3,
)
_slice = st.builds(
    lambda name, service, endpoints: EndpointSlice("default", name, service, (), tuple(endpoints)),
    st.sampled_from(("s1", "s2", "s3")),
    st.sampled_from(("shop", "cart")),
    _endpoints,
)


@given(
    st.lists(_slice, max_size=4),
    st.lists(st.sampled_from(("keep", "replace", "drop")), min_size=4, max_size=4),
    st.lists(_slice, min_size=4, max_size=4),
    st.lists(_slice, max_size=2),
)
def test_the_removal_check_looks_only_at_replaced_slices_and_agrees_with_its_definition(
    slices: list[EndpointSlice],
    fates: list[str],
    replacements: list[EndpointSlice],
    added: list[EndpointSlice],
) -> None:
    zone = Member(name="zone-a", region="r", zone="z")
    new_slices = [
        s if fate == "keep" else replacement
        for s, fate, replacement in zip(slices, fates, replacements, strict=False)
        if fate != "drop"
    ] + added
    old = FleetState("f", (MemberState(zone, endpoint_slices=tuple(slices)),))
    new = FleetState("f", (MemberState(zone, endpoint_slices=tuple(new_slices)),))
    assert removes_endpoints(old, new) == reference_removes(old, new)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "unready", "lose", "restore"]), st.integers(0, 3)),
        min_size=1,
        max_size=12,
    )
)
async def test_a_member_lost_is_never_held_by_pacing_whatever_came_before(
    steps: list[tuple[str, int]],
) -> None:
    # Issue 10: pacing follows the fan-out, which may take seconds; a fan-out that never ends
    # (settle never returns) must still not hold a member loss, whatever publishes, removals
    # and settlings are under way or waiting when it comes.
    published = Published()
    never = asyncio.Event()

    async def settle(_: float) -> None:
        await never.wait()

    pods = [("10.0.0.1", True)]
    store = Debouncer(published, quiet=3600, max_delay=3600, current=fleet(*pods), settle=settle)
    member = store.current.members[0].member  # type: ignore[union-attr]
    try:
        for kind, yields in steps:
            if kind == "add":
                pods.append((f"10.0.1.{len(pods)}", True))
            elif kind == "unready":
                pods[0] = (pods[0][0], False)
            state = (
                FleetState(name="f", members=(MemberState(member=member),))
                if kind == "lose"
                else fleet(*pods)
            )
            lost = store.current is not None and loses_member(store.current, state)
            store.update(state)
            if lost:
                for _ in range(6):  # a flush, a cancelled settling, a publish task: no timer
                    await asyncio.sleep(0)
                assert published
                assert published[-1] == state
            for _ in range(yields):
                await asyncio.sleep(0)
        assert not published.overlapped
    finally:
        await store.stop()
