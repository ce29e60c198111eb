"""What both protocol variants share: responses, request outcomes and per-type status."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
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

    @property
    def in_sync(self) -> bool:
        return self.sent_nonce != "" and self.sent_version == self.acked_version


@dataclass(frozen=True, slots=True)
class Sent:
    """A response remembered until the client answers it."""

    type_url: str
    version: str
    resources: tuple[Encoded, ...]


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
