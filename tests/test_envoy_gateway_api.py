"""Gateway API semantics through `xdsfleet serve` and a real Envoy, case by case in the style of
the upstream conformance tests (`conformance/tests/httproute-*` of kubernetes-sigs/gateway-api):
each request names a Host and a path, and the assertion is on which backend answered and what
it received, or on the status and Location Envoy answered with.

One server and one Envoy for the module: one Gateway whose listeners share ports (hostname
intersection, SNI, allowedRoutes selectors), routes across namespaces with and without
ReferenceGrants, partially invalid routes, backend filters, redirects and CORS.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conformance.fleet import fleet_document
from harness.local import Backend, Envoy, Response, Server, free_port, request, wait_for
from xdsfleet.model.node import NodeProfile
from xdsfleet.tools.bootstrap import Target, envoy_bootstrap

pytestmark = pytest.mark.envoy

CONVERGE_SECONDS = 30
SERVICE_PORT = 8080
# namespace/service -> the loopback address of its one pod
PODS = {
    "infra/v1": "127.0.31.1",
    "infra/v2": "127.0.31.2",
    "infra/v3": "127.0.31.3",
    "web/web-backend": "127.0.31.4",
    "web/web-other": "127.0.31.5",
    "blue/blue-backend": "127.0.31.6",
    "infra/ws": "127.0.31.7",
    "infra/h2c": "127.0.31.8",
}
# Service ports with an appProtocol (Gateway API backend protocol).
APP_PROTOCOLS = {"ws": "kubernetes.io/ws", "h2c": "kubernetes.io/h2c"}
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Gateway:
    envoy: Envoy
    ports: dict[str, int]  # listener group -> port
    certificates: dict[str, bytes]  # SNI name -> the DER certificate served for it

    def send(self, port: str, host: str, path: str = "/", **kw: Any) -> Response:
        return request(self.ports[port], path, host=host, **kw)

    def serving(self) -> bool:
        """Whether every port answers from a backend (each is a listener of its own)."""
        return [
            backend_of(self.send("hosts", "very.specific.com", "/s1")),
            backend_of(self.send("shared", "grant.example")),
            backend_of(self.send("selected", "blue.example")),
            backend_of(self.send("tls", "a.example.com", tls_server_name="a.example.com")),
            backend_of(self.send("tls", "b.example.com", tls_server_name="b.example.com")),
        ] == ["v1", "web-backend", "blue-backend", "v1", "v2"]


def backend_of(response: Response) -> str:
    """Which service answered (the Backend's `member` label), or the status when none did."""
    return str(response.json()["member"]) if response.status == 200 else str(response.status)


def _certificate(directory: Path, name: str) -> tuple[str, str, bytes]:
    """A self-signed certificate for `name`: (PEM certificate, PEM key, DER certificate)."""
    key, cert, der = (directory / f"{name}.{x}" for x in ("key", "crt", "der"))
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *(
                "-nodes",
                "-days",
                "1",
                "-subj",
                f"/CN={name}",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "der", "-out", str(der)],
        check=True,
        capture_output=True,
    )
    return cert.read_text(), key.read_text(), der.read_bytes()


def _member_docs(target_port: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for key, address in PODS.items():
        namespace, name = key.split("/")
        metadata = {"name": name, "namespace": namespace}
        port: dict[str, Any] = {"name": "http", "port": SERVICE_PORT, "targetPort": target_port}
        if name in APP_PROTOCOLS:
            port["appProtocol"] = APP_PROTOCOLS[name]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {"ports": [port]},
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {**metadata, "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": target_port}],
                "endpoints": [{"addresses": [address]}],
            }
        )
    return docs


