"""Priorities of localities as seen from one node: the failover order of
docs/architecture.md, "Localities and tiers".

Only the node's (member, zone, region) matters here, so every profile that shares them shares
the endpoint assignments. Nothing here builds messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from xdsfleet.model.node import NodeProfile

SAME_ZONE, SAME_REGION, ELSEWHERE = 0, 1, 2


class LocalityView(NamedTuple):
    """Where a node stands."""

    member: str | None
    zone: str
    region: str


class Place(NamedTuple):
    """Where a locality is: the region, the zone of its endpoints, its member and the zone the
    member is declared in. All that its tier depends on, as plain strings: tiers are looked up
    by place for every locality of every view (`endpoints`), and strings hash once. Places sort
    as localities are sent within a priority: by region, zone, then member."""

    region: str
    zone: str
    member: str
    member_zone: str


def view_of(profile: NodeProfile) -> LocalityView:
    return LocalityView(member=profile.member, zone=profile.zone, region=profile.region)


def tier(view: LocalityView, place: Place) -> int:
    """The tier of endpoints at `place`: nearer is lower. Empty node fields match
    nothing, so a node that says nothing about itself sees every endpoint as elsewhere. Zones
    are compared within a region (two regions may both have a zone `a`). In the node's own
    member, an endpoint is in its zone unless the slice puts it in another zone of the member
    (a regional cluster): then it is in its region. (An endpoint whose slice names no zone is in
    the member's; so is one in the zone the member is declared in.)"""
    in_region = not view.region or view.region == place.region
    if view.zone and view.zone == place.zone and in_region:
        return SAME_ZONE
    if view.member and view.member == place.member:
        return SAME_ZONE if not view.zone or place.zone == place.member_zone else SAME_REGION
    if view.region and view.region == place.region:
        return SAME_REGION
    return ELSEWHERE


def compact(tiers: Iterable[int]) -> dict[int, int]:
    """Map the tiers in use onto priorities 0..k: clients want them contiguous (gRPC's xDS
    client rejects an assignment with a gap)."""
    return {used: priority for priority, used in enumerate(sorted(set(tiers)))}
