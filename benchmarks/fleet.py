"""The benchmark's fleet, generated in code, and the sequence of states its changes go through.

Each change rotates one pod of `default/hot` in one member, and a new state shares every
unchanged object with the previous one, as the sources do: translation then redoes only what an
endpoint event really touches. Every change gives the hot assignment a content never seen
before, so each change has a new EDS version that clients can tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xdsfleet.cache import types
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.model.fleet import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Member,
    MemberState,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate
from xdsfleet.translate.names import cluster_name

NAMESPACE = "default"
SERVICES = 50  # including the hot one
PODS = 3  # per service and member
PORT = 80
TARGET_PORT = 8080
HOT = "hot"
HOT_CLUSTER = cluster_name(NAMESPACE, HOT, PORT)

MEMBERS = (
    Member(name="zone-a", region="eu-west", zone="eu-west-1a"),
    Member(name="zone-b", region="eu-west", zone="eu-west-1b"),
    Member(name="idc", region="on-prem", zone="idc-1"),
)

# Every client is the same kind of sidecar in the same place, so all share one snapshot: the
# fan-out case the cache is built for.
PROFILE = NodeProfile(role=Role.SIDECAR, region="eu-west", zone="eu-west-1a")


@dataclass(frozen=True, slots=True)
class Plan:
    """The initial state, then one state per change, with the snapshot each gives `PROFILE`."""

    states: tuple[FleetState, ...]
    snapshots: tuple[Snapshot, ...]

    def version(self, step: int) -> str:
        """The EDS `version_info` that carries step `step`'s hot assignment."""
        return self.snapshots[step].versions[types.ENDPOINT]


def plan(changes: int) -> Plan:
    states = [_initial()]
    for step in range(1, changes + 1):
        states.append(_rotate_hot_pod(states[-1], step))
    encoder = Encoder()
    snapshots = tuple(build_snapshot(translate(s, PROFILE), encoder) for s in states)
    return Plan(states=tuple(states), snapshots=snapshots)


def _service_names() -> list[str]:
    return [HOT, *(f"svc-{i:02d}" for i in range(SERVICES - 1))]


def _initial() -> FleetState:
    members = []
    for m, member in enumerate(MEMBERS):
        addresses = {
            name: tuple(f"10.{m}.{s}.{p + 1}" for p in range(PODS))
            for s, name in enumerate(_service_names())
        }
        members.append(_member_state(member, addresses))
    return FleetState(name="bench", members=tuple(members))


def _member_state(member: Member, addresses: dict[str, tuple[str, ...]]) -> MemberState:
    return MemberState(
        member=member,
        services=tuple(
            Service(NAMESPACE, name, (ServicePort("http", PORT, target_port=TARGET_PORT),))
            for name in addresses
        ),
        endpoint_slices=tuple(
            _endpoint_slice(member, name, pods) for name, pods in addresses.items()
        ),
        exports=tuple((NAMESPACE, name) for name in addresses),
    )


def _endpoint_slice(member: Member, service: str, addresses: tuple[str, ...]) -> EndpointSlice:
    return EndpointSlice(
        namespace=NAMESPACE,
        name=f"{service}-1",
        service_name=service,
        ports=(EndpointPort("http", TARGET_PORT),),
        endpoints=tuple(Endpoint(addresses=(a,), zone=member.zone) for a in addresses),
    )


def _rotate_hot_pod(state: FleetState, step: int) -> FleetState:
    """Replace the last hot pod of the first member by a pod with an address never used."""
    first = state.members[0]
    slices = list(first.endpoint_slices)
    index = next(i for i, s in enumerate(slices) if s.service_name == HOT)
    kept = slices[index].endpoints[:-1]
    fresh = Endpoint(addresses=(f"10.200.{step // 256}.{step % 256}",), zone=first.member.zone)
    slices[index] = replace(slices[index], endpoints=(*kept, fresh))
    changed = replace(first, endpoint_slices=tuple(slices))
    return replace(state, members=(changed, *state.members[1:]))
