"""Where each member of a service port stands for one node: its tier and its locality weights.

The rules of docs/architecture.md, "Localities and tiers" (tiers by topology, weight = healthy
endpoints x member weight), the TrafficPolicy's (explicit tiers, shares, drain, pinning;
docs/policy.md) and the ramps of members back from drain meet here, as plain values: `endpoints`
turns them into assignments. Nothing here builds messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from xdsfleet.model.fleet import Ramp
from xdsfleet.model.policy import PolicySpec
from xdsfleet.translate.localities import LocalityView, Place, tier
from xdsfleet.translate.memo import memoised_by_identity
from xdsfleet.translate.services import MemberPort, ServicePortBackends, ServicePortKey

# Shares are split over a member's zones by their healthy endpoints; scaling keeps that split
# visible in integer weights. Shares are at most 10,000, so a locality weighs at most 10^6.
SHARE_SCALE = 100


@dataclass(frozen=True, slots=True)
class Placement:
    """What a policy says about a service port's endpoints. The default places members by
    topology and weighs them by healthy endpoints x Fleet member weight."""

    # member -> share of its tier, when the policy weighs members (the others keep their Fleet
    # weight as their share); None weighs by healthy endpoints.
    shares: tuple[tuple[str, int], ...] | None = None
    drained: frozenset[str] = frozenset()
    tiers: tuple[tuple[str, ...], ...] = ()  # explicit, first preferred; empty: by topology
    pinned: tuple[str, ...] = ()  # first, before every tier
    overprovisioning_factor: int | None = None
    health_check_port: int | None = None
    # member -> the percentage of its share it gets while it ramps back from drain
    ramps: tuple[tuple[str, int], ...] = ()
    # Computed once: a placement keys the assignment and layout memos of every destination of
    # every profile (a member lost looks 12,000 of them up), and a generated hash is Python.
    _hash: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (self.shares, self.drained, self.tiers, self.pinned)
        rest = (self.overprovisioning_factor, self.health_check_port, self.ramps)
        object.__setattr__(self, "_hash", hash((*fields, *rest)))

    def __hash__(self) -> int:
        return self._hash

    def with_pinned(self, members: tuple[str, ...]) -> Placement:
        return dataclasses.replace(self, pinned=tuple(sorted(members)))


DEFAULT_PLACEMENT = Placement()


def placement_of(
    spec: PolicySpec,
    ramps: tuple[tuple[str, int], ...] = (),
    fleet_drained: frozenset[str] = frozenset(),
) -> Placement:
    """The placement a service port's policy asks for; `fleet_drained` are the members drained
    from every service (`snapshot.fleet_drained`)."""
    weighted = tuple((m.name, m.weight) for m in spec.members if m.weight is not None)
    failover = spec.failover
    return Placement(
        shares=tuple(sorted(weighted)) if weighted else None,
        drained=fleet_drained | {m.name for m in spec.members if m.drain},
        tiers=failover.tiers if failover is not None else (),
        overprovisioning_factor=failover.overprovisioning_factor if failover else None,
        health_check_port=spec.health_check.port if spec.health_check is not None else None,
        ramps=ramps,
    )


@memoised_by_identity
def ramps_by_port(
    ramps: tuple[Ramp, ...],
) -> Mapping[ServicePortKey, tuple[tuple[str, int], ...]]:
    """The ramps of each service port, as `Placement.ramps`; kept while the state shares the
    same tuple."""
    found: dict[ServicePortKey, tuple[tuple[str, int], ...]] = {}
    for ramp in ramps:
        key = ServicePortKey(ramp.namespace, ramp.service, ramp.port)
        found[key] = (*found.get(key, ()), (ramp.member, ramp.percent))
    return found


def member_tier(
    view: LocalityView,
    tiers: tuple[tuple[str, ...], ...],
    pinned: tuple[str, ...],
    place: Place,
) -> int:
    """The tier of the locality at `place` under a placement's `tiers` and `pinned`: explicit
    tiers by position (members left out come last), else by topology from `view`; pinned
    members come before all of them."""
    if tiers:
        base = next((i for i, names in enumerate(tiers) if place.member in names), len(tiers))
    else:
        base = tier(view, place)
    if not pinned:
        return base
    return 0 if place.member in pinned else 1 + base


def weights_and_whether_alone(
    port: ServicePortBackends, placement: Placement
) -> tuple[tuple[tuple[int, ...], ...], bool]:
    """Per member, per zone: the locality weight (0 leaves the locality out), and whether each
    member's weights depend on that member alone: no ramp scales them all and they were not
    scaled down to fit. A member lost then leaves the weights of the others as they were
    (`endpoints` derives the port's layout)."""
    weights = tuple([_member_weights(m, placement) for m in port.members])
    ramping = dict(placement.ramps)
    if not ramping or not any(m.member.name in ramping for m in port.members):
        fitted = _fit(weights)
        return fitted, fitted is weights
    # Weights by endpoints are small integers (one endpoint weighs 1), so scale them as shares
    # are scaled first: 10 % of 1 would otherwise round back to 1. Only while a member ramps:
    # once it is done, the weights are those of a state that never saw the drain.
    scale = 1 if placement.shares is not None else SHARE_SCALE
    ramped = _fit(
        tuple(
            tuple(
                max(1, weight * scale * ramping.get(m.member.name, 100) // 100) if weight else 0
                for weight in member_weights
            )
            for m, member_weights in zip(port.members, weights, strict=True)
        )
    )
    return ramped, False


# Envoy rejects an assignment whose locality weights in one priority add up to more than a
# uint32; replicas times member weight (up to 1,000,000) can get there.
MAX_TOTAL_WEIGHT = 2**32 - 1


def _fit(weights: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Scale weights down, keeping their proportions, so that all of them together (and so
    those of any one priority) stay within what Envoy accepts."""
    total = sum(sum(member) for member in weights)
    if total <= MAX_TOTAL_WEIGHT:
        return weights
    return tuple(
        tuple(max(1, w * MAX_TOTAL_WEIGHT // total) if w else 0 for w in member)
        for member in weights
    )


def _member_weights(member_port: MemberPort, placement: Placement) -> tuple[int, ...]:
    member = member_port.member
    if member.name in placement.drained:
        return tuple(0 for _ in member_port.zones)
    if placement.shares is None:
        weight = member.weight
        return tuple([zone.replicas * weight for zone in member_port.zones])
    share = dict(placement.shares).get(member.name, member.weight)
    total = member_port.replicas
    return tuple(
        max(1, round(share * SHARE_SCALE * zone.replicas / total)) if share and zone.replicas else 0
        for zone in member_port.zones
    )