def _route(
    name: str,
    rules: list[dict[str, Any]],
    *,
    hostnames: list[str] | None = None,
    namespace: str = "infra",
    port: int | None = None,
    section: str | None = None,
) -> dict[str, Any]:
    parent: dict[str, Any] = {"name": "gw", "namespace": "infra"}
    if port is not None:
        parent["port"] = port
    if section is not None:
        parent["sectionName"] = section
    spec: dict[str, Any] = {"parentRefs": [parent], "rules": rules}
    if hostnames:
        spec["hostnames"] = hostnames
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _to(service: str, path: str = "/", **backend: Any) -> dict[str, Any]:
    """A rule: PathPrefix `path` to `service` (NS/NAME or NAME in infra)."""
    namespace, _, name = service.rpartition("/")
    ref = {"name": name, "port": SERVICE_PORT, **backend}
    if namespace:
        ref["namespace"] = namespace
    return {"matches": [{"path": {"type": "PathPrefix", "value": path}}], "backendRefs": [ref]}


def _redirect(path: str, **redirect: Any) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": path}}],
        "filters": [{"type": "RequestRedirect", "requestRedirect": redirect}],
    }


def _route_docs(ports: dict[str, int]) -> list[dict[str, Any]]:
    hosts, shared, tls, selected = (ports[k] for k in ("hosts", "shared", "tls", "selected"))
    listeners = [
        # Three HTTP listeners on one port, told apart by hostname (HostnameIntersection).
        {"name": "l1", "port": hosts, "protocol": "HTTP", "hostname": "very.specific.com"},
        {"name": "l2", "port": hosts, "protocol": "HTTP", "hostname": "*.wildcard.io"},
        {"name": "l3", "port": hosts, "protocol": "HTTP", "hostname": "*.anotherwildcard.io"},
        {
            "name": "shared",
            "port": shared,
            "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": "All"}},
        },
        # Two HTTPS listeners on one port, each with its own certificate (HTTPSListener).
        *(
            {
                "name": f"tls-{x}",
                "port": tls,
                "protocol": "HTTPS",
                "hostname": f"{x}.example.com",
                "tls": {"certificateRefs": [{"kind": "Secret", "name": f"cert-{x}"}]},
            }
            for x in ("a", "b")
        ),
        # And one for every other host (no hostname): a host no other listener owns is its.
        {
            "name": "tls-any",
            "port": tls,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"kind": "Secret", "name": "cert-any"}]},
        },
        {
            "name": "selected",
            "port": selected,
            "protocol": "HTTP",
            "allowedRoutes": {
                "namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "blue"}}},
                "kinds": [{"kind": "HTTPRoute"}],
            },
        },
    ]
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "infra"},
        "spec": {"gatewayClassName": "xdsfleet", "listeners": listeners},
    }
    return [
        gateway,
        *(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}}
            for n, labels in (("blue", {"team": "blue"}), ("red", {"team": "red"}))
        ),
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "infra-routes", "namespace": "web"},
            "spec": {
                "from": [
                    {
                        "group": "gateway.networking.k8s.io",
                        "kind": "HTTPRoute",
                        "namespace": "infra",
                    }
                ],
                "to": [{"group": "", "kind": "Service", "name": "web-backend"}],
            },
        },
        # HostnameIntersection (upstream's routes, on the port of l1 to l3).
        _route(
            "specific-host-matches-listener-specific-host",
            [_to("v1", "/s1")],
            hostnames=["non.matching.com", "*.nonmatchingwildcard.io", "very.specific.com"],
            port=hosts,
        ),
        _route(
            "specific-host-matches-listener-wildcard-host",
            [_to("v2", "/s2")],
            hostnames=["non.matching.com", "wildcard.io", "foo.wildcard.io", "foo.bar.wildcard.io"],
            port=hosts,
        ),
        _route(
            "wildcard-host-matches-listener-specific-host",
            [_to("v3", "/s3")],
            hostnames=["non.matching.com", "*.specific.com"],
            port=hosts,
        ),
        _route(
            "wildcard-host-matches-listener-wildcard-host",
            [_to("v1", "/s4")],
            hostnames=["*.anotherwildcard.io"],
            port=hosts,
        ),
        # Rules of a wildcard route and an exact one merge for the exact host; the exact
        # route's rules come first.
        _route(
            "merge-wildcard",
            [_to("v1", "/b"), _to("v3", "/")],
            hostnames=["*.merge.io"],
            port=shared,
        ),
        _route("merge-exact", [_to("v2", "/b")], hostnames=["x.merge.io"], port=shared),
        # ReferenceGrant and partial validity.
        _route("granted", [_to("web/web-backend")], hostnames=["grant.example"], port=shared),
        _route("not-granted", [_to("web/web-other")], hostnames=["nogrant.example"], port=shared),
        _route(
            "partially-invalid",
            [_to("v1", "/valid"), _to("web/web-other", "/invalid")],
            hostnames=["partial.example"],
            port=shared,
        ),
        _route(
            "unknown-kind",
            [_to("v1", "/valid"), _to("pod", "/unknown", kind="Pod", group="")],
            hostnames=["kind.example"],
            port=shared,
        ),
        # A backend's own filter; the Host header as sent.
        _route(
            "backend-filter",
            [
                {
                    "backendRefs": [
                        {
                            "name": "v2",
                            "port": SERVICE_PORT,
                            "filters": [
                                {
                                    "type": "RequestHeaderModifier",
                                    "requestHeaderModifier": {
                                        "set": [{"name": "x-backend", "value": "v2"}]
                                    },
                                }
                            ],
                        }
                    ]
                }
            ],
            hostnames=["filters.example"],
            port=shared,
        ),
        # URLRewrite and RequestRedirect on a rule's only backendRef (BackendURLRewrite,
        # BackendRequestRedirect).
        _route(
            "backend-rewrite",
            [
                {
                    **_to("v1", "/full"),
                    "backendRefs": [
                        {
                            "name": "v1",
                            "port": SERVICE_PORT,
                            "filters": [
                                {
                                    "type": "URLRewrite",
                                    "urlRewrite": {
                                        "path": {
                                            "type": "ReplaceFullPath",
                                            "replaceFullPath": "/rewritten-full",
                                        }
                                    },
                                }
                            ],
                        }
                    ],
                },
                {
                    **_to("v1", "/redirect"),
                    "backendRefs": [
                        {
                            "name": "v1",
                            "port": SERVICE_PORT,
                            "filters": [
                                {
                                    "type": "RequestRedirect",
                                    "requestRedirect": {"hostname": "elsewhere.example"},
                                }
                            ],
                        }
                    ],
                },
            ],
            hostnames=["backend-filters.example"],
            port=shared,
        ),
        _route(
            "redirects",
            [
                _redirect("/303", statusCode=303, hostname="other.example"),
                _redirect("/307", statusCode=307),
                _redirect("/308", statusCode=308, port=8443),
                _redirect("/https", scheme="https"),
            ],
            hostnames=["redirect.example"],
            port=shared,
        ),
        _route(
            "cors",
            [
                {
                    **_to("v1"),
                    "filters": [
                        {
                            "type": "CORS",
                            "cors": {
                                "allowOrigins": ["https://www.foo.com", "https://*.bar.com"],
                                "allowMethods": ["GET", "PUT"],
                                "allowHeaders": ["x-header-1"],
                                "maxAge": 3600,
                            },
                        }
                    ],
                }
            ],
            hostnames=["cors.example"],
            port=shared,
        ),
        _route(
            "backend-timeout",
            [{**_to("v1"), "timeouts": {"backendRequest": "500ms"}}],
            hostnames=["slow.example"],
            port=shared,
        ),
        _route("websocket", [_to("ws")], hostnames=["ws.example"], port=shared),
        _route("h2c", [_to("h2c")], hostnames=["h2c.example"], port=shared),
        # SNI picks the listener; each route is pinned to one.
        _route("tls-a", [_to("v1")], section="tls-a"),
        _route("tls-b", [_to("v2")], section="tls-b"),
        # allowedRoutes: a namespace the selector picks, and one it does not.
        _route(
            "blue",
            [_to("blue/blue-backend")],
            namespace="blue",
            hostnames=["blue.example"],
            port=selected,
        ),
        _route("red", [_to("v1")], namespace="red", hostnames=["red.example"], port=selected),
    ]


