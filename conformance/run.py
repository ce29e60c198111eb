"""Run one upstream HTTPRoute conformance test against `xdsfleet serve` and real Envoys.

Each case is sent as upstream sends it (Host, path, method, headers) to the Envoy serving the
Gateway the test names, and checked as upstream's `CompareRoundTrip` checks: status, the backend
(pod name prefix and namespace) and what it received (path, host, method, headers, absent
headers), response headers, redirect Location (scheme, host, port, path), and the mirrors.
Like upstream, a case may take a few seconds to become true (eventual consistency); it fails
when it is still wrong at its deadline.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conformance import status
from conformance.fleet import Fleet, build, read_manifests, remove
from conformance.gocases import Case, GoTest, Var
from harness.local import Backend, Envoy, Response, Server, request, wait_for
from xdsfleet.model.node import NodeProfile
from xdsfleet.tools.bootstrap import XDS_CLUSTER, Target, envoy_bootstrap

CASE_SECONDS = 4.0
DISTRIBUTION_REQUESTS = 500
DISTRIBUTION_TRIES = 10
DISTRIBUTION_TOLERANCE = 0.05
MIRROR_ROUNDS = 5
MIRROR_SECONDS = 30.0  # for the mirrors of one round to have arrived
CORE_FEATURES = {"SupportGateway", "SupportHTTPRoute", "SupportReferenceGrant"}


@dataclass
class Outcome:
    test: GoTest
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    skipped: str = ""  # why the test was not run

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.failures and self.passed > 0


def is_core(test: GoTest) -> bool:
    return set(test.features) <= CORE_FEATURES


def run(test: GoTest, upstream: Path) -> Outcome:
    outcome = Outcome(test)
    manifests = [upstream / "base" / "manifests.yaml"] + [upstream / m for m in test.manifests]
    with tempfile.TemporaryDirectory(prefix="xdsfleet-conformance-") as tmp, ExitStack() as stack:
        fleet = build(read_manifests(manifests), Path(tmp))
        found = status.check(test.status, fleet.root / "fleet.yaml")
        outcome.failures += found
        refused = any("the fleet is refused" in line for line in found)
        outcome.passed += 0 if refused else len(test.status) - len(found)
        if not test.cases:
            return outcome
        backends: dict[str, list[Backend]] = {}  # ns/pod -> its backends (one per port)
        for pod in fleet.pods:
            for port in pod.ports.values():
                key = f"{pod.namespace}/{pod.name}"
                backend = Backend(member=key, address=pod.address, port=port)
                backends.setdefault(key, []).append(backend.start())
                stack.callback(backend.stop)
        server = stack.enter_context(Server(fleet.root / "fleet.yaml"))
        server.start()
        envoys: dict[str, Envoy] = {}

        def envoy_for(gateway: str) -> Envoy:
            if gateway not in envoys:
                boot = envoy_bootstrap(
                    node_id=f"conformance-{gateway.replace('/', '-')}",
                    cluster="conformance",
                    profile=NodeProfile(gateway=gateway, region="r1"),
                    target=Target(port=server.xds_port),
                    admin_port=0,
                )
                envoy = stack.enter_context(Envoy(boot))
                envoy.start()
                wait_for(lambda: _configured(envoy), timeout=30, what=f"{gateway} configured")
                envoys[gateway] = envoy
            return envoys[gateway]

        deleted: tuple[tuple[str, str, str], ...] = ()
        for number, case in enumerate(test.cases):
            if case.deleted != deleted:  # the test deleted objects: serve the fleet without
                deleted = case.deleted
                remove(fleet, deleted)
            problem = _run_case(case, fleet, envoy_for, backends)
            if problem:
                outcome.failures.append(f"case {number} {_describe(case)}: {problem}")
            else:
                outcome.passed += 1
        for number, case in enumerate(test.cases):
            shares = [m for m in case.expected.get("MirroredTo") or [] if m.get("Percent")]
            if shares and not outcome.failures:
                moved = fleet.ports[case.gateway or ""]
                port = moved[_port_of(case, fleet, "")]
                envoy = envoy_for(case.gateway or "")
                if problem := mirrored_share(case, shares[0], backends, port, envoy):
                    outcome.failures.append(f"case {number} mirror share: {problem}")
        if test.weights and test.cases and not outcome.failures:
            moved = fleet.ports[test.cases[0].gateway or ""]
            if problem := distribution(test.weights, moved[_port_of(test.cases[0], fleet, "")]):
                outcome.failures.append(f"weights: {problem}")
    return outcome


def mirrored_share(
    case: Case,
    mirror: dict[str, Any],
    backends: dict[str, list[Backend]],
    port: int,
    envoy: Envoy,
) -> str:
    """As upstream's percentage-mirror check: of 500 requests (a fresh request id each
    round), the share the mirror received within 3 binomial standard deviations of its
    percent; up to 5 rounds. Counted once `envoy`, which sent them, has none in flight."""
    ref = mirror.get("BackendRef") or {}
    pods = backends.get(f"{ref.get('Namespace')}/{ref.get('Name')}", [])
    want = float(mirror["Percent"]) / 100
    tolerance = 3 * math.sqrt(want * (1 - want) / DISTRIBUTION_REQUESTS)
    req = case.expected.get("Request") or {}
    headers = {k: _text(v) for k, v in (req.get("Headers") or {}).items()}
    problem = ""
    for _ in range(MIRROR_ROUNDS):
        path = f"{_text(req.get('Path'))}?rid={uuid.uuid4().hex}"
        for _ in range(DISTRIBUTION_REQUESTS):
            request(port, path, host=_text(req.get("Host")), headers=headers)

        # Mirrors are sent in the background, after the answers: every request has been
        # answered, so what is still in flight upstream is a mirror.
        try:
            wait_for(lambda: _in_flight(envoy) == 0, timeout=MIRROR_SECONDS, what="mirrors")
        except TimeoutError:
            return f"mirrored requests still in flight after {MIRROR_SECONDS} s"
        got = sum(b.received.count(path) for b in pods) / DISTRIBUTION_REQUESTS
        if abs(got - want) <= tolerance:
            return ""
        problem = f"{got:.3f} of requests mirrored, want {want:.2f} +/- {tolerance:.3f}"
    return problem


def _in_flight(envoy: Envoy) -> int:
    """Requests Envoy has sent upstream and not had answered, over every cluster but its ADS
    stream's (always open)."""
    xds = f"cluster.{XDS_CLUSTER}."
    return sum(
        v
        for k, v in envoy.stats().items()
        if k.endswith(".upstream_rq_active") and not k.startswith(xds)
    )


