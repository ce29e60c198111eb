"""The convergence plan: the states a run goes through, one marker move per change, and what the
floor needs to answer them.

Each change moves the marker endpoint of the hot service (`Fleet.move_marker`): one endpoint
replaced by another in one member, the smallest change a source can make. The snapshots of every
profile at every step are translated here once, with an encoder of their own, so that the floor
can write the very bytes our server would write without running any of our code during the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from benchmarks.fleet import Fleet, Shape, profiles
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.translate import translate
from xdsfleet.translate.memo import Memo

# Small enough that two thousand clients sync in seconds, large enough to have every locality,
# role and tier: 6 members (one per locality), 50 services of 24 endpoints (4 per member).
CONVERGENCE_SHAPE = Shape(members=6, services=50, endpoints=1_200)


@dataclass(frozen=True, slots=True)
class Plan:
    """The initial state, then one state per change, with each profile's snapshot of each."""

    shape: Shape
    states: tuple[FleetState, ...]
    snapshots: tuple[Mapping[NodeProfile, Snapshot], ...]

    @property
    def changes(self) -> int:
        return len(self.states) - 1


def plan(changes: int, shape: Shape = CONVERGENCE_SHAPE) -> Plan:
    fleet = Fleet(shape)
    states = [fleet.state()]
    for step in range(1, changes + 1):
        fleet.move_marker(step)
        states.append(fleet.state())
    return _translated(shape, states)


def member_loss(shape: Shape, member: int) -> Plan:
    """One change: `member` lost (every service's assignment changes), the marker moved with it
    so that the clients can tell they have it."""
    fleet = Fleet(shape)
    first = fleet.state()
    fleet.move_marker(1)
    fleet.lose(member)
    return _translated(shape, [first, fleet.state()])


def _translated(shape: Shape, states: list[FleetState]) -> Plan:
    encoder = Encoder()
    snapshots = []
    with Memo().active():  # one translator for every state, as a publisher is
        for state in states:
            snapshots.append({p: build_snapshot(translate(state, p), encoder) for p in profiles()})
            encoder.end_generation()
    return Plan(shape=shape, states=tuple(states), snapshots=tuple(snapshots))