def _secret_doc(name: str, certificate: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "infra"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": certificate, "tls.key": key},
    }


class WebSocketEcho:
    """A WebSocket server answering each connection's first text frame with the same text."""

    def __init__(self, address: str, port: int) -> None:
        self._server = socket.create_server((address, port))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> WebSocketEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        # shutdown() wakes the accept() that close() alone would leave blocked.
        self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # shut down
            connection.settimeout(5)
            with connection, contextlib.suppress(OSError):
                head = _read_head(connection)
                key = next(
                    (
                        line.split(":", 1)[1].strip()
                        for line in head.split("\r\n")
                        if line.lower().startswith("sec-websocket-key:")
                    ),
                    None,
                )
                if key is None:
                    continue  # a gateway's TCP health check: it connects and closes
                accept = base64.b64encode(
                    hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()
                ).decode()
                connection.sendall(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    ).encode()
                )
                connection.sendall(_frame(_read_frame(connection), mask=b""))


def _read_head(connection: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed mid-frame")
        data += chunk
    return data


def _frame(payload: bytes, mask: bytes) -> bytes:
    """One final text frame of a short payload, masked when `mask` is given (clients must)."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
    return bytes([0x81, (0x80 if mask else 0) | len(payload)]) + mask + masked


def _read_frame(connection: socket.socket) -> bytes:
    first, second = _read_exactly(connection, 2)
    assert first == 0x81, "a final text frame"
    assert (second & 0x7F) < 126, "a short one"
    mask = _read_exactly(connection, 4) if second & 0x80 else b""
    payload = _read_exactly(connection, second & 0x7F)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway-api")
    target_port = free_port()
    ports = {name: free_port() for name in ("hosts", "shared", "tls", "selected")}
    certificates, secrets = {}, []
    for x, name in (("a", "a.example.com"), ("b", "b.example.com"), ("any", "any.example")):
        certificate, key, der = _certificate(root, name)
        certificates[name] = der
        secrets.append(_secret_doc(f"cert-{x}", certificate, key))
    (root / "routes").mkdir()
    (root / "m1").mkdir()
    # The layout of a conformance run: routes/ and one member, m1.
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet_document()))
    docs = [*_route_docs(ports), *secrets]
    (root / "routes" / "gateway.yaml").write_text(yaml.safe_dump_all(docs))
    (root / "m1" / "services.yaml").write_text(yaml.safe_dump_all(_member_docs(target_port)))
    backends: list[Backend | WebSocketEcho] = [
        Backend(member=key.split("/")[1], address=address, port=target_port).start()
        for key, address in PODS.items()
        if key not in ("infra/ws", "infra/h2c")
    ]
    backends.append(WebSocketEcho(PODS["infra/ws"], target_port).start())
    # A gRPC server speaks HTTP/2 only, in cleartext here: an h2c backend.
    h2c = grpc.server(ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), h2c)
    h2c.add_insecure_port(f"{PODS['infra/h2c']}:{target_port}")
    h2c.start()
    try:
        with Server(root / "fleet.yaml") as server:
            server.start()
            boot = envoy_bootstrap(
                node_id="conformance",
                cluster="test",
                profile=NodeProfile(gateway="infra/gw", region="r1"),
                target=Target(port=server.xds_port),
                admin_port=0,
            )
            with Envoy(boot) as envoy:
                envoy.start()
                found = Gateway(envoy, ports, certificates)
                wait_for(found.serving, timeout=CONVERGE_SECONDS, what="every port serving")
                yield found
    finally:
        h2c.stop(grace=None)
        for backend in backends:
            backend.stop()


def test_listeners_sharing_a_port_serve_the_hostnames_they_intersect(gateway: Gateway) -> None:
    cases = [
        ("very.specific.com", "/s1", "v1"),
        ("very.specific.com:1234", "/s1", "v1"),
        ("non.matching.com", "/s1", "404"),
        ("foo.nonmatchingwildcard.io", "/s1", "404"),
        ("foo.wildcard.io", "/s1", "404"),
        ("very.specific.com", "/non-matching-prefix", "404"),
        ("foo.wildcard.io", "/s2", "v2"),
        ("foo.bar.wildcard.io", "/s2", "v2"),
        ("non.matching.com", "/s2", "404"),
        ("wildcard.io", "/s2", "404"),
        ("very.specific.com", "/s2", "404"),
        ("very.specific.com", "/s3", "v3"),
        ("foo.specific.com", "/s3", "404"),
        ("foo.wildcard.io", "/s3", "404"),
        ("foo.anotherwildcard.io", "/s4", "v1"),
        ("foo.bar.anotherwildcard.io", "/s4", "v1"),
        ("anotherwildcard.io", "/s4", "404"),
        ("foo.wildcard.io", "/s4", "404"),
    ]
    answered = [(h, p, backend_of(gateway.send("hosts", h, p))) for h, p, _ in cases]
    assert answered == cases


def test_the_backend_receives_the_host_as_sent_port_included(gateway: Gateway) -> None:
    host = f"very.specific.com:{gateway.ports['hosts']}"
    answer = gateway.send("hosts", host, "/s1").json()
    assert (answer["member"], answer["host"], answer["path"]) == ("v1", host, "/s1")


def test_rules_of_wildcard_and_exact_routes_merge_with_the_exact_route_first(
    gateway: Gateway,
) -> None:
    cases = [
        ("x.merge.io", "/b", "v2"),  # both routes match; the exact hostname wins
        ("x.merge.io", "/other", "v3"),  # only the wildcard route's rule matches
        ("y.merge.io", "/b", "v1"),
        ("merge.io", "/b", "404"),
    ]
    answered = [(h, p, backend_of(gateway.send("shared", h, p))) for h, p, _ in cases]
    assert answered == cases


def test_cross_namespace_backends_need_a_reference_grant(gateway: Gateway) -> None:
    assert backend_of(gateway.send("shared", "grant.example")) == "web-backend"
    assert gateway.send("shared", "nogrant.example").status == 500
    # The invalid rule answers 500; the route's other rule is served.
    assert backend_of(gateway.send("shared", "partial.example", "/valid")) == "v1"
    assert gateway.send("shared", "partial.example", "/invalid").status == 500


def test_the_gateway_faces_clients_as_an_edge_proxy(gateway: Gateway) -> None:
    # The client's address (the peer Envoy sees) reaches the backend after whatever the
    # client claimed.
    claimed = {"X-Forwarded-For": "203.0.113.7"}
    answer = gateway.send("hosts", "very.specific.com", "/s1", headers=claimed).json()
    forwarded = answer["headers"]["x-forwarded-for"].replace(" ", "").split(",")
    assert len(forwarded) == 2
    assert forwarded[0] == "203.0.113.7"
    # Dot segments are resolved before routing: no reaching /s1 past a /s2 rule's prefix.
    normalized = gateway.send("hosts", "very.specific.com", "/s2/../s1").json()
    assert (normalized["member"], normalized["path"]) == ("v1", "/s1")


def test_a_backend_request_timeout_bounds_each_request_to_the_backend(gateway: Gateway) -> None:
    # HTTPRouteTimeoutBackendRequest: a backend slower than timeouts.backendRequest is a 504
    # (a hedged try would have let the slow answer through).
    assert gateway.send("shared", "slow.example", "/?delay=1s").status == 504
    assert backend_of(gateway.send("shared", "slow.example", "/?delay=100ms")) == "v1"


def test_a_backend_of_an_unknown_kind_answers_500_and_keeps_the_route(gateway: Gateway) -> None:
    assert backend_of(gateway.send("shared", "kind.example", "/valid")) == "v1"
    assert gateway.send("shared", "kind.example", "/unknown").status == 500


def test_a_backend_filter_edits_requests_to_that_backend(gateway: Gateway) -> None:
    answer = gateway.send("shared", "filters.example").json()
    assert (answer["member"], answer["headers"].get("x-backend")) == ("v2", "v2")


def test_redirects_answer_with_the_status_and_keep_a_non_default_listener_port(
    gateway: Gateway,
) -> None:
    port = gateway.ports["shared"]
    cases = {
        "/303": (303, f"http://other.example:{port}/303"),
        "/307": (307, f"http://redirect.example:{port}/307"),
        "/308": (308, "http://redirect.example:8443/308"),
        "/https": (302, "https://redirect.example/https"),
    }
    answered = {}
    for path in cases:
        response = gateway.send("shared", "redirect.example", path)
        answered[path] = (response.status, response.headers.get("location"))
    assert answered == cases


def test_https_listeners_sharing_a_port_present_their_own_certificate(gateway: Gateway) -> None:
    for name, service in (("a.example.com", "v1"), ("b.example.com", "v2")):
        assert _served_certificate(gateway.ports["tls"], name) == gateway.certificates[name]
        response = gateway.send("tls", name, tls_server_name=name)
        assert backend_of(response) == service


def test_a_host_of_another_https_listener_of_the_port_is_misdirected(gateway: Gateway) -> None:
    def status(sni: str, host: str) -> int:
        return gateway.send("tls", host, tls_server_name=sni).status

    # Through a.example.com's chain: b's host, and any host the hostname-less listener owns
    # (no route names it), are another listener's: 421 (HTTPRouteHTTPSListenerDetect...).
    assert (status("a.example.com", "b.example.com"), status("a.example.com", "c.example")) == (
        421,
        421,
    )
    # Through the hostname-less listener's chain (any other SNI name): the named listeners'
    # hosts are misdirected; its own hosts without a route are not found.
    assert (status("c.example", "a.example.com"), status("c.example", "c.example")) == (421, 404)


def _served_certificate(port: int, server_name: str) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_allowed_routes_select_route_namespaces_by_label(gateway: Gateway) -> None:
    assert backend_of(gateway.send("selected", "blue.example")) == "blue-backend"
    assert gateway.send("selected", "red.example").status == 404


def test_cors_answers_preflight_and_allows_the_listed_origins(gateway: Gateway) -> None:
    preflight = gateway.send(
        "shared",
        "cors.example",
        method="OPTIONS",
        headers={"Origin": "https://app.bar.com", "Access-Control-Request-Method": "PUT"},
    )
    assert preflight.status == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.bar.com"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-max-age"] == "3600"
    allowed = gateway.send("shared", "cors.example", headers={"Origin": "https://www.foo.com"})
    assert allowed.headers.get("access-control-allow-origin") == "https://www.foo.com"
    refused = gateway.send("shared", "cors.example", headers={"Origin": "https://evil.com"})
    assert "access-control-allow-origin" not in refused.headers
    # A preflight from an origin not allowed is Envoy's to answer, not the backend's.
    stranger = gateway.send(
        "shared",
        "cors.example",
        method="OPTIONS",
        headers={"Origin": "https://evil.com", "Access-Control-Request-Method": "PUT"},
    )
    assert "access-control-allow-origin" not in stranger.headers
    assert stranger.headers.get("content-type") != "application/json", "reached the backend"


def test_a_websocket_upgrade_reaches_the_backend_and_echoes(gateway: Gateway) -> None:
    key = base64.b64encode(b"sixteen byte key").decode()
    handshake = (
        "GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.ports["shared"]), timeout=5) as client:
        client.sendall(handshake.encode())
        head = _read_head(client)
        assert head.startswith("HTTP/1.1 101"), head
        client.sendall(_frame(b"hello", mask=b"\x01\x02\x03\x04"))
        assert _read_frame(client) == b"hello"


def test_a_sole_backends_rewrite_and_redirect_apply(gateway: Gateway) -> None:
    rewritten = gateway.send("shared", "backend-filters.example", "/full/original").json()
    assert (rewritten["member"], rewritten["path"]) == ("v1", "/rewritten-full")
    moved = gateway.send("shared", "backend-filters.example", "/redirect/x")
    port = gateway.ports["shared"]
    assert (moved.status, moved.headers.get("location")) == (
        302,
        f"http://elsewhere.example:{port}/redirect/x",
    )


def test_an_h2c_backend_is_reached_over_http2(gateway: Gateway) -> None:
    options = [("grpc.default_authority", "h2c.example")]
    with grpc.insecure_channel(f"127.0.0.1:{gateway.ports['shared']}", options=options) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