def distribution(weights: dict[str, float], port: int) -> str:
    """As upstream's weighted-distribution check: of 500 requests, each backend's share within
    5 points of its weight; up to 10 tries, as upstream retries."""
    problem = ""
    for _ in range(DISTRIBUTION_TRIES):
        counts: dict[str, int] = {}
        for _ in range(DISTRIBUTION_REQUESTS):
            answer = request(port, "/")
            pod = str(answer.json()["member"]).partition("/")[2] if answer.status == 200 else ""
            counts[pod] = counts.get(pod, 0) + 1
        shares = {k: n / DISTRIBUTION_REQUESTS for k, n in counts.items()}
        wrong = {
            k: round(shares.get(k, 0.0), 3)
            for k in {*weights, *shares}
            if abs(shares.get(k, 0.0) - weights.get(k, 0.0)) > DISTRIBUTION_TOLERANCE
        }
        if not wrong:
            return ""
        problem = f"shares {wrong}, want {weights} +/- {DISTRIBUTION_TOLERANCE}"
    return problem


def _configured(envoy: Envoy) -> bool:
    stats = dict(
        line.split(": ", 1)
        for line in envoy.admin("/stats?filter=manager").splitlines()
        if ": " in line
    )
    return (
        int(stats.get("listener_manager.lds.update_success", "0")) > 0
        and int(stats.get("cluster_manager.cds.update_success", "0")) > 0
        and stats.get("cluster_manager.warming_clusters") == "0"
        and stats.get("listener_manager.total_listeners_warming") == "0"
    )


