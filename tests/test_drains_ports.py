"""`drains.exported_ports` reads the service ports from the Services alone; it must name exactly
the ports `service_index` builds from the endpoints too, with the same port names, or a drained
member would be missed (or a ramp started for a port that is not served)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xdsfleet.model.fleet import FleetState, Member, MemberState, Service, ServicePort
from xdsfleet.translate.drains import exported_ports
from xdsfleet.translate.services import service_index

_NAMES = ("a", "b", "c")

_ports = st.lists(
    st.builds(
        ServicePort,
        name=st.sampled_from(("", "http", "grpc")),
        port=st.sampled_from((80, 443, 8080)),
        protocol=st.sampled_from(("TCP", "TCP", "UDP")),
    ),
    max_size=3,
).map(tuple)

_services = st.lists(
    st.builds(
        Service,
        namespace=st.sampled_from(("default", "shop")),
        name=st.sampled_from(_NAMES),
        ports=_ports,
    ),
    max_size=4,
    unique_by=lambda s: (s.namespace, s.name),
).map(tuple)


@st.composite
def _members(draw: st.DrawFn) -> tuple[MemberState, ...]:
    count = draw(st.integers(min_value=0, max_value=3))
    members = []
    for index in range(count):
        services = draw(_services)
        keys = [(s.namespace, s.name) for s in services]
        exports = draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
        member = Member(name=f"m{index}", region="r", zone=f"z{index}")
        members.append(MemberState(member, services=services, exports=tuple(exports)))
    return tuple(members)


@settings(max_examples=200, deadline=None)
@given(members=_members(), export_all=st.booleans())
def test_exported_ports_are_the_service_index_ports(
    members: tuple[MemberState, ...], export_all: bool
) -> None:
    state = FleetState(name="f", members=members, export_all=export_all)
    index = service_index(state)
    assert exported_ports(state) == {key: port.port_name for key, port in index.items()}
