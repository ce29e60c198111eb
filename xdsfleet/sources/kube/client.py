"""The one door to a Kubernetes API server: the official `kubernetes` client, wrapped.

Only this module imports `kubernetes` (an import-linter contract), so the rest of the program
sees plain JSON dicts and the exceptions below, never the client's models or urllib3's errors.
The client's generated models are skipped on purpose: objects are parsed by our own strict
parser (`objects`), which needs the JSON as the API server sent it.

Every request carries a client-side timeout (`_request_timeout`); sockets use TCP keepalive.
Without both, a request over a cut network would block its thread forever. Every call blocks:
never call this from the event loop's thread. It must not decide anything (retries, backoff,
relists belong to `watching`), only speak HTTP and report what happened.

Credentials (`_Credentials`) are the exception to "decide nothing", as in client-go: a
kubeconfig whose user runs an exec credential plugin (EKS, GKE, AKS) gets its credentials on
the first request, in the caller's thread (building a `Cluster` on the event loop runs no
plugin), again shortly before the credential's `expirationTimestamp`, and again when the server
answers 401 (the request is then sent once more). A plugin that yields nothing fails every
request with its own error message, instead of the client's silent unauthenticated requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.keepalive import tcp_keepalive_socket_options
from kubernetes.watch.watch import iter_resp_lines

from xdsfleet.documents.reading import JsonObject
from xdsfleet.sources.kube.pages import Page, Unreadable, decode_page
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.settings import KubeSettings


class ApiError(Exception):
    """A request the API server refused, or that did not reach it. `retry_after`: the seconds
    its `Retry-After` header asked the client to wait, if any."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class Gone(ApiError):
    """410: the resourceVersion (or a list's continue token) is too old; list again."""


class NotFound(ApiError):
    """404: no such object, or no such resource type (a CRD that is not installed)."""


class Conflict(ApiError):
    """409: a write from a stale resourceVersion, or a create of something that exists."""


class Unreachable(ApiError):
    """No answer in time, a connection refused or cut, an overloaded or failing server."""


class TooLarge(Unreachable):
    """504 ResourceVersionTooLarge: this API server (an HA control plane's lagging watch cache)
    has not reached the resourceVersion asked for; a list from etcd (a quorum read) has."""


class AccessError(Exception):
    """The kubeconfig (or in-cluster service account) cannot be used to reach a cluster."""


@dataclass(frozen=True, slots=True)
class Access:
    """How to reach one cluster: a kubeconfig file (and context), a kubeconfig's text (from a
    member Secret), or, with neither, the pod's own service account."""

    kubeconfig: str | None = None
    context: str | None = None
    kubeconfig_text: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        if self.kubeconfig_text is not None:
            return "kubeconfig from a Secret"
        if self.kubeconfig is not None:
            context = f" (context {self.context})" if self.context else ""
            return f"kubeconfig {self.kubeconfig}{context}"
        return "in-cluster service account"


@dataclass(frozen=True, slots=True)
class Listing:
    items: tuple[Any, ...]  # each object as the list's `decode` made it
    resource_version: str


def _message(body: object, default: str) -> str:
    """The `message` of a Status body, else `default`."""
    if isinstance(body, (str, bytes)):
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return default


def _error(status: int, message: str, retry_after: float | None = None) -> ApiError:
    if status == 410:
        return Gone(status, message)
    if status == 404:
        return NotFound(status, message)
    if status == 409:
        return Conflict(status, message)
    if status == 504 and "too large resource version" in message.lower():
        return TooLarge(status, message, retry_after)
    if status == 0 or status == 429 or status >= 500:
        return Unreachable(status, message, retry_after)
    return ApiError(status, message)