def _describe(case: Case) -> str:
    req = case.expected.get("Request", {})
    return f"{req.get('Method', 'GET')} {req.get('Host', '')}{req.get('Path', '')}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _run_case(
    case: Case,
    fleet: Fleet,
    envoy_for: Callable[[str], Envoy],
    backends: dict[str, list[Backend]],
) -> str:
    if case.gateway is None or case.gateway not in fleet.ports:
        return f"cannot tell its Gateway ({case.gateway})"
    envoy_for(case.gateway)
    expected = case.expected
    req: dict[str, Any] = expected.get("Request", {})
    host = _text(req.get("Host"))
    moved = fleet.ports[case.gateway]
    upstream_port = _port_of(case, fleet, host)
    scheme = "https" if upstream_port in fleet.https[case.gateway] or case.tls else "http"
    if not host:  # Go sends the address it dials, without a scheme's default port
        default = {"http": 80, "https": 443}[scheme]
        host = "127.0.0.1" if upstream_port == default else f"127.0.0.1:{upstream_port}"
    headers = {k: _text(v) for k, v in (req.get("Headers") or {}).items()}
    echo = expected.get("BackendSetResponseHeaders") or {}
    headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in echo.items())
    path = _text(req.get("Path")) or "/"
    method = _text(req.get("Method")) or "GET"
    # Every request mirrored; a share of them is checked apart (mirrored_share).
    every = [m for m in expected.get("MirroredTo") or [] if not m.get("Percent")]
    mirrors = [m.get("BackendRef", {}) for m in every]
    mirrored = [
        b for m in mirrors for b in backends.get(f"{m.get('Namespace')}/{m.get('Name')}", [])
    ]
    seen = {id(b): len(b.received) for b in mirrored}
    deadline = time.monotonic() + CASE_SECONDS
    while True:
        answer = request(
            moved[upstream_port],
            path,
            host=host,
            method=method,
            headers=headers,
            tls_server_name=(case.sni or host.rsplit(":", 1)[0]) if scheme == "https" else None,
        )
        problem = compare(expected, answer, scheme, path, moved) or _mirrored(
            mirrors, mirrored, seen, path, deadline
        )
        if not problem or time.monotonic() > deadline:
            return problem
        time.sleep(0.2)


def _mirrored(
    mirrors: list[dict[str, Any]],
    mirrored: list[Backend],
    seen: dict[int, int],
    path: str,
    deadline: float,
) -> str:
    """Whether every mirror backend received the path since the case began."""
    for ref in mirrors:
        key = f"{ref.get('Namespace')}/{ref.get('Name')}"

        def arrived(key: str = key) -> bool:
            return any(path in b.received[seen[id(b)] :] for b in mirrored if b.member == key)

        try:
            wait_for(arrived, timeout=max(0.1, deadline - time.monotonic()), what="mirror")
        except TimeoutError:
            return f"mirror {key} did not receive {path}"
    return ""


def _port_of(case: Case, fleet: Fleet, host: str) -> int:
    """The upstream port the case is sent to: a port the test joined, the port in the Host
    when the Gateway listens there (a loop choosing the address by Host), the listener the
    address was asked for, else the Gateway's first listener (as upstream's address)."""
    gateway = case.gateway or ""
    listeners = fleet.listeners[gateway]
    if case.port:
        return int(case.port)
    _, _, port = host.rpartition(":")
    if port.isdigit() and int(port) in fleet.ports[gateway]:
        return int(port)
    if case.section in listeners:
        return listeners[case.section]
    return next(iter(listeners.values()))


def compare(
    expected: dict[str, Any], answer: Response, scheme: str, path: str, moved: dict[int, int]
) -> str:
    """What is wrong with the answer, as upstream's CompareRoundTrip tells it ("" = right)."""
    response = expected.get("Response") or {}
    codes = response.get("StatusCodes") or [response.get("StatusCode") or 200]
    if answer.status not in codes:
        return f"status {answer.status}, want {codes}"
    if answer.status in (200, 204):
        return _compare_backend(expected, answer, path)
    if answer.status in (301, 302, 303, 307, 308) and expected.get("RedirectRequest"):
        return _compare_redirect(expected["RedirectRequest"], answer, scheme, path, moved)
    return ""


