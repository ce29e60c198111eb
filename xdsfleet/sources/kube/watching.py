"""List, then watch, one API resource in a thread of its own; hand what it sees to the loop.

docs/architecture.md, decision 2: the official client blocks, so each watch gets a thread, and
everything it learns reaches the asyncio loop through `loop.call_soon_threadsafe`, in order. The
loop side never blocks and the thread never touches loop state.

The protocol is client-go's reflector's: list (a snapshot and its resourceVersion), then watch
from that version with bookmarks, resuming from the last version seen whenever a watch ends or
drops. A watch the server will not open for now (connection refused, 429 from API Priority and
Fairness, 5xx) is retried from the same version, after `Retry-After` when the server says so,
else with exponential backoff and full jitter, for up to `watch_retry_seconds`; only then, or
on 410 Gone, or when asked to (to confirm a mass removal), does it list again. Lists come from
the API server's cache: the first at resourceVersion "0" (any), later ones at the last version
seen (not older than it), so that a relist never goes back in time; only after 410 Gone or 504
ResourceVersionTooLarge does a list ask etcd (a quorum read, resourceVersion "").

What staleness means (docs/kubernetes.md): a watch that fails is not a reason to distrust what
is known, so it sends nothing; a list that fails is (`Failed`), and a list is only tried again
after the watch retries ran out. A 404 after a successful list is a type that may be about to
come back (an API server restarting serves CRDs late): its objects stay until discovery has not
listed the type for `absent_confirm_seconds`.

It must not interpret objects: it reports what the owner's `prepare` made of each (parsing,
done here, or for a list in the `decoding` workers, so that the event loop never spends seconds
on a big list; a watch event keeps its raw dict too), and whether the API server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from xdsfleet.documents.reading import JsonObject
from xdsfleet.sources.kube.client import (
    ApiError,
    Cluster,
    Gone,
    NotFound,
    TooLarge,
    Unreachable,
    Watch,
)
from xdsfleet.sources.kube.decoding import Decoder
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

# Lists of reflectors without a decoder of their own are decoded in their threads.
_IN_THREAD = Decoder(workers=0)


@dataclass(frozen=True, slots=True)
class Listed:
    """A complete list: every object there is, replacing what was known, each as the
    reflector's `prepare` made it (the object itself without one). `sequence` counts the lists
    this reflector started, this one included (see `Reflector.relist`)."""

    items: tuple[Any, ...]
    sequence: int


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event: ADDED, MODIFIED or DELETED."""

    type: str
    obj: JsonObject
    prepared: Any = None  # the reflector's `prepare` of `obj`


@dataclass(frozen=True, slots=True)
class Failed:
    """The API server cannot be reached, or refuses: what was known is all there is for now."""

    error: str


