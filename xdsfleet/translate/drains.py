"""Which members of which service ports are drained, and the slow start of a port: what the app's
ramp agent (`pipeline/ramps.py`) compares between states to see a member come back, and how fast to
bring it back.

It reads the same service ports and policy index as `snapshot`, so a member counts as drained
here exactly when its assignments leave it out. Nothing here builds messages, nor reads
endpoints: the ports come from the members' Services alone (`exported_ports`), because the ramp
agent asks on the event loop whenever a policy or the Fleet's members change, and gathering
every endpoint of a large fleet (`service_index`) took most of a second there.
"""

from __future__ import annotations

from xdsfleet.model.fleet import FleetState
from xdsfleet.model.policy import SlowStart
from xdsfleet.translate.services import SERVED_PROTOCOL, ServicePortKey
from xdsfleet.translate.snapshot import fleet_drained, policy_index

Drained = frozenset[tuple[ServicePortKey, str]]  # (service port, member)


def drained(state: FleetState) -> Drained:
    """Every (service port, member of the Fleet) drained by a service's policy, by the Fleet
    (`snapshot.fleet_drained`), or both, whether the member exports the
    port now or not: one that starts exporting it while drained must still ramp back."""
    policies = policy_index(state.policies)
    members = {m.member.name for m in state.members}
    everywhere = fleet_drained(state) & members
    found: set[tuple[ServicePortKey, str]] = set()
    for key, port_name in exported_ports(state).items():
        spec = policies.service(key.namespace, key.service, port_name)
        found.update((key, m.name) for m in spec.members if m.drain and m.name in members)
        found.update((key, name) for name in everywhere)
    return frozenset(found)


def slow_start(state: FleetState, key: ServicePortKey) -> SlowStart | None:
    """The slow start the policies of `key` set, if any."""
    port_name = exported_ports(state).get(key)
    if port_name is None:
        return None
    spec = policy_index(state.policies).service(key.namespace, key.service, port_name)
    return spec.load_balancer.slow_start if spec.load_balancer is not None else None


def exported_ports(state: FleetState) -> dict[ServicePortKey, str]:
    """The keys of `service_index(state)`, each with its `port_name` (the first exporting
    member's name for the port), read from the Services without their endpoints."""
    ports: dict[ServicePortKey, str] = {}
    for member_state in state.members:
        exported = None if state.export_all else set(member_state.exports)
        for service in member_state.services:
            if exported is not None and (service.namespace, service.name) not in exported:
                continue
            for service_port in service.ports:
                if service_port.protocol != SERVED_PROTOCOL:
                    continue
                key = ServicePortKey(service.namespace, service.name, service_port.port)
                if not ports.get(key):
                    ports[key] = service_port.name
    return ports
