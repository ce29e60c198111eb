"""What both protocol variants share: responses, request outcomes and per-type status."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from xdsfleet.cache.resources import Encoded

# How many unanswered responses per stream are remembered to match ACKs and NACKs against.
INFLIGHT_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Response:
    type_url: str
    nonce: str
    version: str
    resources: tuple[Encoded, ...]
    removed: tuple[str, ...] = ()


class Outcome(StrEnum):
    SUBSCRIBE = "subscribe"  # a request that answers no response (the first, or a change)
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # echoes a nonce that is not the latest: nothing is sent for it
    UNSUPPORTED = "unsupported"  # a type this server does not serve


@dataclass(frozen=True, slots=True)
class RequestResult:
    outcome: Outcome
    type_url: str
    version: str = ""  # for ACK/NACK: the version the response carried
    message: str = ""  # for NACK: Envoy's error_detail.message


@dataclass(frozen=True, slots=True)
class Sent:
    """A response remembered until the client answers it."""

    type_url: str
    version: str
    resources: tuple[Encoded, ...]
    removed: tuple[str, ...] = ()


@dataclass(slots=True)
class TypeStatus:
    """Per stream and type, what an SRE asks: what was sent, what the client holds, and why it
    refused the last thing it refused."""

    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    nack_version: str = ""
    nack_message: str = ""
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    # Per resource: the version the client accepted, and what it refused with its message.
    held: dict[str, str] = field(default_factory=dict, repr=False)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    @property
    def in_sync(self) -> bool:
        return self.sent_nonce != "" and self.sent_version == self.acked_version

    def accept(self, sent: Sent, *, full_state: bool) -> None:
        self.acked_version = sent.version
        self.acks += 1
        if full_state:
            self.held.clear()
        for res in sent.resources:
            self.held[res.name] = res.version
            self.refused.pop(res.name, None)
        for name in sent.removed:
            self.held.pop(name, None)

    def refuse(self, sent: Sent, message: str) -> None:
        self.nacks += 1
        self.nack_version = sent.version
        self.nack_message = message
        for res in sent.resources:
            self.refused[res.name] = (res.version, message)

    def forget(self, name: str) -> None:
        """The client no longer asks for `name`."""
        self.held.pop(name, None)
        self.refused.pop(name, None)

    def summary(self) -> dict[str, object]:
        """The scalar fields, for listings where per-resource maps would be too long."""
        return {
            "sentVersion": self.sent_version,
            "ackedVersion": self.acked_version,
            "inSync": self.in_sync,
            "nackVersion": self.nack_version,
            "nackMessage": self.nack_message,
            "responses": self.responses,
            "acks": self.acks,
            "nacks": self.nacks,
            "resources": len(self.held),
            "refused": len(self.refused),
        }


class Inflight:
    """Responses sent and not yet answered, by nonce, bounded."""

    def __init__(self) -> None:
        self._by_nonce: OrderedDict[str, Sent] = OrderedDict()

    def add(self, nonce: str, sent: Sent) -> None:
        self._by_nonce[nonce] = sent
        while len(self._by_nonce) > INFLIGHT_LIMIT:
            self._by_nonce.popitem(last=False)

    def pop(self, nonce: str) -> Sent | None:
        return self._by_nonce.pop(nonce, None)


class Nonces:
    """Nonces are per stream; a counter is enough to make each one fresh."""

    def __init__(self) -> None:
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return str(self._count)
