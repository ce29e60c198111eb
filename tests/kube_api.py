"""A small Kubernetes API server for tests: enough of the real protocol to exercise watches.

kmock 0.8 has no resourceVersions, 410 Gone or bookmarks, so this emulator has: one
resourceVersion counter for every object (as etcd has), lists and watches with label selectors
and field selectors (name, namespace, a Secret's type; 400 for other fields, as a real server),
bookmarks, a bounded window of past events (a watch from before it gets 410 Gone, as from a
compacted etcd), server-side watch timeouts, and 409 on writes from a stale
resourceVersion (objects, their status subresource, Leases). Like the real server it answers
400 to a resourceVersion that is not a number, and waits (`too_large_seconds`, 3 s on a real
server) then answers 504 `ResourceVersionTooLarge` to one it has not reached; it pages lists
with `limit`/`continue` (except from the cache, `resourceVersion=0`), and a continue token
expires (410); it serves discovery (`/api/v1`, `/apis/GROUP/VERSION`). docs/kubernetes.md says
what it models and what it does not.

It runs on an event loop of its own in a thread, on a free port, so that the blocking client's
threads, async tests and child processes can all reach it. Tests inject faults: `go_down` (the
port refuses), `drop_watches`, `compact`, `conflict_next_writes`, `fail_lists`, `fault` (429,
503 or 504 with `Retry-After`), `hide` (a kind answers 404 and leaves discovery for a while),
`expire_continues`, `hold_lists` (a slow first list). Every method is thread-safe.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import itertools
import json
import shutil
import ssl
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import kube_schema
import yaml
from aiohttp import web

from harness.certs import certificate
from harness.local import free_port
from xdsfleet.sources.kube import resources
from xdsfleet.sources.kube.resources import ApiResource

Obj = dict[str, Any]
_Selector = tuple[str, dict[str, str]]  # a label selector, and a field selector's terms
TOKEN = "emulator-token"

# An exec credential plugin: asks the emulator for a token that expires, as `aws eks get-token`
# asks AWS. Arguments: the emulator's URL and the token's lifetime in seconds.
_PLUGIN = """\
import sys, urllib.error, urllib.request
try:
    url = sys.argv[1] + "/emulator/token?lifetime=" + sys.argv[2]
    with urllib.request.urlopen(url, timeout=5) as answer:
        print(answer.read().decode())
except urllib.error.HTTPError as error:
    sys.stderr.write("token service: " + error.read().decode())
    sys.exit(1)
"""

MEMBER_RESOURCES = (
    resources.SERVICES,
    resources.ENDPOINT_SLICES,
    resources.SERVICE_EXPORTS,
    resources.NODES,
)
FLEET_RESOURCES = (
    resources.FLEETS,
    resources.TRAFFIC_POLICIES,
    resources.GATEWAYS,
    resources.HTTP_ROUTES,
    resources.GRPC_ROUTES,
    resources.REFERENCE_GRANTS,
    resources.NAMESPACES,
    resources.INGRESSES,
    resources.SECRETS,
    resources.LEASES,
)


@dataclass(frozen=True, slots=True)
class _Event:
    version: int
    resource: ApiResource
    type: str
    obj: Obj
    old: Obj | None = None  # the version before, for a MODIFIED event
    at: float = 0.0  # time.monotonic() when it happened


@dataclass(slots=True)
class _Watch:
    response: web.StreamResponse
    request: web.Request
    dropped: bool = False
    abrupt: bool = False


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() when it arrived
    status: int = 0  # what it was answered; 0 while a watch streams

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _error(code: int, reason: str, message: str, *, retry_after: int | None = None) -> web.Response:
    body = _status(code, reason, message)
    headers = {}
    if retry_after is not None:
        # The real server says it twice: in the header and in the Status details.
        body["details"] = {"retryAfterSeconds": retry_after}
        headers["Retry-After"] = str(retry_after)
    return web.json_response(body, status=code, headers=headers)


@dataclass(frozen=True, slots=True)
class _Tls:
    """The emulator's serving certificate (self-signed, for `localhost`), in files for `ssl`."""

    pem: bytes
    certificate: str
    key: str

    @classmethod
    def made(cls) -> _Tls:
        cert_pem, key_pem = certificate(("localhost",))
        folder = Path(tempfile.mkdtemp(prefix="kube-api-tls-"))
        (folder / "tls.crt").write_text(cert_pem)
        (folder / "tls.key").write_text(key_pem)
        return cls(cert_pem.encode(), str(folder / "tls.crt"), str(folder / "tls.key"))


