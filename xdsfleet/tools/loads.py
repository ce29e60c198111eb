"""How Envoy spreads one cluster's requests over its localities, given their health: the
arithmetic behind `xdsfleet explain`'s shares.

It follows Envoy's load balancer (arch overview: "Priority levels", "Overprovisioning factor",
"Panic threshold", "Locality weighted load balancing") with Envoy's integer steps, so that a
prediction can be checked against a real Envoy request for request:

1. A priority's health is min(100, overprovisioning factor (percent) x healthy hosts / hosts),
   in integers; hosts sent as DRAINING are excluded from every such ratio.
2. The normalized total availability is min(100, the sum of those healths). Each priority in
   turn takes health x 100 / total availability of what is left (integers again), so traffic
   spills to the next priority only what a priority cannot take; what rounding leaves goes to
   the first priority with health.
3. Unless the total availability is 100, a priority with fewer healthy hosts than the panic
   threshold (percent, overprovisioning not applied) is in panic: Envoy ignores health there
   and spreads its share over all of its hosts. When every priority is in panic, the load
   follows the host counts of the priorities instead.
4. Inside a priority not in panic, a locality gets its weight x min(1, factor x healthy /
   hosts) of the priority's share (Envoy's effective locality weight); with no locality left,
   the priority's healthy hosts share it evenly.

Degraded hosts are not modelled: this control plane never sends them. Pure: numbers in, numbers
out; no Envoy messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Envoy's defaults, in percent.
DEFAULT_OVERPROVISIONING = 140
DEFAULT_PANIC_THRESHOLD = 50


@dataclass(frozen=True, slots=True)
class Locality:
    """One `LocalityLbEndpoints` as Envoy holds it: its priority, its weight, its hosts, how
    many of them are healthy, and how many are excluded (sent as DRAINING: Envoy leaves them
    out of every health ratio, yet a priority in panic sends to them too)."""

    priority: int
    weight: int
    hosts: int
    healthy: int
    excluded: int = 0

    @property
    def counted(self) -> int:
        return self.hosts - self.excluded


@dataclass(frozen=True, slots=True)
class Loads:
    """Where requests go: `shares[i]` is locality i's fraction of the cluster's requests;
    `priority_load[p]` the percent priority p gets; `panic[p]` whether Envoy ignores health
    in priority p."""

    shares: tuple[float, ...]
    priority_load: tuple[int, ...]
    panic: tuple[bool, ...]

    @property
    def served(self) -> bool:
        """Whether requests find a host at all (panic disabled and nothing healthy: 503)."""
        return sum(self.shares) > 0


def loads(
    localities: Sequence[Locality],
    *,
    overprovisioning: int = DEFAULT_OVERPROVISIONING,
    panic_threshold: int = DEFAULT_PANIC_THRESHOLD,
    locality_weighted: bool = True,
) -> Loads:
    """Each locality's share of the requests, as Envoy computes it (see the module's steps)."""
    if not localities:
        return Loads((), (), ())
    count = max(loc.priority for loc in localities) + 1
    hosts = [0] * count  # all of them: what panic spreads over
    counted = [0] * count  # less the excluded: what health is a ratio of
    healthy = [0] * count
    for loc in localities:
        hosts[loc.priority] += loc.hosts
        counted[loc.priority] += loc.counted
        healthy[loc.priority] += loc.healthy
    health = [
        min(100, overprovisioning * healthy[p] // counted[p]) if counted[p] else 0
        for p in range(count)
    ]
    availability = min(100, sum(health))
    load = _priority_load(health, availability)
    threshold = min(100, panic_threshold)
    if threshold == 0 and availability == 0:
        # Nothing healthy and panic disabled: Envoy finds no host.
        return Loads(tuple(0.0 for _ in localities), tuple(load), tuple(False for _ in hosts))
    panic = [
        availability != 100 and _in_panic(counted[p], healthy[p], threshold) for p in range(count)
    ]
    if all(panic):
        load = _load_in_total_panic(hosts)
    shares = []
    for loc in localities:
        p = loc.priority
        if panic[p]:
            part = loc.hosts / hosts[p] if hosts[p] else 0.0
        else:
            part = _part_of_priority(loc, localities, overprovisioning, locality_weighted)
        shares.append(load[p] / 100 * part)
    return Loads(tuple(shares), tuple(load), tuple(panic))


def _priority_load(health: Sequence[int], availability: int) -> list[int]:
    load = [0] * len(health)
    if availability == 0:
        load[0] = 100  # Envoy's placeholder: panic (or no host) decides what happens
        return load
    left = 100
    for p, value in enumerate(health):
        load[p] = min(left, value * 100 // availability)
        left -= load[p]
    if left:
        first = next(p for p, value in enumerate(health) if value)
        load[first] += left
    return load


def _in_panic(hosts: int, healthy: int, threshold: int) -> bool:
    percent = 100 * healthy / hosts if hosts else 0.0
    return percent < threshold


def _load_in_total_panic(hosts: Sequence[int]) -> list[int]:
    total = sum(hosts)
    if total == 0:
        return [100] + [0] * (len(hosts) - 1)
    load = [100 * count // total for count in hosts]
    first = next(p for p, count in enumerate(hosts) if count)
    load[first] += 100 - sum(load)
    return load


def _effective_weight(loc: Locality, overprovisioning: int) -> float:
    if not loc.counted:
        return 0.0
    return loc.weight * min(1.0, overprovisioning / 100 * loc.healthy / loc.counted)


def _part_of_priority(
    loc: Locality, localities: Sequence[Locality], overprovisioning: int, locality_weighted: bool
) -> float:
    peers = [other for other in localities if other.priority == loc.priority]
    if locality_weighted:
        total = sum(_effective_weight(other, overprovisioning) for other in peers)
        if total > 0:
            return _effective_weight(loc, overprovisioning) / total
    healthy = sum(other.healthy for other in peers)
    return loc.healthy / healthy if healthy else 0.0
