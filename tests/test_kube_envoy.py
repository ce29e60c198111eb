"""Two emulated member clusters and a fleet cluster, aggregated by `xdsfleet serve` and served
to a real Envoy gateway that reaches the backends of both members, over HTTP and over HTTPS with
a certificate from a TLS Secret of the fleet cluster.

The server runs as a child process pointed at the emulators by the Fleet file's kubeconfig
sources, exactly as it would be at real clusters; every assertion is on what Envoy does or what
the server reports.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from kube_api import ApiEmulator
from kube_helpers import endpoint_slice, service, service_export

from harness.certs import certificate
from harness.local import Backend, Envoy, Server, free_port, get, wait_for
from xdsfleet.model.node import NodeProfile
from xdsfleet.sources.kube import resources
from xdsfleet.tools.bootstrap import Target, envoy_bootstrap

pytestmark = pytest.mark.envoy

PODS = {"east": ["127.0.31.1", "127.0.31.2"], "west": ["127.0.32.1", "127.0.32.2"]}
CONVERGE_SECONDS = 20


@dataclass
class KubeMesh:
    members: dict[str, ApiEmulator]
    fleet: ApiEmulator
    server: Server
    envoy: Envoy
    listener_port: int
    https_port: int
    backend_port: int
    backends: dict[str, Backend] = field(default_factory=dict)  # by address

    def answering(self, requests: int = 20) -> set[str]:
        found = set()
        for _ in range(requests):
            status, body = get(self.listener_port, "/", host="shop.example.com")
            found.add(json.loads(body)["member"] if status == 200 else f"HTTP {status}")
        return found

    def members_report(self) -> dict[str, dict[str, Any]]:
        status, body = get(self.server.metrics_port, "/debug/members")
        return {m["name"]: m for m in json.loads(body)} if status == 200 else {}


def tls_secret(certificate: str, key: str) -> dict[str, Any]:
    data = {"tls.crt": certificate, "tls.key": key}
    return {
        "metadata": {"name": "shop-tls", "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def gateway(port: int, https_port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "gw", "namespace": "default", "generation": 1},
        "spec": {
            "gatewayClassName": "xdsfleet",
            "listeners": [
                {
                    "name": "http",
                    "port": port,
                    "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                },
                {
                    "name": "https",
                    "port": https_port,
                    "protocol": "HTTPS",
                    "hostname": "shop.example.com",
                    "tls": {"certificateRefs": [{"name": "shop-tls"}]},
                },
            ],
        },
    }


HTTP_ROUTE = {
    "metadata": {"name": "shop", "namespace": "default", "generation": 1},
    "spec": {
        "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
        "hostnames": ["shop.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        "group": "multicluster.x-k8s.io",
                        "kind": "ServiceImport",
                        "name": "shop",
                        "port": 80,
                        "weight": 1,
                    }
                ],
            }
        ],
    },
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeMesh]:
    root = tmp_path_factory.mktemp("kube-fleet")
    backend_port, listener_port, https_port = free_port(), free_port(), free_port()
    backends = [
        Backend(member=member, address=address, port=backend_port).start()
        for member, addresses in PODS.items()
        for address in addresses
    ]
    emulators = {name: ApiEmulator().start() for name in (*PODS, "fleet")}
    try:
        for name in PODS:
            api = emulators[name]
            api.apply(resources.SERVICES, service("shop", target=backend_port))
            api.apply(resources.SERVICE_EXPORTS, service_export("shop"))
            slice_ = endpoint_slice("shop", *PODS[name], port=backend_port, zone=f"{name}-1")
            api.apply(resources.ENDPOINT_SLICES, slice_)
        emulators["fleet"].apply(resources.GATEWAYS, gateway(listener_port, https_port))
        emulators["fleet"].apply(resources.SECRETS, tls_secret(*certificate(("shop.example.com",))))
        emulators["fleet"].apply(resources.HTTP_ROUTES, HTTP_ROUTE)
        for name, api in emulators.items():
            api.kubeconfig(root / f"{name}.kubeconfig", context=name)
        members = [
            {
                "name": name,
                "region": "eu-west",
                "zone": f"{name}-1",
                "source": {"kubeconfig": f"{name}.kubeconfig", "context": name},
            }
            for name in PODS
        ]
        fleet = {
            "apiVersion": "xdsfleet.io/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "kube"},
            "spec": {"source": {"kubeconfig": "fleet.kubeconfig"}, "members": members},
        }
        (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
        with Server(root / "fleet.yaml", args=("--status-seconds", "0.3")) as server:
            server.start()
            boot = envoy_bootstrap(
                node_id="kube-gateway",
                cluster="test",
                profile=NodeProfile(gateway="default/gw", region="eu-west"),
                target=Target(port=server.xds_port),
                admin_port=0,
            )
            with Envoy(boot) as envoy:
                envoy.start()
                yield KubeMesh(
                    members={n: emulators[n] for n in PODS},
                    fleet=emulators["fleet"],
                    server=server,
                    envoy=envoy,
                    listener_port=listener_port,
                    https_port=https_port,
                    backend_port=backend_port,
                    backends={b.address: b for b in backends},
                )
    finally:
        for api in emulators.values():
            api.stop()
        for backend in backends:
            backend.stop()


def converge(condition: Any, what: str) -> None:
    wait_for(condition, timeout=CONVERGE_SECONDS, what=what)


def test_a_gateway_reaches_the_backends_of_both_emulated_members(mesh: KubeMesh) -> None:
    converge(lambda: mesh.answering() == {"east", "west"}, "both members answering")


def test_an_endpoint_change_in_a_member_cluster_moves_traffic(mesh: KubeMesh) -> None:
    converge(lambda: mesh.answering() == {"east", "west"}, "both members answering")
    east = mesh.members["east"]
    slice_ = endpoint_slice("shop", *PODS["east"], port=mesh.backend_port, ready=False)
    east.apply(resources.ENDPOINT_SLICES, slice_)
    converge(lambda: mesh.answering() == {"west"}, "traffic off east")
    ready = endpoint_slice("shop", *PODS["east"], port=mesh.backend_port, zone="east-1")
    east.apply(resources.ENDPOINT_SLICES, ready)
    converge(lambda: mesh.answering() == {"east", "west"}, "east back")


def test_a_member_whose_api_is_down_keeps_serving_its_endpoints_marked_stale(
    mesh: KubeMesh,
) -> None:
    converge(lambda: mesh.answering() == {"east", "west"}, "both members answering")
    west = mesh.members["west"]
    west.go_down()
    try:
        converge(lambda: mesh.members_report()["west"]["stale"], "west reported stale")
        assert mesh.answering(40) == {"east", "west"}
        assert 'xdsfleet_member_stale{member="west"} 1.0' in mesh.server.metrics()
    finally:
        west.come_back()
    converge(lambda: not mesh.members_report()["west"]["stale"], "west back")


def route_conditions(mesh: KubeMesh, name: str) -> dict[str, dict[str, Any]]:
    """Our conditions on the route's first parent, by type."""
    route = mesh.fleet.get(resources.HTTP_ROUTES, name) or {}
    parents = (route.get("status") or {}).get("parents") or []
    ours = [p for p in parents if p["controllerName"] == "xdsfleet.io/controller"]
    return {c["type"]: c for c in ours[0]["conditions"]} if ours else {}


