"""What both protocol variants share: responses, request outcomes and per-type status."""

from __future__ import annotations

from collections.abc import Collection, Container, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoded

if TYPE_CHECKING:
    from xdsfleet.cache.snapshot import Snapshot

# Rules 9 and 20: only these types know the legacy wildcard (an empty first request).
LEGACY_WILDCARD = typeurls.FULL_STATE


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
    # The client came back holding what it needed: nothing had to be sent (rules 7 and 19).
    resumed: bool = False

    @property
    def in_sync(self) -> bool:
        if self.sent_nonce == "":
            return self.resumed
        return self.sent_version == self.acked_version

    def resume(self, held: dict[str, str]) -> None:
        """A reconnecting client says what it holds."""
        self.held.update(held)
        self.resumed = True

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


@dataclass(frozen=True, slots=True)
class Pending:
    """The one response of a type that the client has not answered yet (rule 26): nothing more
    of that type is sent until it does, so an ACK or NACK always speaks of the latest response
    and what the client holds is known exactly."""

    nonce: str
    sent: Sent
    # Listeners and routes: the clusters each resource of the response uses.
    uses: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {r.name for r in self.sent.resources}


def clusters_ready(
    clusters: Collection[str],
    *,
    subscribed: Container[str] | None,
    available: Container[str],
    sent: Container[str],
    warming: Container[str],
) -> bool:
    """Whether a route or listener using `clusters` may go out now (rules 13 and 14): every one
    of them the client will be sent without the route (`subscribed`: the names it asks for, or
    None when it asks for none; a wildcard subscription contains every name) has been sent, and
    its assignment after it. A client that asks for clusters only once a route names them
    (gRPC) gets the route first: waiting would deadlock it."""
    if subscribed is None:
        return True
    return all(
        c in sent and c not in warming for c in clusters if c in available and c in subscribed
    )


class Warming:
    """Clusters sent to a client that did not have them, until it accepts an assignment sent
    after them (rule 14): until then they are warming there, and a route naming one would fail
    its requests, so it waits."""

    def __init__(self) -> None:
        self._clusters: dict[str, tuple[str, int]] = {}

    def __contains__(self, cluster: object) -> bool:
        return cluster in self._clusters

    def start(self, cluster: str, eds_name: str, nonce: str) -> None:
        self._clusters[cluster] = (eds_name, int(nonce))

    def stop(self, cluster: str) -> None:
        self._clusters.pop(cluster, None)

    def accepted(self, assignments: Collection[str], nonce: str) -> None:
        """The client accepted the response `nonce`, carrying these assignments."""
        sent = int(nonce)
        for cluster, (eds_name, since) in list(self._clusters.items()):
            if since < sent and eds_name in assignments:
                del self._clusters[cluster]


def news(state: Any, changes: Collection[str] | None) -> bool:
    """Whether a type has something to send: its snapshot changed since it last looked
    (`changes`; None when unknown), or its client asked for more."""
    asked = state.recheck or any(n in state.names for n in state.forced)
    return changes is None or bool(changes) or asked


S = TypeVar("S")


def free_to_send(types: Mapping[str, S], snapshot: Snapshot) -> Iterator[tuple[str, S]]:
    """The requested types that may respond now, in rule-13 order. What comes earlier in a push
    goes first, so a type that has news but waits for an answer (rule 26) holds back the types
    after it. The caller responds for each before asking for the next."""
    held_back = False
    for type_url in typeurls.ORDER:
        state: Any = types[type_url]
        if not state.requested:
            continue
        if state.pending is not None:
            held_back = held_back or news(state, snapshot.changes_since(type_url, state.checked))
            continue
        if not held_back:
            yield type_url, types[type_url]


class Everything:
    """The names a wildcard subscription covers: all of them."""

    def __contains__(self, name: object) -> bool:
        return True


class Nonces:
    """Nonces are per stream; a counter is enough to make each one fresh."""

    def __init__(self) -> None:
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return str(self._count)
