"""Whether a client holds what is served to it now, per type: the states `xdsfleet status`
prints, as `istioctl proxy-status` does.

SYNCED: the last response is ACKed and every resource the client holds is the version served
now. NACKED: the client rejected the last response sent. Otherwise the latest is on its way:
PENDING while the last response is at most 5 s old, STALE after (a client that stopped
answering, or a change the writer has not sent for that long). NOT_SENT: nothing sent yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from xdsfleet.admin.v1 import admin_pb2
from xdsfleet.cache.resources import Encoded
from xdsfleet.server.protocol import TypeStatus

STALE_AFTER_SECONDS = 5.0

SyncState = admin_pb2.SyncState

# From best to worst: a client's state is the worst of its types'.
_RANK = (
    admin_pb2.SYNCED,
    admin_pb2.NOT_SENT,
    admin_pb2.PENDING,
    admin_pb2.STALE,
    admin_pb2.NACKED,
)


def type_state(
    status: TypeStatus, served: Mapping[str, Encoded], sent_at: float, now: float
) -> SyncState:
    if not status.sent_nonce:
        return admin_pb2.NOT_SENT
    if status.nack_version == status.sent_version != status.acked_version:
        return admin_pb2.NACKED
    answered = status.acked_version == status.sent_version
    if answered and all(
        (current := served.get(name)) is not None and current.version == res.version
        for name, res in status.holding.items()
    ):
        return admin_pb2.SYNCED
    return admin_pb2.STALE if now - sent_at > STALE_AFTER_SECONDS else admin_pb2.PENDING


def worst(states: Iterable[SyncState]) -> SyncState:
    return max(states, key=_RANK.index, default=admin_pb2.NOT_SENT)


def name(state: SyncState) -> str:
    return str(admin_pb2.SyncState.Name(state))