def programmed(mesh: KubeMesh, name: str) -> str:
    return str(route_conditions(mesh, name).get("Programmed", {}).get("status"))


def test_the_route_status_says_accepted_resolved_and_held_by_the_envoy(mesh: KubeMesh) -> None:
    converge(lambda: programmed(mesh, "shop") == "True", "status written")
    conditions = route_conditions(mesh, "shop")
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["ResolvedRefs"]["status"] == "True"
    assert conditions["Programmed"]["message"] == "1 Envoy hold it at the served version"
    assert {c["observedGeneration"] for c in conditions.values()} == {1}
    lease = mesh.fleet.get(resources.LEASES, "xdsfleet-status", namespace="xdsfleet-system")
    assert lease is not None
    assert lease["spec"]["holderIdentity"]


def test_a_route_envoy_refuses_is_reported_with_the_refusal_and_the_old_config_serves(
    mesh: KubeMesh,
) -> None:
    converge(lambda: mesh.answering() == {"east", "west"}, "both members answering")
    # Valid RE2, but a program larger than Envoy's limit (a runtime setting, so validation
    # cannot know it): Envoy refuses the routes.
    bad: dict[str, Any] = json.loads(json.dumps(HTTP_ROUTE))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["hostnames"] = ["bad.example.com"]
    bad["spec"]["rules"][0]["matches"] = [
        {"path": {"type": "RegularExpression", "value": "/x{1000}"}}
    ]
    mesh.fleet.apply(resources.HTTP_ROUTES, bad)
    try:
        converge(lambda: programmed(mesh, "bad") == "False", "refusal reported")
        message = route_conditions(mesh, "bad")["Programmed"]["message"]
        assert message.startswith("0 Envoys hold it; 1 refused it: ")
        assert "program size" in message  # Envoy's own words, through its NACK
        assert mesh.answering() == {"east", "west"}
    finally:
        mesh.fleet.delete(resources.HTTP_ROUTES, "bad")
    converge(lambda: programmed(mesh, "shop") == "True", "the fixed config held again")


# --- A rolling update in one member, under load ----------------------------------------------

NEW_PODS = ["127.0.31.3", "127.0.31.4"]


