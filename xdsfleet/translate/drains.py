"""Which members of which service ports are drained, and the slow start of a port: what the app's
ramp agent (`pipeline/ramps.py`) compares between states to see a member come back, and how fast to
bring it back.

It reads the same service and policy indexes as `snapshot`, so a member counts as drained here
exactly when its assignments leave it out. Nothing here builds messages.
"""

from __future__ import annotations

from xdsfleet.model.fleet import FleetState
from xdsfleet.model.policy import SlowStart
from xdsfleet.translate.services import ServicePortKey, service_index
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
    for key, port in service_index(state).items():
        spec = policies.service(key.namespace, key.service, port.port_name)
        found.update((key, m.name) for m in spec.members if m.drain and m.name in members)
        found.update((key, name) for name in everywhere)
    return frozenset(found)


def slow_start(state: FleetState, key: ServicePortKey) -> SlowStart | None:
    """The slow start the policies of `key` set, if any."""
    port = service_index(state).get(key)
    if port is None:
        return None
    spec = policy_index(state.policies).service(key.namespace, key.service, port.port_name)
    return spec.load_balancer.slow_start if spec.load_balancer is not None else None
