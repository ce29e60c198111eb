"""Node profiles: what of an Envoy's identity decides the config it gets.

Every Envoy (or proxyless gRPC client) that maps to the same profile shares one resource set, so
the number of snapshots grows with localities and gateways, not with connected clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# `describe` cuts each part to this: labels go into log lines, and node fields come from clients.
_PART = 64

# Metadata keys read from the Envoy `node` (docs/architecture.md, "Node → profile").
ROLE_KEY = "xdsfleet.io/role"
GATEWAY_KEY = "xdsfleet.io/gateway"
MEMBER_KEY = "xdsfleet.io/member"


class Role(StrEnum):
    GATEWAY = "gateway"
    SIDECAR = "sidecar"
    PROXYLESS = "proxyless"


@dataclass(frozen=True, slots=True)
class NodeProfile:
    role: Role = Role.GATEWAY
    gateway: str | None = None  # "NS/NAME"
    member: str | None = None
    region: str = ""
    zone: str = ""

    def describe(self) -> str:
        """A short human label, used in logs and metrics."""
        parts = [self.role.value]
        if self.gateway:
            parts.append(_short(self.gateway))
        where = "/".join(_short(p) for p in (self.region, self.zone, self.member or "") if p)
        if where:
            parts.append(where)
        return " ".join(parts)


def _short(text: str) -> str:
    return text if len(text) <= _PART else text[:_PART] + "..."


class ProfileError(ValueError):
    """A node whose metadata cannot be mapped to a profile."""


def profile_from_fields(
    *, role: str | None, gateway: str | None, member: str | None, region: str, zone: str
) -> NodeProfile:
    """Build a profile from the values found on a node (or given on the command line)."""
    try:
        parsed_role = Role(role) if role else Role.GATEWAY
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ProfileError(f"{ROLE_KEY}: unknown role {role!r} (expected one of {known})") from None
    if gateway is not None and gateway.count("/") != 1:
        raise ProfileError(f"{GATEWAY_KEY}: expected NAMESPACE/NAME, got {gateway!r}")
    return NodeProfile(
        role=parsed_role, gateway=gateway or None, member=member or None, region=region, zone=zone
    )


def locality_warning(profile: NodeProfile) -> str | None:
    """What goes wrong for a client that says nothing about where it is, if anything: with tiers
    by topology (no `failover.tiers`), every member is then in its first tier, a far region
    included. Proxyless clients are warned too: they share Envoy's priorities."""
    if profile.region or profile.zone or profile.member:
        return None
    return (
        f"{profile.describe()} has no locality (--region, --zone or --member): where tiers "
        "follow topology, every member is in its first tier, other regions included; give "
        "its place, or explicit failover.tiers in a TrafficPolicy"
    )
