"""Who is served what: TLS private keys only where clients are known, profiles only to the
identities the Fleet allows them (docs/fleet.md, "Client identities").

The rules, at start:
- mTLS (`--client-ca`): each stream's identity is checked against the served Fleet's
  `spec.identities`; Secrets (SDS) are served to the profiles an identity may claim.
- No mTLS (plaintext, or TLS without a client CA): anyone who reaches the port may claim any
  profile, so Secrets are withheld (stripped from every state before translation) unless the
  server listens on loopback only or `--insecure-secrets` says to serve them anyway.
Either way `serve` says which at start.

It must not read files or sockets; `serve` wires it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from xdsfleet.model.fleet import FleetState
from xdsfleet.model.identity import refusal
from xdsfleet.model.node import NodeProfile
from xdsfleet.server.ads import AdsService, Authorizer

log = structlog.get_logger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Security:
    """What `serve` was told: TLS or not, client certificates or not, where it listens."""

    tls: bool
    mutual: bool
    host: str
    insecure_secrets: bool = False

    @property
    def serves_secrets(self) -> bool:
        return self.mutual or self.insecure_secrets or is_loopback(self.host)

    def prepare(self, state: FleetState) -> FleetState:
        """The state as translation may see it: without Secrets when they are withheld."""
        if self.serves_secrets or not state.secrets:
            return state
        return dataclasses.replace(state, secrets=())

    def authorizer(self, fleet: Callable[[], FleetState | None]) -> Authorizer:
        """Checks each stream against the latest Fleet's identity rules; without mTLS there
        is no identity to check, and every claim stands."""

        def authorize(identity: str | None, profile: NodeProfile) -> str | None:
            state = fleet()
            if not self.mutual or state is None:
                return None
            return refusal(state.identities, identity, profile)

        return authorize

    def revoker(self, ads: AdsService, current: FleetState | None) -> Callable[[FleetState], None]:
        """Follows each state: when the identity rules change (under mTLS), the streams they
        no longer allow are closed; their clients reconnect and are refused."""
        seen = [current.identities if current else ()]

        def follow(state: FleetState) -> None:
            if not self.mutual or state.identities == seen[0]:
                return
            seen[0] = state.identities
            ads.revoke()

        return follow

    def announce(self, first: FleetState) -> None:
        """Say at start what clients can claim and whether Secrets are served."""
        if self.mutual:
            log.info("xds_mtls", identity_rules=len(first.identities))
            if not first.identities:
                log.warning(
                    "identities_unrestricted",
                    reason="the Fleet has no spec.identities: every client the client CA "
                    "vouches for may claim any profile and receive its Secrets",
                )
            return
        if first.identities:
            log.warning(
                "identities_unchecked",
                reason="spec.identities needs mTLS (--client-ca); without it, not checked",
            )
        if self.serves_secrets:
            why = "--insecure-secrets" if self.insecure_secrets else "loopback address"
            log.warning(
                "secrets_served_without_mtls",
                reason=f"{why}: any client that reaches the xDS port may claim a gateway "
                "and receive its TLS private keys",
            )
        else:
            log.warning(
                "secrets_withheld",
                reason="xDS without mTLS on a non-loopback address: TLS Secrets are not "
                "served (HTTPS listeners stay down); give --tls-cert, --tls-key and "
                "--client-ca, or --insecure-secrets",
            )