def _compare_backend(expected: dict[str, Any], answer: Response, path: str) -> str:
    """Upstream's checks of a 200/204, in its order: what the backend received (empty when
    Envoy answered itself, e.g. a CORS preflight), then the response headers, then the pod."""
    asked = expected.get("ExpectedRequest") or {}
    want = asked.get("Request") if asked else expected.get("Request") or {}
    want = want or {}
    got: dict[str, Any] = {}
    if answer.headers.get("content-type") == "application/json":
        got = answer.json()
    else:  # as upstream: not an echo, so the request is taken as made
        got = {"method": _text(expected.get("Request", {}).get("Method")) or "GET"}
    got_ns, _, got_pod = str(got.get("member", "")).partition("/")
    received = got.get("headers") or {}
    want_path = _text(want.get("Path")) or ("" if asked else "/")
    checks = [
        (_text(want.get("Host")) not in ("", got.get("host")), f"host {got.get('host')!r}"),
        (want_path != got.get("path", ""), f"path {got.get('path')!r}, want {want_path!r}"),
        (
            (_text(want.get("Method")) or "GET") != got.get("method", ""),
            f"method {got.get('method')!r}",
        ),
        (
            _text(expected.get("Namespace")) != got_ns,
            f"namespace {got_ns!r}, want {expected.get('Namespace')!r}",
        ),
    ]
    for wrong, what in checks:
        if wrong:
            return f"backend received {what}"
    for name, value in (want.get("Headers") or {}).items():
        if received.get(name.lower()) != value:
            return f"backend received {name}: {received.get(name.lower())!r}, want {value!r}"
    response = expected.get("Response") or {}
    squeeze = (lambda v: v.replace(" ", "")) if response.get("IgnoreWhitespace") else str
    for name, values in (response.get("ValidHeaderValues") or {}).items():
        found = answer.headers.get(name.lower())
        if found is None or squeeze(found) not in [squeeze(v) for v in values]:
            return f"response header {name}: {found!r}, want one of {values}"
    for name, value in (response.get("Headers") or {}).items():
        found = answer.headers.get(name.lower())
        if found is None or squeeze(found) != squeeze(value):
            return f"response header {name}: {found!r}, want {value!r}"
    for name in response.get("AbsentHeaders") or []:
        if name.lower() in answer.headers:
            return f"response header {name} present, want absent"
    for name in asked.get("AbsentHeaders") or []:
        if name.lower() in received:
            return f"backend received {name}, want it absent"
    if not got_pod.startswith(_text(expected.get("Backend"))):
        return f"backend {got_pod!r}, want {expected.get('Backend')}"
    return ""


def _compare_redirect(
    want: dict[str, Any], answer: Response, scheme: str, path: str, moved: dict[int, int]
) -> str:
    location = urlsplit(answer.headers.get("location", ""))
    back = {local: port for port, local in moved.items()}
    got_port = str(back.get(location.port, location.port)) if location.port else ""
    got = {
        "Scheme": location.scheme,
        "Host": location.hostname or "",
        "Path": location.path,
    }
    wanted = {
        "Scheme": _text(want.get("Scheme")) or scheme,
        "Host": _text(want.get("Host")) or got["Host"],
        "Path": _text(want.get("Path")) or urlsplit(path).path,
    }
    for key, value in wanted.items():
        if got[key] != value:
            return f"Location {answer.headers.get('location')}: {key} {got[key]!r}, want {value!r}"
    port = _text(want.get("Port"))
    if port and got_port != port:
        return f"Location {answer.headers.get('location')}: port {got_port!r}, want {port!r}"
    default = {"http": "80", "https": "443"}.get(got["Scheme"])
    if not port and got_port not in ("", default):
        return f"Location {answer.headers.get('location')}: port {got_port!r}, want none"
    return ""


__all__ = ["Outcome", "Var", "is_core", "run"]
