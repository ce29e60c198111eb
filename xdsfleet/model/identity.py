"""Who may claim which node profile: the Fleet's `spec.identities` rules (docs/fleet.md).

A node names its own profile in its metadata, and the profile decides what it is served,
TLS private keys included. With mTLS the server knows who the client is (its certificate's
SPIFFE ID, else its subject CN); these rules say which roles, gateways and members each
identity may claim. Pure: the server reads the identity off the connection and asks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsfleet.model.node import NodeProfile, Role

ANY = "*"


@dataclass(frozen=True, slots=True)
class IdentityRule:
    """Clients whose identity matches `identity` (exact, or a prefix when it ends in `*`) may
    claim any of `roles`; a gateway only if `gateways` names it (or holds `*`); a member only
    if `members` names it (or holds `*`). A node that names no gateway (no member) needs none."""

    identity: str
    roles: tuple[Role, ...]
    gateways: tuple[str, ...] = ()
    members: tuple[str, ...] = ()

    def matches(self, identity: str) -> bool:
        if self.identity.endswith(ANY):
            return identity.startswith(self.identity[: -len(ANY)])
        return identity == self.identity

    def allows(self, profile: NodeProfile) -> bool:
        return (
            profile.role in self.roles
            and _allowed(profile.gateway, self.gateways)
            and _allowed(profile.member, self.members)
        )


def _allowed(claimed: str | None, listed: tuple[str, ...]) -> bool:
    return claimed is None or ANY in listed or claimed in listed


def refusal(
    rules: Sequence[IdentityRule], identity: str | None, profile: NodeProfile
) -> str | None:
    """Why `identity` may not claim `profile`, or None if it may. Without rules, every
    identity the client CA vouches for may claim every profile (the CA is then the only gate);
    with rules, a client without an identity may claim nothing."""
    if not rules:
        return None
    if identity is None:
        return "the Fleet lists identities and this client presented none"
    matching = [rule for rule in rules if rule.matches(identity)]
    if not matching:
        return f"identity {identity!r} is not listed in the Fleet's spec.identities"
    if any(rule.allows(profile) for rule in matching):
        return None
    return f"identity {identity!r} may not claim {profile.describe()!r}"
