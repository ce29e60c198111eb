"""A member lost cuts its blocks out of the previous assignments (`translate/endpoints.py`):
whatever the fleet, the views, the placement and the order of losses, restores and endpoint
changes, the bytes are those a fresh translation joins."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from xdsfleet.model.fleet import Member
from xdsfleet.translate import endpoints
from xdsfleet.translate.localities import LocalityView
from xdsfleet.translate.memo import Memo
from xdsfleet.translate.placement import DEFAULT_PLACEMENT, Placement
from xdsfleet.translate.services import (
    Backend,
    MemberPort,
    ServicePortBackends,
    ServicePortKey,
    ZoneBackends,
)

KEY = ServicePortKey("ns", "web", 80)
MEMBERS = (
    Member("m0", "east", "east-1a"),
    Member("m1", "east", "east-1b", weight=2),
    Member("m2", "west", "west-1a"),
    Member("m3", "west", "west-1a", weight=0),
    Member("m4", "south", "south-1a", weight=3),
)
VIEWS = (
    LocalityView("m0", "east-1a", "east"),
    LocalityView(None, "west-1a", "west"),
    LocalityView(None, "", "south"),
    LocalityView(None, "", ""),
)
PLACEMENTS = (
    DEFAULT_PLACEMENT,
    Placement(tiers=(("m2",), ("m0", "m1"))),
    Placement(pinned=("m1",)),
    Placement(overprovisioning_factor=140, health_check_port=9090),
    Placement(shares=(("m0", 30), ("m4", 70))),
    Placement(drained=frozenset({"m2"})),
    Placement(ramps=(("m4", 40),)),  # weights scaled together: never derived
)


def member_port(member: Member, zones: dict[str, list[tuple[str, bool]]]) -> MemberPort:
    """(address, draining) per zone."""
    return MemberPort(
        member,
        False,
        tuple(
            ZoneBackends(
                zone,
                tuple(sorted({Backend(a, 8080, draining) for a, draining in backends})),
                replicas=len({a for a, draining in backends if not draining}),
            )
            for zone, backends in sorted(zones.items())
        ),
    )


_zones = st.dictionaries(
    st.sampled_from(("east-1a", "east-1b", "west-1a", "south-1a")),
    st.lists(
        st.tuples(st.sampled_from(("10.0.0.1", "10.0.0.2", "10.0.1.1", "fd00::1")), st.booleans()),
        min_size=1,
        max_size=3,
    ),
    min_size=1,
    max_size=2,
)
# What happens between two publishes, to which members; "change" gives them these zones, and
# "generation" is a full translation (the memos rotate).
_operations = st.tuples(
    st.sampled_from(("lose", "restore", "change", "generation")),
    st.sets(st.integers(0, len(MEMBERS) - 1), min_size=1, max_size=3),
    _zones,
)


def fresh(port: ServicePortBackends, view: LocalityView, placement: Placement) -> bytes:
    """What a translation that never saw an earlier state joins."""
    with Memo().active():
        again = ServicePortBackends(port.key, port.members)
        return bytes(endpoints.assignment(again, view, placement).SerializeToString())


@contextmanager
def counting_splices() -> Iterator[mock.MagicMock]:
    with mock.patch.object(endpoints, "_spliced", wraps=endpoints._spliced) as spliced:
        yield spliced


@settings(max_examples=100, deadline=None)
@given(
    st.lists(_zones, min_size=len(MEMBERS), max_size=len(MEMBERS)),
    st.lists(_operations, min_size=1, max_size=8),
)
def test_assignments_after_any_losses_restores_and_changes_are_what_a_fresh_join_gives(
    zones: list[dict[str, list[tuple[str, bool]]]],
    operations: list[tuple[str, set[int], dict[str, list[tuple[str, bool]]]]],
) -> None:
    contributions = [member_port(m, z) for m, z in zip(MEMBERS, zones, strict=True)]
    present = set(range(len(MEMBERS)))
    memo = Memo()
    ports: list[ServicePortBackends] = []  # all alive, as an index and the memos keep them

    def publish() -> None:
        members = tuple(contributions[i] for i in sorted(present))
        replaced = weakref.ref(ports[-1]) if ports else None
        ports.append(ServicePortBackends(KEY, members, replaced))
        with memo.active():
            for view, placement in itertools.product(VIEWS, PLACEMENTS):
                got = endpoints.assignment(ports[-1], view, placement).SerializeToString()
                assert got == fresh(ports[-1], view, placement)

    publish()
    for kind, chosen, changed in operations:
        if kind == "lose":
            present -= chosen
        elif kind == "restore":
            present |= chosen
        elif kind == "change":
            for position in chosen:
                contributions[position] = member_port(MEMBERS[position], changed)
        else:
            memo.start_generation(object())
        publish()


def test_a_member_lost_is_cut_out_of_every_views_assignment_and_a_second_out_of_those() -> None:
    zones = {"east-1a": [("10.0.0.1", False)], "west-1a": [("10.1.0.1", False)]}
    contributions = [member_port(m, zones) for m in MEMBERS]
    memo = Memo()
    first = ServicePortBackends(KEY, tuple(contributions))
    lost = ServicePortBackends(KEY, tuple(contributions[1:]), weakref.ref(first))
    again = ServicePortBackends(KEY, tuple(contributions[1:4]), weakref.ref(lost))
    # m0 lost: every view keeps a locality in each of its tiers, so all are cut out. m4 then:
    # the southern node's second tier was m4's alone, so that view's priorities move and its
    # assignment is joined anew; the others are cut out of the assignments cut before.
    with memo.active():
        for view in VIEWS:
            endpoints.assignment(first, view)
        for port, cut in ((lost, len(VIEWS)), (again, len(VIEWS) - 1)):
            with counting_splices() as spliced:
                for view in VIEWS:
                    got = endpoints.assignment(port, view).SerializeToString()
                    assert got == fresh(port, view, DEFAULT_PLACEMENT)
            assert spliced.call_count == cut


def test_a_loss_that_empties_a_priority_is_joined_anew() -> None:
    # m4 alone is in the south: for a southern node it is the only priority 0 locality.
    zones = {"east-1a": [("10.0.0.1", False)]}
    contributions = [member_port(m, zones) for m in MEMBERS]
    south = [member_port(MEMBERS[4], {"south-1a": [("10.4.0.1", False)]})]
    first = ServicePortBackends(KEY, (*contributions[:4], *south))
    lost = ServicePortBackends(KEY, tuple(contributions[:4]), weakref.ref(first))
    view = VIEWS[2]
    with Memo().active():
        endpoints.assignment(first, view)
        with counting_splices() as spliced:
            got = endpoints.assignment(lost, view).SerializeToString()

    assert spliced.call_count == 0
    assert got == fresh(lost, view, DEFAULT_PLACEMENT)