@dataclass(frozen=True, slots=True)
class Absent:
    """The resource type does not exist on this server (a CRD that is not installed, or one
    discovery no longer lists). It is looked for again every `absent_recheck_seconds`."""

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
        prepare: Callable[[JsonObject], Any] | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        """`prepare` (such as parsing) runs on each object: a watch's in the reflector's
        thread, a list's through `decoder` (in its worker processes when it runs them; without
        a decoder, in this thread)."""
        self._cluster = cluster
        self._prepare = prepare
        self._decode = functools.partial((decoder or _IN_THREAD).decode, prepare=prepare)
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
        # The sequence of the list under way (None between lists): read by the loop.
        self.listing: int | None = None
        self._requested_at = -float("inf")  # when the last list asked for started
        self._relist_due: float | None = None  # when the list asked for may start
        self._watch: Watch | None = None
        # The thread's own state (never touched by the loop):
        self._last = ""  # the newest resourceVersion seen (list, event or bookmark)
        self._resume: str | None = None  # where the next watch starts; None: list first
        self._quorum = False  # the last version is unusable: the next list reads etcd
        self._listed_before = False  # a list succeeded since the type was last absent
        self._missing_since: float | None = None  # 404s since then, by time.monotonic()
        self._refused_since: float | None = None  # watches refused since then
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        # Done once the thread has ended: `join` without a thread of the loop's executor. A
        # thread blocked in a list (which `stop` cannot interrupt) would hold one, and a server
        # stopping with many members would wait for them in turns, six at a time.
        self.ended: asyncio.Future[None] = loop.create_future()
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
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._end)

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _backoff(self, failures: int) -> float:
        ceiling = self._settings.backoff_seconds * 2 ** max(failures - 1, 0)
        return random.uniform(0, min(self._settings.backoff_cap_seconds, ceiling))

    def _prepared(self, obj: JsonObject) -> Any:
        return self._prepare(obj) if self._prepare is not None else None

    def _take_relist_request(self) -> bool:
        with self._lock:
            wanted, self._relist_wanted = self._relist_wanted, False
            return wanted

    def _run(self) -> None:
        reason = "initial"
        failures = 0
        while not self._stopping.is_set():
            if self._take_relist_request() and self._relist_due is None:
                # Lists asked for come at most every `relist_interval_seconds`: a fleet of
                # flapping services must not keep a big member listing. The watch goes on.
                interval = self._settings.relist_interval_seconds
                self._relist_due = max(time.monotonic(), self._requested_at + interval)
            if self._relist_due is not None and time.monotonic() >= self._relist_due:
                self._relist_due = None
                self._requested_at = time.monotonic()
                self._resume, reason = None, "requested"
            if self._resume is None:
                delay, reason = self._list(reason, failures)
                if delay is not None:
                    failures += 1
                    self._wait(delay)
                    continue
                if failures:
                    self._log.info("watch_recovered", failures=failures)
                failures = 0
            timer = None
            if self._relist_due is not None:
                # The list asked for ends this watch when it is due.
                timer = threading.Timer(self._relist_due - time.monotonic(), self._interrupt)
                timer.daemon = True
                timer.start()
            try:
                delay, reason = self._watch_from(self._resume or self._last, failures)
            finally:
                if timer is not None:
                    timer.cancel()
            if delay is None:
                failures = 0
            elif self._resume is None:
                # The watch retries ran out: lists back off from the start again.
                failures = 1
                self._wait(delay)
            else:
                failures += 1
                self._wait(delay)

    def _delay(self, failures: int, error: ApiError | None = None) -> float:
        """How long to wait before trying again: what the server asked for, else backoff."""
        if error is not None and error.retry_after is not None:
            return error.retry_after
        return self._backoff(failures + 1)

    def _list(self, reason: str, failures: int) -> tuple[float | None, str]:
        """List and deliver. Returns how long to wait before listing again (None: it listed)
        and the reason of that next list."""
        with self._lock:
            self._lists_started += 1
            sequence = self.listing = self._lists_started
        try:
            return self._list_once(reason, failures, sequence)
        finally:
            self.listing = None

    def _list_once(self, reason: str, failures: int, sequence: int) -> tuple[float | None, str]:
        version = "" if self._quorum else (self._last or "0")
        metrics.KUBE_LISTS.labels(self.resource.plural, reason).inc()
        try:
            listing = self._cluster.list(
                self.resource,
                namespace=self._namespace,
                label_selector=self._label_selector,
                resource_version=version,
                # No pages for a list not older than N: with `limit`, N means exactly N, an
                # etcd read of its history (client-go drops paging there too). Servers whose
                # watch cache cannot page ignore `limit` at "0"; newer ones page from it.
                limit=self._settings.list_page_size if version in ("", "0") else 0,
                decode=self._decode,
            )
        except NotFound as error:
            return self._not_found(error, reason, failures)
        except (Gone, TooLarge) as error:
            if not self._quorum:
                # This server's cache has not reached the version, or etcd compacted it: a
                # quorum read has neither problem. At once, as client-go does.
                self._log.info("list_version_unavailable", version=version, error=str(error))
                self._quorum = True
                return 0.0, "gone"
            failed: ApiError = error
        except ApiError as error:
            failed = error
        else:
            self._send(Listed(listing.items, sequence))
            self._log.debug("listed", reason=reason, items=len(listing.items), version=version)
            self._last = self._resume = listing.resource_version
            self._quorum = False
            self._listed_before = True
            self._missing_since = None
            return None, reason
        metrics.KUBE_FAILURES.labels(self.resource.plural).inc()
        if reason == "requested" and self._last:
            # A list asked for to confirm what the watch said: without it, the watch still
            # tells what changes (the owner's hold ends on its own), so go back to it.
            self._log.info("confirming_list_failed", error=str(failed))
            self._resume = self._last
            return self._delay(0, failed), "requested"
        self._log.warning("list_failed", reason=reason, error=str(failed))
        self._send(Failed(str(failed)))
        return self._delay(failures, failed), "failure"

    def _not_found(self, error: NotFound, reason: str, failures: int) -> tuple[float, str]:
        """A 404 for the whole type. Before any list: the type is absent. After one: its
        objects stay until discovery confirms it is gone."""
        if not self._listed_before:
            if reason != "absent":
                self._log.warning("resource_absent", error=str(error))
            self._send(Absent(str(error)))
            return self._settings.absent_recheck_seconds, "absent"
        now = time.monotonic()
        first = self._missing_since is None
        if self._missing_since is None:
            self._missing_since = now
        served: bool | None
        try:
            served = self._cluster.served(self.resource)
        except ApiError as discovery_error:
            served = None  # discovery does not answer either: that confirms nothing
            self._log.debug("discovery_failed", error=str(discovery_error))
        missing = now - self._missing_since
        (self._log.warning if first else self._log.debug)(
            "resource_not_found", served=served, missing_seconds=round(missing, 1), error=str(error)
        )
        if missing >= self._settings.absent_confirm_seconds:
            if served is False:
                self._listed_before = False
                self._send(Absent(str(error)))
                return self._settings.absent_recheck_seconds, "absent"
            # Discovery lists it (or does not answer) while the API refuses it: a failing server.
            self._send(Failed(str(error)))
        return min(self._delay(failures), self._settings.absent_confirm_seconds), "missing"

    def _watch_from(self, version: str, failures: int) -> tuple[float | None, str]:
        """Watch until the watch ends. Returns how long to wait before going on (None: at once,
        all is well) and the reason of a list, if the next step is one."""
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
                return None, "requested"
            self._watch = watch
        established = False
        try:
            watch.open()
            established = True
            self._refused_since = None
            for event in watch:
                self._last = resource_version(event.get("object") or {}) or self._last
                if event.get("type") != "BOOKMARK":
                    obj = event.get("object") or {}
                    self._send(Changed(str(event.get("type")), obj, self._prepared(obj)))
        except Gone:
            self._log.info("watch_version_expired", version=self._last)
            self._resume = None  # list, not older than the last version seen
            return None, "gone"
        except TooLarge as error:
            self._log.info("watch_version_unavailable", version=self._last, error=str(error))
            self._resume, self._quorum = None, True
            return None, "gone"
        except ApiError as error:
            if watch.interrupted:
                return None, "interrupted"
            metrics.KUBE_FAILURES.labels(self.resource.plural).inc()
            if established:
                metrics.KUBE_WATCH_RESTARTS.labels(self.resource.plural, "dropped").inc()
                self._log.info("watch_dropped", error=str(error))
                self._resume = self._last
                # A watch that broke after it was established: resume soon, jittered.
                return self._backoff(1), "dropped"
            return self._refused(error, failures), "failure"
        finally:
            with self._lock:
                self._watch = None
        self._resume = self._last
        if watch.interrupted:
            return None, "interrupted"
        metrics.KUBE_WATCH_RESTARTS.labels(self.resource.plural, "expired").inc()
        return None, "expired"

    def _refused(self, error: ApiError, failures: int) -> float:
        """A watch the server would not open. A server that is busy or restarting is asked
        again from the same version, for a while; anything else, or for longer, lists again."""
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        left = self._settings.watch_retry_seconds - (now - self._refused_since)
        if isinstance(error, Unreachable) and left > 0:
            metrics.KUBE_WATCH_RESTARTS.labels(self.resource.plural, "refused").inc()
            # Backoff, but no later than the end of the retries: a server that stays away is
            # noticed by a list that fails (stale) soon after, not a backoff cap later.
            delay = self._delay(failures, error)
            if error.retry_after is None:
                delay = min(delay, left)
            self._log.info("watch_refused", error=str(error), retry_seconds=round(delay, 2))
            self._resume = self._last
            return delay
        self._log.warning("watch_failed", error=str(error))
        self._refused_since = None
        self._resume = None
        return self._delay(0, error)