def _retry_after(value: object) -> float | None:
    """A `Retry-After` header in seconds (the API server never sends an HTTP date)."""
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turn whatever the client and urllib3 raise into our exceptions."""
    try:
        yield
    except ApiException as error:
        status = int(error.status or 0)
        raise _error(status, _message(error.body, str(error.reason or ""))) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise Unreachable(0, f"{type(error).__name__}: {error}") from None
    except ValueError as error:  # a body that is not JSON: the server is not well
        raise Unreachable(0, f"unreadable answer: {error}") from None


def _named(entries: object, name: object, key: str) -> dict[str, Any]:
    """The `key` part of the entry called `name` in a kubeconfig list (contexts, users)."""
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            found = entry.get(key)
            return found if isinstance(found, dict) else {}
    return {}


def _runs_a_plugin(document: object, context: str | None) -> bool:
    """Whether the kubeconfig's user (in `context`, else the current one) gets credentials that
    change: from an exec plugin, an auth provider (OIDC's refresh is a request), or a token file
    (rotated by whoever writes it: a projected service account token, a Vault agent)."""
    if not isinstance(document, dict):
        return False
    selected = _named(
        document.get("contexts"), context or document.get("current-context"), "context"
    )
    user = _named(document.get("users"), selected.get("user"), "user")
    return bool({"exec", "auth-provider", "tokenFile"} & user.keys())


class _Swallowed(logging.Handler):
    """Collects what the kubernetes loader logs instead of raising (a failing exec plugin)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "kubernetes" in record.pathname:
            self.messages.append(record.getMessage())


_YAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Credentials:
    """The kubeconfig user's credentials of one `Cluster`, loaded into its configuration, and
    loaded again when they are about to expire or the server refuses them (see the module
    docstring). Thread-safe: the watch threads of a cluster share it."""

    # Refreshed this long before they expire (at most), as a share of their lifetime.
    SKEW_SECONDS = 60.0
    SKEW_SHARE = 0.2

    def __init__(self, access: Access, configuration: Any) -> None:
        self._access = access
        self._configuration = configuration
        self._lock = threading.Lock()
        self.generation = 0  # counts loads: a 401 after a newer load needs no other
        self._refresh_at: float | None = None  # time.monotonic(); None: no expiry
        try:
            # Read once, by libyaml: the client's own loader (pure-Python YAML, twice) took
            # ~30 ms per member, on the event loop, at start-up (BENCHMARKS.md, kubestart).
            # Paths in a kubeconfig file are relative to its directory, as kubectl has them.
            if access.kubeconfig_text is not None:
                document, base = yaml.load(access.kubeconfig_text, Loader=_YAML), None
            elif access.kubeconfig is not None:
                path = Path(access.kubeconfig).expanduser()
                document, base = yaml.load(path.read_text(), Loader=_YAML), str(path.parent)
            else:
                config.load_incluster_config(client_configuration=configuration)
                self.plugin = False
                return
            self.plugin = _runs_a_plugin(document, access.context)
            self._loader = config.kube_config.KubeConfigLoader(
                config_dict=document, active_context=access.context, config_base_path=base
            )
            if not self.plugin:
                self._loader.load_and_set(configuration)
                # Credentials that never change: the client's hook would copy them into the
                # configuration again before every request, looking up proxies in the
                # environment each time (~0.2 ms, 300 list pages at a cold start).
                configuration.refresh_api_key_hook = None
        except Exception as error:
            # The loaders raise ConfigException, yaml, OS and key errors alike: all mean the same.
            raise AccessError(f"{access.describe()}: {_safe(error)}") from None
        # With a plugin, nothing is loaded until the first request (off the event loop).
        self._loaded = not self.plugin

    def current(self) -> int:
        """Make sure credentials are loaded and not about to expire; their generation."""
        with self._lock:
            due = self._refresh_at is not None and time.monotonic() >= self._refresh_at
            if not self._loaded or due:
                self._load()
            return self.generation

    def refused(self, generation: int) -> bool:
        """The server answered 401 to credentials of `generation`: load them again (unless
        another thread already has). False when there is nothing to load again."""
        if not self.plugin:
            return False
        with self._lock:
            if generation == self.generation:
                self._load()
        return True

    def _load(self) -> None:
        swallowed = _Swallowed()
        root = logging.getLogger()
        root.addHandler(swallowed)
        try:
            self._loader.load_and_set(self._configuration)
        except Exception as error:
            raise ApiError(401, f"credentials of {self._access.describe()}: {error}") from None
        finally:
            root.removeHandler(swallowed)
        # We refresh ourselves: the client's own hook would run the plugin on every request
        # once a short-lived credential is within its fixed 5-minute margin.
        self._configuration.refresh_api_key_hook = None
        self.generation += 1
        self._loaded = True
        if not (self._configuration.api_key.get("BearerToken") or self._configuration.cert_file):
            reason = "; ".join(swallowed.messages) or "the kubeconfig's user gave no credentials"
            self._loaded = False  # try again on the next request
            raise ApiError(401, f"no credentials from {self._access.describe()}: {reason}")
        expiry = getattr(self._loader, "expiry", None)
        self._refresh_at = None
        if isinstance(expiry, datetime):
            lifetime = (expiry - datetime.now(UTC)).total_seconds()
            skew = min(self.SKEW_SECONDS, self.SKEW_SHARE * max(lifetime, 0.0))
            self._refresh_at = time.monotonic() + lifetime - skew


def _configuration(access: Access, settings: KubeSettings) -> tuple[Any, _Credentials]:
    configuration = client.Configuration()
    credentials = _Credentials(access, configuration)
    configuration.socket_options = tcp_keepalive_socket_options(
        idle=settings.keepalive_idle,
        interval=settings.keepalive_interval,
        count=settings.keepalive_count,
    )
    # No retries inside urllib3: `watching` retries with backoff and reports what failed.
    configuration.retries = 0
    return configuration, credentials


def _safe(error: Exception) -> str:
    """What went wrong, without the kubeconfig's content: a YAML error quotes the lines around
    its position, which may hold a token or a key, and this text goes to logs and /debug."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"not valid YAML ({error.problem or 'unreadable'}{where})"
    if isinstance(error, yaml.YAMLError):
        return "not valid YAML"
    return str(error)


class Cluster:
    """One API server, reached through one `kubernetes.client.ApiClient` (thread-safe: its
    urllib3 pool is shared by every watch thread of the cluster)."""

    def __init__(self, access: Access, settings: KubeSettings) -> None:
        """Cheap enough for the event loop: no request, no credential plugin (see
        `_Credentials`). Raises `AccessError` for a kubeconfig that cannot be used."""
        self.access = access
        self._settings = settings
        configuration, self._credentials = _configuration(access, settings)
        self._api = client.ApiClient(configuration=configuration)

    def close(self) -> None:
        self._api.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool | None] | None = None,
        body: JsonObject | None = None,
        read_seconds: float,
    ) -> Any:
        """Send one request and return urllib3's response, unread; non-2xx answers raise. A 401
        to credentials a plugin gave is sent once more with fresh ones."""
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = (self._settings.connect_seconds, read_seconds)
        refreshed = False
        while True:
            generation = self._credentials.current()
            serialized = self._api.param_serialize(
                method=method,
                resource_path=path,
                query_params=params,
                header_params=dict(headers),
                body=body,
                auth_settings=["BearerToken"],
            )
            with _translated():
                response = self._api.call_api(*serialized, _request_timeout=timeout)
                if 200 <= response.status <= 299:
                    return response.response
                data = response.read()
            if response.status == 401 and not refreshed and self._credentials.refused(generation):
                refreshed = True
                continue
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise _error(response.status, _message(data, str(response.reason)), retry_after)

    def _body(self, method: str, path: str, **kwargs: Any) -> bytes:
        """The whole body of a 2xx answer, as sent."""
        kwargs.setdefault("read_seconds", self._settings.request_seconds)
        response = self._request(method, path, **kwargs)
        with _translated():
            try:
                data: bytes = response.data
            finally:
                response.release_conn()
        return data

    def _json(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        data = self._body(method, path, **kwargs)
        with _translated():
            document = json.loads(data)
        if not isinstance(document, dict):
            raise Unreachable(0, f"expected a JSON object from {path}")
        return document

    def list(
        self,
        resource: ApiResource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        resource_version: str = "",
        limit: int = 0,
        decode: Callable[[bytes], Page] = decode_page,
    ) -> Listing:
        """Every object, in pages of `limit` when it is set, each page's bytes made into a
        `Page` by `decode` (by default, the objects as JSON dicts). `resource_version`: "" for
        the latest (a quorum read from etcd), "0" for any (the API server's watch cache), a
        version for one at least that new. A continue token that expired (410) restarts the
        list without pages, as client-go's pager does."""
        items: list[Any] = []
        first: dict[str, str | int | bool | None] = {
            "labelSelector": label_selector,
            "fieldSelector": resource.field_selector,
            "resourceVersion": resource_version or None,
        }
        query = {**first, "limit": limit or None}
        path = resource.path(namespace=namespace)
        while True:
            try:
                data = self._body(
                    "GET", path, query=query, read_seconds=self._settings.list_seconds
                )
            except Gone:
                if "continue" not in query:
                    raise
                query = first
                items.clear()
                continue
            try:
                page = decode(data)
            except Unreadable as error:
                raise Unreachable(0, f"{path}: {error}") from None
            items += page.items
            if not page.continue_token:
                return Listing(tuple(items), page.resource_version)
            # Pages go on from the first one's snapshot: no resourceVersion with a token.
            query = {
                "labelSelector": label_selector,
                "fieldSelector": resource.field_selector,
                "limit": limit,
                "continue": page.continue_token,
            }

    def served(self, resource: ApiResource) -> bool:
        """Whether discovery lists `resource`: False once its CRD is really gone."""
        root = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
        try:
            document = self._json("GET", root)
        except NotFound:
            return False
        return any(
            isinstance(r, dict) and r.get("name") == resource.plural
            for r in document.get("resources") or []
        )

    def watch(
        self,
        resource: ApiResource,
        *,
        resource_version: str,
        timeout_seconds: int,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> Watch:
        """A watch from `resource_version`, with bookmarks, ended by the server after
        `timeout_seconds`. It is not sent until `Watch.open`."""
        query: dict[str, str | int | bool | None] = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
            "labelSelector": label_selector,
            "fieldSelector": resource.field_selector,
        }
        path = resource.path(namespace=namespace)
        read_seconds = timeout_seconds + self._settings.watch_read_margin
        return Watch(lambda: self._request("GET", path, query=query, read_seconds=read_seconds))

    def get(self, resource: ApiResource, *, name: str, namespace: str | None = None) -> JsonObject:
        return self._json("GET", resource.path(namespace=namespace, name=name))

    def create(self, resource: ApiResource, obj: JsonObject) -> JsonObject:
        namespace = obj.get("metadata", {}).get("namespace")
        return self._json("POST", resource.path(namespace=namespace), body=obj)

    def replace(
        self, resource: ApiResource, obj: JsonObject, *, subresource: str = ""
    ) -> JsonObject:
        """PUT the object (or its `status` subresource); the API server answers 409 when its
        `metadata.resourceVersion` is not the current one."""
        metadata = obj.get("metadata", {})
        path = resource.path(
            namespace=metadata.get("namespace"), name=metadata["name"], subresource=subresource
        )
        return self._json("PUT", path, body=obj)


class Watch:
    """One watch request. Iterate it for events (`{"type": ..., "object": ...}`, bookmarks
    included); an ERROR event raises (`Gone` for 410). `interrupt`, from any thread, ends it:
    the iteration then stops quietly, even in the middle of a blocking read."""

    def __init__(self, send: Callable[[], Any]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._response: Any = None
        self.interrupted = False

    def open(self) -> None:
        """Send the request; raises when the server cannot be reached or refuses."""
        response = self._send()
        with self._lock:
            self._response = response
            if self.interrupted:
                self._shut()

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True
            if self._response is not None:
                self._shut()

    def _shut(self) -> None:
        # Closing the socket would not wake a thread blocked reading it; shutting it down does.
        # It fails only when the response is already closed, which is the wanted state.
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self._response.shutdown()

    def __iter__(self) -> Iterator[JsonObject]:
        response = self._response
        if response is None:
            raise RuntimeError("Watch.open first")
        try:
            with _translated():
                for line in iter_resp_lines(response):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise _error(int(status.get("code") or 0), _message(status, line))
                    yield event
        except Unreachable:
            if not self.interrupted:
                raise
        finally:
            response.close()
            response.release_conn()