def _too_large(wanted: int, current: int) -> web.Response:
    body = _status(504, "Timeout", f"Too large resource version: {wanted}, current: {current}")
    cause = {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    body["details"] = {"causes": [cause], "retryAfterSeconds": 1}
    return web.json_response(body, status=504, headers={"Retry-After": "1"})


_REASONS = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout", 500: "InternalError"}


@dataclass(slots=True)
class _Fault:
    """The next `count` matching requests answer `status`."""

    status: int
    count: int
    retry_after: int | None
    watches: bool
    lists: bool
    kind: ApiResource | None
    too_large: bool


@dataclass(slots=True)
class _Page:
    """A list being paged: the items left (as JSON, taken at the first page's resourceVersion)
    and when its continue token stops working."""

    items: list[str]
    version: str
    expires: float


# Field labels a real API server filters on: every resource's name and namespace, and the
# kind-specific ones its registry adds (only Secrets' `type` is modelled).
_FIELD_LABELS = {"secrets": ("type",)}


def _field_selector(plural: str, query: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """`fieldSelector` as (field label -> value) and, for a label the server does not support
    for this resource, the message of its 400 (as a real server says it)."""
    wanted: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in query.get("fieldSelector", "").split(","))):
        if "!=" in term or "=" not in term:
            return {}, f"unsupported field selector term {term!r} in the emulator"
        label, value = term.replace("==", "=").split("=", 1)
        if label not in ("metadata.name", "metadata.namespace", *_FIELD_LABELS.get(plural, ())):
            return {}, f"field label not supported: {label}"
        wanted[label] = value
    return wanted, None


def _fields_match(wanted: dict[str, str], obj: Obj) -> bool:
    metadata = obj.get("metadata", {})
    values = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "type": obj.get("type", ""),
    }
    return all(values[label] == value for label, value in wanted.items())


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, joined by commas."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _metadata(obj: Obj) -> Obj:
    metadata = obj.setdefault("metadata", {})
    assert isinstance(metadata, dict)
    return metadata


