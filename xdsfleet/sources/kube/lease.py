"""Leader election on a `coordination.k8s.io` Lease: which replica writes status.

Replicas are identical and all serve (docs/architecture.md, decision 6); only status write-back
needs a single writer, or replicas would overwrite each other's conditions. The protocol is
client-go's leader election: the holder renews `renewTime` every few seconds, on a schedule of
its own (never behind other work); another replica takes over once it has seen the same record,
unchanged, for `leaseDurationSeconds` by its own clock (clocks of different machines are never
compared); every write is a PUT from the resourceVersion just read, so two replicas racing for
the Lease cannot both win (the loser gets a 409). A holder that has not renewed for
`renew_deadline_seconds` (shorter than the lease) stops counting itself the holder before
anyone else may take over, so that two writers never overlap.

It must not write anything but its Lease. Its calls block: run them in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from xdsfleet.documents.reading import JsonObject
from xdsfleet.sources.kube.client import ApiError, Cluster, Conflict, NotFound
from xdsfleet.sources.kube.resources import LEASES

log = structlog.get_logger(__name__)


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        *,
        cluster: Cluster,
        name: str,
        namespace: str,
        identity: str,
        duration_seconds: int = 15,
        renew_deadline_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._name = name
        self._namespace = namespace
        self.identity = identity
        self._duration = duration_seconds
        self._clock = clock
        # The record last seen (its resourceVersion) and when, by our clock.
        self._observed: tuple[str, float] | None = None
        self._deadline = renew_deadline_seconds
        self._renewed: float | None = None  # when this replica last wrote the Lease (our clock)
        self._started = 0.0  # when the attempt under way started
        self.leading = False

    def holding(self) -> bool:
        """Whether this replica may act as the holder now: it renewed within the deadline."""
        return (
            self.leading
            and self._renewed is not None
            and self._clock() - self._renewed < self._deadline
        )

    def try_acquire_or_renew(self) -> bool:
        """Take or keep the Lease; True while this replica holds it. A failed attempt (the API
        server does not answer) keeps the Lease until the renew deadline."""
        try:
            leading = self._attempt()
        except ApiError as error:
            log.warning("lease_unavailable", lease=self._name, error=str(error))
            leading = self.holding()
        if leading != self.leading:
            log.info("lease_acquired" if leading else "lease_lost", identity=self.identity)
        self.leading = leading
        return leading

    def _attempt(self) -> bool:
        now = datetime.now(UTC)
        # The deadline runs from before the request: the other replicas' clocks ran meanwhile.
        self._started = self._clock()
        try:
            lease = self._cluster.get(LEASES, namespace=self._namespace, name=self._name)
        except NotFound:
            return self._create(now)
        spec = lease.get("spec") or {}
        version = str(lease["metadata"].get("resourceVersion", ""))
        if self._observed is None or self._observed[0] != version:
            self._observed = (version, self._clock())
        holder = spec.get("holderIdentity") or ""
        duration = int(spec.get("leaseDurationSeconds") or self._duration)
        if holder and holder != self.identity and self._clock() - self._observed[1] < duration:
            return False  # someone else holds it and renews it
        taking = holder != self.identity
        lease["spec"] = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._duration,
            "renewTime": _micro_time(now),
            "acquireTime": _micro_time(now) if taking else spec.get("acquireTime"),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (1 if taking else 0),
        }
        return self._write(lease)

    def _create(self, now: datetime) -> bool:
        lease: JsonObject = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self._name, "namespace": self._namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._duration,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
        try:
            created = self._cluster.create(LEASES, lease)
        except Conflict:
            return False  # another replica created it first
        self._observed = (str(created["metadata"].get("resourceVersion", "")), self._clock())
        self._renewed = self._started
        return True

    def _write(self, lease: JsonObject) -> bool:
        try:
            written = self._cluster.replace(LEASES, lease)
        except Conflict:
            return False  # another replica wrote it since we read it
        self._observed = (str(written["metadata"].get("resourceVersion", "")), self._clock())
        self._renewed = self._started
        return True

    def release(self) -> None:
        """Give the Lease up (on shutdown), so that another replica takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self._cluster.get(LEASES, namespace=self._namespace, name=self._name)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            self._cluster.replace(LEASES, lease)
            log.info("lease_released", identity=self.identity)
        except ApiError as error:
            log.warning("lease_release_failed", error=str(error))
