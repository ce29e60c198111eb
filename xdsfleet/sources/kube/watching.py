"""List, then watch, one API resource in a thread of its own; hand what it sees to the loop.

docs/architecture.md, decision 2: the official client blocks, so each watch gets a thread, and
everything it learns reaches the asyncio loop through `loop.call_soon_threadsafe`, in order. The
loop side never blocks and the thread never touches loop state.

The protocol is client-go's reflector's: list (a consistent snapshot and its resourceVersion),
then watch from that version with bookmarks, resuming from the last version seen whenever a
watch ends or drops; list again on 410 Gone, after a failure, or when asked to (to confirm a mass
removal). Failures back off exponentially with full jitter.

It must not interpret objects: it reports raw dicts, and whether the API server answers.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from xdsfleet.documents.reading import JsonObject
from xdsfleet.sources.kube.client import ApiError, Cluster, Gone, NotFound, Watch
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Listed:
    """A complete list: every object there is, replacing what was known. `sequence` counts
    the lists this reflector started, this one included (see `Reflector.relist`)."""

    items: tuple[JsonObject, ...]
    sequence: int


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event: ADDED, MODIFIED or DELETED."""

    type: str
    obj: JsonObject


@dataclass(frozen=True, slots=True)
class Failed:
    """The API server cannot be reached, or refuses: what was known is all there is for now."""

    error: str


@dataclass(frozen=True, slots=True)
class Absent:
    """The resource type does not exist on this server (a CRD that is not installed). It is
    looked for again every `absent_recheck_seconds`."""

    error: str


Event = Listed | Changed | Failed | Absent


def resource_version(obj: JsonObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class Reflector:
    """Keeps one resource of one cluster in view. `start` it; `deliver` then receives, on the
    loop, a `Listed` first and `Changed` events after, or `Failed`/`Absent`. A thread that ends
    by a bug calls `on_crash` on the loop."""

    def __init__(
        self,
        *,
        cluster: Cluster,
        resource: ApiResource,
        deliver: Callable[[Event], None],
        on_crash: Callable[[BaseException], None],
        loop: asyncio.AbstractEventLoop,
        settings: KubeSettings,
        name: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> None:
        self._cluster = cluster
        self.resource = resource
        self._deliver = deliver
        self._on_crash = on_crash
        self._loop = loop
        self._settings = settings
        self._namespace = namespace
        self._label_selector = label_selector
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends a backoff early: stopping, or a relist wanted
        self._lock = threading.Lock()
        self._lists_started = 0
        self._relist_wanted = False
        self._watch: Watch | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._log = log.bind(watch=name)

    # --- The loop's side ---

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does within a moment (a blocked read is interrupted)."""
        self._stopping.set()
        self._wake.set()
        self._interrupt()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end (blocking: call it through `asyncio.to_thread`)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def relist(self) -> int:
        """Ask for a fresh list now, cutting short a watch or a backoff. Returns the
        `Listed.sequence` from which a list is sure to have started after this call: that list
        confirms what the watch said before."""
        with self._lock:
            self._relist_wanted = True
            wanted = self._lists_started + 1
        self._wake.set()
        self._interrupt()
        return wanted

    def _interrupt(self) -> None:
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.interrupt()

    # --- The thread's side ---

    def _send(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:
            # The loop is closed: the program is ending, and so is this thread.
            self._stopping.set()

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as error:
            # A bug: say so on the loop, which stops the program rather than serve a fleet that
            # silently stopped following this resource.
            self._log.error("watch_crashed", error=repr(error))
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._on_crash, error)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _backoff(self, failures: int) -> float:
        ceiling = self._settings.backoff_seconds * 2 ** max(failures - 1, 0)
        return random.uniform(0, min(self._settings.backoff_cap_seconds, ceiling))

    def _take_relist_request(self) -> bool:
        with self._lock:
            wanted, self._relist_wanted = self._relist_wanted, False
            return wanted

    def _run(self) -> None:
        version: str | None = None
        reason = "initial"
        failures = 0
        while not self._stopping.is_set():
            if self._take_relist_request():
                version, reason = None, "requested"
            if version is None:
                version, outcome = self._list(reason)
                if outcome == "absent":
                    self._wait(self._settings.absent_recheck_seconds)
                    reason = "absent"
                    continue
                if version is None:
                    failures += 1
                    self._wait(self._backoff(failures))
                    reason = "failure"
                    continue
                if failures:
                    self._log.info("watch_recovered", failures=failures)
                failures = 0
            version, reason = self._watch_from(version)
            if reason == "failure":
                failures += 1
                self._wait(self._backoff(failures))
            elif reason == "dropped":
                # A watch that broke after it was established: resume soon, jittered.
                self._wait(self._backoff(1))

    def _list(self, reason: str) -> tuple[str | None, str]:
        """List and deliver. Returns the list's resourceVersion (None when it failed) and the
        outcome: listed, absent or failed."""
        with self._lock:
            self._lists_started += 1
            sequence = self._lists_started
        metrics.KUBE_LISTS.labels(self.resource.plural, reason).inc()
        try:
            listing = self._cluster.list(
                self.resource, namespace=self._namespace, label_selector=self._label_selector
            )
        except NotFound as error:
            if reason != "absent":
                self._log.warning("resource_absent", error=str(error))
            self._send(Absent(str(error)))
            return None, "absent"
        except ApiError as error:
            metrics.KUBE_FAILURES.labels(self.resource.plural).inc()
            self._log.warning("list_failed", reason=reason, error=str(error))
            self._send(Failed(str(error)))
            return None, "failed"
        self._send(Listed(listing.items, sequence))
        self._log.debug("listed", reason=reason, items=len(listing.items))
        return listing.resource_version, "listed"

    def _watch_from(self, version: str) -> tuple[str | None, str]:
        """Watch until the watch ends. Returns the version to resume from (None: list again)
        and why it ended: expired, dropped, interrupted, gone or failure."""
        timeout = random.randint(self._settings.watch_seconds, 2 * self._settings.watch_seconds)
        watch = self._cluster.watch(
            self.resource,
            resource_version=version,
            timeout_seconds=timeout,
            namespace=self._namespace,
            label_selector=self._label_selector,
        )
        with self._lock:
            if self._stopping.is_set() or self._relist_wanted:
                return version, "interrupted"
            self._watch = watch
        established = False
        try:
            watch.open()
            established = True
            for event in watch:
                version = resource_version(event.get("object") or {}) or version
                if event.get("type") != "BOOKMARK":
                    self._send(Changed(str(event.get("type")), event.get("object") or {}))
        except Gone:
            self._log.info("watch_version_expired", version=version)
            return None, "gone"
        except ApiError as error:
            if watch.interrupted:
                return version, "interrupted"
            metrics.KUBE_FAILURES.labels(self.resource.plural).inc()
            if not established:
                # The server cannot be reached: say so, and list again once it can.
                self._log.warning("watch_failed", error=str(error))
                self._send(Failed(str(error)))
                return None, "failure"
            metrics.KUBE_WATCH_RESTARTS.labels(self.resource.plural, "dropped").inc()
            self._log.info("watch_dropped", error=str(error))
            return version, "dropped"
        finally:
            with self._lock:
                self._watch = None
        if watch.interrupted:
            return version, "interrupted"
        metrics.KUBE_WATCH_RESTARTS.labels(self.resource.plural, "expired").inc()
        return version, "expired"