class ApiEmulator:
    def __init__(
        self,
        *,
        kinds: Iterable[ApiResource] = MEMBER_RESOURCES + FLEET_RESOURCES,
        window: int = 1000,
        history_seconds: float = 75.0,
        bookmark_seconds: float = 60.0,
        too_large_seconds: float = 3.0,
        continue_seconds: float = 300.0,
        cache_pages: bool = False,
        tls: bool = False,
    ) -> None:
        """History is kept per resource, as the API server's watch cache keeps it: at most
        `window` events and none older than `history_seconds` (its event freshness, 75 s); a
        watch from before what is kept of its resource gets 410 Gone. `bookmark_seconds`: how
        often a quiet watch gets a bookmark (a minute on a real server; one also comes just
        before the server-side timeout ends a watch). `too_large_seconds`: how long a request
        for a resourceVersion the server has not reached waits before its 504 (3 s on a real
        server). `continue_seconds`: how long a continue token works (until etcd compacts its
        revision: 5 minutes by default). `cache_pages`: lists from the watch cache
        (`resourceVersion=0`) are paged too, as newer API servers do from snapshots of their
        watch cache (older ones answer them whole, ignoring `limit`). `tls`: serve HTTPS at
        `https://localhost:PORT` with a certificate of its own, which its kubeconfigs trust
        (`certificate-authority-data`)."""
        self.port = free_port()
        self._tls = _Tls.made() if tls else None
        self.bookmark_seconds = bookmark_seconds
        self.too_large_seconds = too_large_seconds
        self.list_delay = 0.0  # seconds each list takes before it is answered
        self._lists_open = threading.Event()  # cleared: lists wait (`hold_lists`)
        self._lists_open.set()
        self.continue_seconds = continue_seconds
        self._cache_pages = cache_pages
        self._kinds = {(k.group, k.version, k.plural): k for k in kinds}
        self._window = window
        self._history_seconds = history_seconds
        self._lock = threading.Lock()
        self._version = 0
        # Per resource: its past events, and the version up to which they are gone.
        self._history: dict[ApiResource, deque[_Event]] = {}
        self._compacted: dict[ApiResource, int] = {}
        self._objects: dict[tuple[ApiResource, str, str], Obj] = {}
        # Each stored object as a list serves it (JSON, without apiVersion and kind), made when
        # it is stored, as a real API server's watch cache keeps objects ready to send: lists
        # then cost the emulator a join, not an encoding of every object (the benchmarks run
        # 50 emulators on the machine they measure; a real API server runs elsewhere).
        self._texts: dict[tuple[ApiResource, str, str], str] = {}
        self._watches: list[_Watch] = []
        self._conflicts = 0
        self._failing_lists = 0
        self._faults: list[_Fault] = []
        self._hidden: dict[ApiResource, float] = {}  # kind -> until (time.monotonic())
        self._forbidden: set[ApiResource] = set()
        self._status_schemas: dict[ApiResource, Obj] = {}
        self._pages: dict[str, _Page] = {}
        self._tokens = itertools.count(1)
        self._credentials: dict[str, float] = {}  # token -> when it expires (time.time())
        self._issuing = True
        self.issued = 0  # tokens handed to exec plugins
        self._uids = itertools.count(1)
        self.requests: list[Request] = []
        self.bookmarks: list[int] = []  # the version of every bookmark sent
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-api", daemon=True)
        self._tick = asyncio.Event()
        self._runner: web.AppRunner | None = None
        # Every aiohttp server this emulator listened with: a connection accepted just as it
        # went down joins its server after the runner's clean-up has closed the others.
        self._servers: list[web.Server] = []

    # --- Life cycle ---

    @property
    def url(self) -> str:
        if self._tls is not None:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._close())
        self._call(self._finish())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        if self._tls is not None:
            shutil.rmtree(Path(self._tls.certificate).parent, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def go_down(self) -> None:
        """Close every connection and stop listening: the port refuses until `come_back`."""
        self._call(self._close())

    def come_back(self) -> None:
        self._call(self._listen())

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        # A short shutdown timeout: watches are aborted, nothing else is in flight for long.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        assert self._runner.server is not None
        self._servers.append(self._runner.server)
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._tls.certificate, self._tls.key)
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def _finish(self) -> None:
        """End what is still running on the loop (handlers of connections the clients keep
        open, watches waking up), so that every socket is closed before the loop is."""
        running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for server in self._servers:
            for handler in server.connections:
                handler.force_close()
        # Closing a transport closes its socket in a callback: let those run.
        for _ in range(3):
            await asyncio.sleep(0)

    async def _close(self) -> None:
        for watch in list(self._watches):
            watch.abrupt = watch.dropped = True
            if watch.request.transport is not None:
                watch.request.transport.abort()
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _cluster_entry(self) -> Obj:
        entry: Obj = {"server": self.url}
        if self._tls is not None:
            entry["certificate-authority-data"] = base64.b64encode(self._tls.pem).decode()
        return entry

    def kubeconfig_text(self, *, context: str = "emulator") -> str:
        """A kubeconfig that reaches this emulator (context `context`)."""
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": context, "cluster": self._cluster_entry()}],
                "users": [{"name": context, "user": {"token": TOKEN}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
                "current-context": context,
            }
        )

    def kubeconfig(self, path: Path, *, context: str = "emulator") -> Path:
        path.write_text(self.kubeconfig_text(context=context))
        return path

    def exec_kubeconfig(self, path: Path, *, lifetime: int = 3600) -> Path:
        """A kubeconfig whose user runs an exec credential plugin (a script beside it) that
        gets a token valid for `lifetime` seconds; an expired or revoked one gets 401."""
        script = path.with_suffix(".plugin.py")
        script.write_text(_PLUGIN)
        user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(script), self.url, str(lifetime)],
                "interactiveMode": "Never",
            }
        }
        document = yaml.safe_load(self.kubeconfig_text())
        document["users"] = [{"name": "emulator", "user": user}]
        path.write_text(yaml.safe_dump(document))
        return path

    def token(self, lifetime: int = 3600) -> str:
        """A token as the plugins get them (for a kubeconfig's `tokenFile`, say), valid for
        `lifetime` seconds, to the whole second as RFC 3339 timestamps usually are."""
        with self._lock:
            self.issued += 1
            token = f"exec-{self.issued}"
            self._credentials[token] = float(int(time.time()) + lifetime)
        return token

    def revoke_tokens(self) -> None:
        """Every token plugins got so far answers 401 from now on."""
        with self._lock:
            self._credentials.clear()

    def issue_tokens(self, issuing: bool) -> None:
        """Whether the plugins' token service answers (it fails with 503 when not)."""
        with self._lock:
            self._issuing = issuing

    # --- Faults ---

    def drop_watches(self, *, abrupt: bool = False) -> None:
        """End every open watch: cleanly (as a server-side timeout does), or by resetting the
        connection."""
        with self._lock:
            for watch in self._watches:
                watch.dropped, watch.abrupt = True, abrupt
        self._loop.call_soon_threadsafe(self._notify)

    def compact(self) -> None:
        """Forget every past event: a watch from any version seen so far gets 410 Gone."""
        with self._lock:
            for kind in self._kinds.values():
                self._compacted[kind] = self._version
            self._history.clear()

    def conflict_next_writes(self, count: int) -> None:
        """The next `count` PUTs find that someone else wrote first (the stored object's
        resourceVersion moves on just before), so they get a genuine 409."""
        with self._lock:
            self._conflicts += count

    def fail_lists(self, count: int) -> None:
        """The next `count` lists answer 503, as an overloaded API server does."""
        with self._lock:
            self._failing_lists = count

    def fault(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: int | None = None,
        watches: bool = True,
        lists: bool = False,
        kind: ApiResource | None = None,
        too_large: bool = False,
    ) -> None:
        """The next `count` watches (and/or lists) of `kind` (any kind without it) answer
        `status` (429 from API Priority and Fairness, 503 or 504 from a server in trouble), with
        `Retry-After` when given. `too_large`: a 504 ResourceVersionTooLarge, what an API
        server whose watch cache lags behind another's answers (after its wait)."""
        fault = _Fault(status, count, retry_after, watches, lists, kind, too_large)
        with self._lock:
            self._faults.append(fault)

    def hide(self, kind: ApiResource, seconds: float = 3600.0) -> None:
        """For `seconds`, `kind` answers 404 and is missing from discovery, as a CRD does while
        an API server restarts (or for good, once it is deleted). Open watches of it end."""
        with self._lock:
            self._hidden[kind] = time.monotonic() + seconds
        self.drop_watches()

    def forbid(self, kind: ApiResource, forbidden: bool = True) -> None:
        """RBAC refuses `kind` (403), as when a Role lacks it."""
        with self._lock:
            if forbidden:
                self._forbidden.add(kind)
            else:
                self._forbidden.discard(kind)

    def unhide(self, kind: ApiResource) -> None:
        with self._lock:
            self._hidden.pop(kind, None)

    def hold_lists(self) -> None:
        """Lists are not answered until `release_lists` (a member whose first list is slow)."""
        self._lists_open.clear()

    def release_lists(self) -> None:
        self._lists_open.set()

    def expire_continues(self) -> None:
        """Every continue token handed out so far is too old now (etcd compacted it)."""
        with self._lock:
            for page in self._pages.values():
                page.expires = 0.0

    def glitch_delete(self, kind: ApiResource, name: str, namespace: str = "default") -> None:
        """Tell watches that an object was deleted while it stays stored: what a watch that
        went wrong would say, and what a fresh list then contradicts."""
        with self._lock:
            obj = copy.deepcopy(self._objects[self._key(kind, namespace, name)])
            self._version += 1
            self._record(kind, "DELETED", obj)
        self._loop.call_soon_threadsafe(self._notify)

    def open_watches(self) -> int:
        with self._lock:
            return len(self._watches)

    # --- Objects, from tests ---

    def apply(self, kind: ApiResource, obj: Obj) -> Obj:
        """Create or replace `obj` regardless of its resourceVersion."""
        with self._lock:
            obj = copy.deepcopy(obj)
            metadata = _metadata(obj)
            key = self._key(kind, metadata.get("namespace"), metadata["name"])
            old = self._objects.get(key)
            stored = self._store(kind, key, obj, old)
        self._loop.call_soon_threadsafe(self._notify)
        return copy.deepcopy(stored)

    def delete(
        self,
        kind: ApiResource,
        name: str,
        namespace: str | None = "default",
        *,
        grace_seconds: float = 0.0,
    ) -> None:
        """Delete at once, or gracefully: the object first gets `metadata.deletionTimestamp`
        (a MODIFIED event) and is gone `grace_seconds` later, as a pod in its grace period or
        an object held by a finalizer is."""
        key = self._key(kind, namespace, name)
        with self._lock:
            if not grace_seconds:
                self._remove(kind, key)
            elif (old := self._objects.get(key)) is not None:
                marked = copy.deepcopy(old)
                stamp = datetime.now(UTC) + timedelta(seconds=grace_seconds)
                marked["metadata"]["deletionTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
                marked["metadata"]["deletionGracePeriodSeconds"] = int(grace_seconds)
                self._store(kind, key, marked, old, touch=True)
                gone = functools.partial(self.delete, kind, name, namespace)
                self._loop.call_soon_threadsafe(
                    functools.partial(self._loop.call_later, grace_seconds, gone)
                )
        self._loop.call_soon_threadsafe(self._notify)

    def status_schema(self, kind: ApiResource, schema: Obj) -> None:
        """Check every status written to `kind` against `schema` (the CRD's OpenAPI v3 schema
        of `status`): what breaks it gets 422 Invalid, as from a real API server."""
        with self._lock:
            self._status_schemas[kind] = schema

    def get(self, kind: ApiResource, name: str, namespace: str | None = "default") -> Obj | None:
        with self._lock:
            found = self._objects.get(self._key(kind, namespace, name))
            return copy.deepcopy(found)

    def lists(self, kind: ApiResource) -> int:
        """How many lists (not watches) of `kind` were served."""
        with self._lock:
            requests = list(self.requests)
        routes = [(self._route(r.path), r) for r in requests if r.method == "GET" and not r.watch]
        return sum(
            1 for route, _ in routes if route is not None and route[0] == kind and not route[2]
        )

    # --- Storage (under the lock) ---

    def _key(
        self, kind: ApiResource, namespace: str | None, name: str
    ) -> tuple[ApiResource, str, str]:
        return kind, (namespace or "default") if kind.namespaced else "", name

    def _record(self, kind: ApiResource, type_: str, obj: Obj, old: Obj | None = None) -> None:
        event = _Event(
            self._version, kind, type_, copy.deepcopy(obj), copy.deepcopy(old), time.monotonic()
        )
        self._history.setdefault(kind, deque()).append(event)
        self._trim(kind)

    def _trim(self, kind: ApiResource) -> None:
        history = self._history.get(kind, deque())
        oldest = time.monotonic() - self._history_seconds
        while history and (len(history) > self._window or history[0].at < oldest):
            self._compacted[kind] = history.popleft().version

    def _store(
        self,
        kind: ApiResource,
        key: tuple[ApiResource, str, str],
        obj: Obj,
        old: Obj | None,
        *,
        touch: bool = False,
    ) -> Obj:
        """Store `obj` as the new version of `old`; an update that changes nothing keeps the
        version (no event), as on a real server, unless `touch`."""
        if kind == resources.ENDPOINT_SLICES:
            # Go's encoding of a slice's empty lists (no omitempty): null, never [] or absent.
            for field_name in ("endpoints", "ports"):
                obj[field_name] = obj.get(field_name) or None
        metadata = _metadata(obj)
        if kind.namespaced:
            metadata["namespace"] = key[1]
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if old is None:
            metadata["uid"] = f"uid-{next(self._uids)}"
            metadata["creationTimestamp"] = "2025-01-01T00:00:00Z"
            metadata["generation"] = 1
        else:
            old_metadata = old["metadata"]
            metadata["uid"] = old_metadata["uid"]
            metadata["creationTimestamp"] = old_metadata["creationTimestamp"]
            changed = obj.get("spec") != old.get("spec")
            metadata["generation"] = old_metadata.get("generation", 1) + (1 if changed else 0)
            for kept in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                if kept in old_metadata:
                    metadata[kept] = old_metadata[kept]
            metadata["resourceVersion"] = old_metadata["resourceVersion"]
            if obj == old and not touch:
                return old
        self._version += 1
        metadata["resourceVersion"] = str(self._version)
        self._objects[key] = obj
        self._texts[key] = json.dumps(
            {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        )
        self._record(kind, "ADDED" if old is None else "MODIFIED", obj, old)
        return obj

    def _remove(self, kind: ApiResource, key: tuple[ApiResource, str, str]) -> Obj | None:
        obj = self._objects.pop(key, None)
        self._texts.pop(key, None)
        if obj is not None:
            self._version += 1
            _metadata(obj)["resourceVersion"] = str(self._version)
            self._record(kind, "DELETED", obj)
        return obj

    def _notify(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # --- HTTP ---

    def _route(self, path: str) -> tuple[ApiResource, str | None, str | None, str] | None:
        """(resource, namespace, name, subresource) of a URL path, or None."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not 1 <= len(rest) <= 3:
            return None
        kind = self._kinds.get((group, version, rest[0]))
        if kind is None:
            return None
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else ""
        return kind, namespace, name, subresource

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = Request(request.method, request.path, dict(request.query), time.monotonic())
        with self._lock:
            self.requests.append(record)
        response = await self._answer(request)
        record.status = response.status
        return response

    def _hidden_now(self, kind: ApiResource) -> bool:
        until = self._hidden.get(kind)
        return until is not None and time.monotonic() < until

    def _discovery(self, path: str) -> web.Response | None:
        """The APIResourceList of `/api/v1` or `/apis/GROUP/VERSION`, None for other paths."""
        parts = path.strip("/").split("/")
        if parts == ["api", "v1"]:
            group, version = "", "v1"
        elif len(parts) == 3 and parts[0] == "apis":
            group, version = parts[1], parts[2]
        else:
            return None
        with self._lock:
            kinds = [
                k
                for (g, v, _), k in sorted(self._kinds.items())
                if (g, v) == (group, version) and not self._hidden_now(k)
            ]
        if not kinds:
            return _error(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [
                    {
                        "name": k.plural,
                        "singularName": k.kind.lower(),
                        "namespaced": k.namespaced,
                        "kind": k.kind,
                        "verbs": ["get", "list", "watch", "create", "update", "delete"],
                    }
                    for k in kinds
                ],
            }
        )

    def _take_fault(self, kind: ApiResource, watch: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind not in (None, kind) or not (fault.watches if watch else fault.lists):
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _issue(self, request: web.Request) -> web.Response:
        with self._lock:
            if not self._issuing:
                return web.Response(status=503, text="no tokens for now")
        token = self.token(int(request.query.get("lifetime", "3600")))
        with self._lock:
            expires = self._credentials[token]
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        credential = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {"token": token, "expirationTimestamp": stamp},
        }
        return web.json_response(credential)

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            return token == TOKEN or self._credentials.get(token, 0.0) > time.time()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/emulator/token":
            return self._issue(request)
        if not self._authorized(request):
            return _error(401, "Unauthorized", "Unauthorized")
        if request.method == "GET" and (discovery := self._discovery(request.path)) is not None:
            return discovery
        route = self._route(request.path)
        if route is None:
            return _error(404, "NotFound", "the server could not find the requested resource")
        kind, namespace, name, subresource = route
        with self._lock:
            hidden = self._hidden_now(kind)
            forbidden = kind in self._forbidden
        if hidden:
            return _error(404, "NotFound", "the server could not find the requested resource")
        if forbidden:
            verb = "watch" if request.query.get("watch") in ("true", "1") else "list"
            group = f" in API group {kind.group!r}" if kind.group else ""
            message = (
                f"{kind.plural}{'.' + kind.group if kind.group else ''} is forbidden: User "
                f'"system:serviceaccount:xdsfleet-system:xdsfleet" cannot {verb} resource '
                f'"{kind.plural}"{group} at the cluster scope'
            )
            return _error(403, "Forbidden", message)
        if name is None:
            if request.method == "GET":
                watch = request.query.get("watch") in ("true", "1")
                fault = self._take_fault(kind, watch)
                if fault is not None and fault.too_large:
                    with self._lock:
                        current = self._version
                    return _too_large(current + 1, current)
                if fault is not None:
                    reason = _REASONS.get(fault.status, "InternalError")
                    message = f"emulated {fault.status}"
                    return _error(fault.status, reason, message, retry_after=fault.retry_after)
                refused = await self._check_version(request)
                if refused is not None:
                    return refused
                if watch:
                    return await self._watch(request, kind, namespace)
                if self.list_delay:
                    await asyncio.sleep(self.list_delay)  # a big list, or a slow etcd
                if not self._lists_open.is_set():
                    await asyncio.get_running_loop().run_in_executor(None, self._lists_open.wait)
                return self._list(request, kind, namespace)
            if request.method == "POST" and (namespace is not None or not kind.namespaced):
                return self._create(kind, namespace, await request.json())
        elif request.method == "GET" and not subresource:
            with self._lock:
                found = self._objects.get(self._key(kind, namespace, name))
            if found is None:
                return _error(404, "NotFound", f'{kind.plural} "{name}" not found')
            return web.json_response(found)
        elif request.method == "PUT" and subresource in ("", "status"):
            return self._replace(kind, namespace, name, subresource, await request.json())
        elif request.method == "DELETE" and not subresource:
            with self._lock:
                removed = self._remove(kind, self._key(kind, namespace, name))
            self._notify()
            if removed is None:
                return _error(404, "NotFound", f'{kind.plural} "{name}" not found')
            return web.json_response(removed)
        return _error(405, "MethodNotAllowed", f"{request.method} {request.path}")

    def _matching(
        self, kind: ApiResource, namespace: str | None, selector: _Selector, obj: Obj
    ) -> bool:
        metadata = obj.get("metadata", {})
        if namespace is not None and metadata.get("namespace") != namespace:
            return False
        labels, fields = selector
        return _labels_match(labels, metadata.get("labels") or {}) and _fields_match(fields, obj)

    async def _check_version(self, request: web.Request) -> web.Response | None:
        """400 for a resourceVersion that is not a number; for one the server has not reached
        yet, a wait and then 504 ResourceVersionTooLarge (what an HA control plane's lagging
        watch cache answers), unless the server gets there meanwhile."""
        text = request.query.get("resourceVersion", "")
        if not text:
            return None
        if not text.isdigit():
            message = f"invalid resource version {text!r}"
            return _error(400, "BadRequest", message)
        wanted = int(text)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.too_large_seconds
        while True:
            with self._lock:
                current = self._version
                tick = self._tick
            if wanted <= current:
                return None
            if loop.time() >= deadline:
                return _too_large(wanted, current)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), max(deadline - loop.time(), 0.001))

    def _list(self, request: web.Request, kind: ApiResource, namespace: str | None) -> web.Response:
        query = request.query
        fields, unsupported = _field_selector(kind.plural, query)
        if unsupported is not None:
            return _error(400, "BadRequest", unsupported)
        selector = (query.get("labelSelector", ""), fields)
        token = query.get("continue", "")
        with self._lock:
            if self._failing_lists:
                self._failing_lists -= 1
                return _error(503, "ServiceUnavailable", "the server is currently unavailable")
            if token:
                if query.get("resourceVersion"):
                    message = "specifying resource version is not allowed when using continue"
                    return _error(400, "BadRequest", message)
                page = self._pages.pop(token, None)
                if page is None or time.monotonic() >= page.expires:
                    message = (
                        "The provided continue parameter is too old to display a consistent list "
                        "result. You can start a new list without the continue parameter."
                    )
                    return _error(410, "Expired", message)
                items, version = page.items, page.version
            else:
                # Serialized under the lock: the snapshot of every page, however the objects
                # change before the next page is asked for (as etcd serves its revision).
                items = [
                    self._texts[key]
                    for key, obj in sorted(
                        ((key, obj) for key, obj in self._objects.items() if key[0] == kind),
                        key=lambda e: e[0][1:],
                    )
                    if self._matching(kind, namespace, selector, obj)
                ]
                version = str(self._version)
            metadata: Obj = {"resourceVersion": version}
            limit = int(query.get("limit") or 0)
            # The watch cache (resourceVersion=0) of an older server ignores `limit`.
            from_cache = query.get("resourceVersion") == "0" and not self._cache_pages
            if limit > 0 and not from_cache and len(items) > limit:
                items, rest = items[:limit], items[limit:]
                next_token = f"page-{next(self._tokens)}"
                expires = time.monotonic() + self.continue_seconds
                self._pages[next_token] = _Page(rest, version, expires)
                metadata["continue"] = next_token
                metadata["remainingItemCount"] = len(rest)
        head = {"apiVersion": kind.api_version, "kind": f"{kind.kind}List", "metadata": metadata}
        body = f'{json.dumps(head)[:-1]}, "items": [{", ".join(items)}]}}'
        return web.Response(text=body, content_type="application/json")

    def _create(self, kind: ApiResource, namespace: str | None, obj: Obj) -> web.Response:
        with self._lock:
            name = _metadata(obj).get("name", "")
            key = self._key(kind, namespace, name)
            if key in self._objects:
                return _error(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
            stored = copy.deepcopy(self._store(kind, key, obj, None))
        self._notify()
        return web.json_response(stored, status=201)

    def _replace(
        self, kind: ApiResource, namespace: str | None, name: str, subresource: str, obj: Obj
    ) -> web.Response:
        with self._lock:
            key = self._key(kind, namespace, name)
            old = self._objects.get(key)
            if old is None:
                return _error(404, "NotFound", f'{kind.plural} "{name}" not found')
            if self._conflicts:
                self._conflicts -= 1
                self._store(kind, key, copy.deepcopy(old), old, touch=True)
                old = self._objects[key]
            sent = _metadata(obj).get("resourceVersion")
            if sent and sent != old["metadata"]["resourceVersion"]:
                message = (
                    f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again"
                )
                return _error(409, "Conflict", message)
            new = copy.deepcopy(old)
            if subresource == "status":
                schema = self._status_schemas.get(kind)
                wrong = kube_schema.problems(obj.get("status"), schema) if schema else []
                if wrong:
                    message = f'{kind.kind} "{name}" is invalid: ' + "; ".join(
                        f"status{w}" for w in wrong
                    )
                    return _error(422, "Invalid", message)
                new["status"] = obj.get("status")
            else:
                new = copy.deepcopy(obj) | {"status": old.get("status")}
                if old.get("status") is None:
                    new.pop("status")
            stored = copy.deepcopy(self._store(kind, key, new, old))
        self._notify()
        return web.json_response(stored)

    async def _send_event(
        self, send: Any, event: _Event, namespace: str | None, selector: _Selector
    ) -> None:
        """One event as a filtered watch sees it: an object that comes into the selector is
        ADDED, one that leaves it DELETED (as it was, at the new version)."""
        kind = event.resource
        now_in = self._matching(kind, namespace, selector, event.obj)
        if event.type != "MODIFIED" or event.old is None:
            if now_in:
                await send(event.type, event.obj)
            return
        was_in = self._matching(kind, namespace, selector, event.old)
        if now_in:
            await send("MODIFIED" if was_in else "ADDED", event.obj)
        elif was_in:
            left = copy.deepcopy(event.old)
            left["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
            await send("DELETED", left)

    async def _watch(
        self, request: web.Request, kind: ApiResource, namespace: str | None
    ) -> web.StreamResponse:
        query = request.query
        fields, unsupported = _field_selector(kind.plural, query)
        if unsupported is not None:
            return _error(400, "BadRequest", unsupported)
        selector = (query.get("labelSelector", ""), fields)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(query.get("timeoutSeconds") or 1800)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        watch = _Watch(response, request)

        async def send(type_: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        with self._lock:
            self._watches.append(watch)
            start = query.get("resourceVersion", "")
            initial = []
            if start in ("", "0"):
                initial = [
                    copy.deepcopy(o)
                    for (k, _, _), o in self._objects.items()
                    if k == kind and self._matching(kind, namespace, selector, o)
                ]
                cursor = self._version
            else:
                cursor = int(start)
        try:
            for obj in initial:
                await send("ADDED", obj)
            next_bookmark = loop.time() + self.bookmark_seconds

            async def bookmark() -> None:
                meta = {"resourceVersion": str(cursor)}
                await send(
                    "BOOKMARK",
                    {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta},
                )
                with self._lock:
                    self.bookmarks.append(cursor)

            while not watch.dropped:
                tick = self._tick
                with self._lock:
                    self._trim(kind)
                    compacted = self._compacted.get(kind, 0)
                    if cursor < compacted:
                        message = f"too old resource version: {cursor} ({compacted})"
                        gone = _status(410, "Expired", message)
                        break_with: Obj | None = gone
                        pending: list[_Event] = []
                    else:
                        break_with = None
                        history = self._history.get(kind, deque())
                        pending = [e for e in history if e.version > cursor]
                        latest = self._version
                if break_with is not None:
                    await send("ERROR", break_with)
                    break
                for event in pending:
                    await self._send_event(send, event, namespace, selector)
                cursor = max(cursor, latest)
                now = loop.time()
                if now >= deadline:
                    if bookmarks:
                        await bookmark()  # the last version, before the timeout ends it
                    break
                if bookmarks and now >= next_bookmark:
                    await bookmark()
                    next_bookmark = now + self.bookmark_seconds
                wake = min(deadline, next_bookmark if bookmarks else deadline) - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tick.wait(), max(wake, 0.001))
            if watch.abrupt:
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            with self._lock:
                self._watches.remove(watch)
        return response