class Load:
    """Requests through the gateway, one after another on each of a few threads, until
    stopped: what each got."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self._port = port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[tuple[int, str]] = []  # (status, pod)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = get(self._port, "/", host="shop.example.com")
            pod = json.loads(body)["pod"] if status == 200 else ""
            with self._lock:
                self.answers.append((status, pod))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def failures(self) -> list[tuple[int, str]]:
        with self._lock:
            return [a for a in self.answers if a[0] != 200]

    def pods_since(self, start: int) -> set[str]:
        with self._lock:
            return {pod for _, pod in self.answers[start:]}


def rollout_slice(mesh: KubeMesh, pods: dict[str, str]) -> dict[str, Any]:
    """East's slice with each pod `starting` (not ready), `ready` or `terminating` (still
    serving, as a pod in its grace period is), in the EndpointSlice controller's terms."""
    conditions = {
        "starting": {"ready": False, "serving": False, "terminating": False},
        "ready": {"ready": True, "serving": True, "terminating": False},
        "terminating": {"ready": False, "serving": True, "terminating": True},
    }
    obj = endpoint_slice("shop", *pods, port=mesh.backend_port, zone="east-1")
    for endpoint in obj["endpoints"]:
        endpoint["conditions"] = conditions[pods[endpoint["addresses"][0]]]
    return obj


def envoy_hosts(mesh: KubeMesh) -> dict[str, str]:
    """The gateway's endpoints of the shop cluster: address -> EDS health status."""
    data = json.loads(mesh.envoy.admin("/clusters?format=json"))
    statuses = [c for c in data["cluster_statuses"] if c["name"] == "default/shop:80"]
    return {
        h["address"]["socket_address"]["address"]: h["health_status"].get("eds_health_status", "")
        for status in statuses
        for h in status.get("host_statuses", [])
    }


def test_a_rolling_update_in_one_member_fails_no_request(mesh: KubeMesh) -> None:
    """maxSurge 1, maxUnavailable 0: a new pod starts and gets ready, then an old one
    terminates (serving through its grace period), leaves the slice, and dies."""
    converge(lambda: mesh.answering() == {"east", "west"}, "both members answering")
    east = mesh.members["east"]
    old = PODS["east"]
    started = [Backend(member="east", address=a, port=mesh.backend_port).start() for a in NEW_PODS]
    pods = dict.fromkeys(old, "ready")
    try:
        with Load(mesh.listener_port) as load:
            converge(lambda: load.count() > 20, "load running")
            for old_pod, new_pod in zip(old, NEW_PODS, strict=True):
                pods[new_pod] = "starting"
                east.apply(resources.ENDPOINT_SLICES, rollout_slice(mesh, pods))
                pods[new_pod] = "ready"
                east.apply(resources.ENDPOINT_SLICES, rollout_slice(mesh, pods))
                converge(lambda p=new_pod: envoy_hosts(mesh).get(p) == "HEALTHY", "new pod in")
                pods[old_pod] = "terminating"
                east.apply(resources.ENDPOINT_SLICES, rollout_slice(mesh, pods))
                converge(lambda p=old_pod: envoy_hosts(mesh).get(p) != "HEALTHY", "draining")
                del pods[old_pod]
                east.apply(resources.ENDPOINT_SLICES, rollout_slice(mesh, pods))
                converge(lambda p=old_pod: p not in envoy_hosts(mesh), "old pod out")
                mesh.backends[old_pod].status = 503  # gone: a request sent there now fails
            after = load.count()
            converge(lambda: load.count() > after + 40, "load after the rollout")
            assert load.pods_since(after) & set(NEW_PODS)
            assert not load.pods_since(after) & set(old)
        assert load.failures() == []
        assert load.count() > 100
    finally:
        for address in old:
            mesh.backends[address].status = 200
        east.apply(
            resources.ENDPOINT_SLICES,
            endpoint_slice("shop", *old, port=mesh.backend_port, zone="east-1"),
        )
        converge(
            lambda: set(envoy_hosts(mesh)) == {*old, *PODS["west"]}, "the old pods back, alone"
        )
        for backend in started:
            backend.stop()


def served_certificate(port: int) -> str | None:
    """The PEM certificate Envoy presents for shop.example.com; None while nothing answers."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="shop.example.com") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return None if der is None else ssl.DER_cert_to_PEM_cert(der)


def same(pem: str | None, other: str) -> bool:
    return pem is not None and ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(other)


def test_a_tls_secret_of_the_fleet_cluster_is_served_and_its_renewal_reaches_envoy(
    mesh: KubeMesh,
) -> None:
    stored = mesh.fleet.get(resources.SECRETS, "shop-tls", namespace="default")
    assert stored is not None
    first = base64.b64decode(stored["data"]["tls.crt"]).decode()
    converge(lambda: same(served_certificate(mesh.https_port), first), "the Secret's certificate")
    # cert-manager renews: it updates the Secret in place.
    renewed, key = certificate(("shop.example.com",))
    mesh.fleet.apply(resources.SECRETS, tls_secret(renewed, key))
    converge(lambda: same(served_certificate(mesh.https_port), renewed), "the renewed one")
    status, _ = get(mesh.listener_port, "/", host="shop.example.com")
    assert status == 200  # the HTTP listener was not disturbed
