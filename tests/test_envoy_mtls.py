"""A real Envoy gateway reaches `xdsfleet serve` over mTLS, bootstrapped by `xdsfleet
bootstrap`: it is served its listener and the TLS Secret that listener terminates with, and
answers HTTPS. A second Envoy with the same certificate claiming another gateway is refused.
No private key appears in the server's log or on its /debug pages."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from fleets import FleetFiles, MemberSpec, Pod

from harness.certs import Authority, Pair
from harness.local import Backend, Envoy, Server, free_port, get, wait_for
from xdsfleet.model.node import NodeProfile
from xdsfleet.tools.bootstrap import ClientTls, Target, envoy_bootstrap

pytestmark = pytest.mark.envoy

EDGE = "spiffe://test.example/ns/default/sa/gw"
BACKEND = "127.0.21.1"
SECONDS = 30


@dataclass
class Setup:
    files: FleetFiles
    ca: Authority
    client: Pair
    gateway_tls: Pair
    server: Server

    def envoy(self, gateway: str) -> Envoy:
        tls = ClientTls(str(self.client.cert), str(self.client.key), str(self.ca.ca))
        boot = envoy_bootstrap(
            node_id=f"envoy-{gateway.replace('/', '-')}",
            cluster="test",
            profile=NodeProfile(gateway=gateway, region="eu-west"),
            target=Target(port=self.server.xds_port, tls=tls),
            admin_port=0,
        )
        return Envoy(boot)


def secret_doc(pair: Pair) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gw-tls", "namespace": "default"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": pair.cert.read_text(), "tls.key": pair.key.read_text()},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("mtls")
    ca = Authority(root)
    server_pair = ca.issue("xds-server", server=True)
    client = ca.issue("gateway-client", spiffe=EDGE)
    gateway_tls = ca.issue("shop", server=True)
    backend = Backend(member="east", address=BACKEND, port=free_port()).start()
    files = FleetFiles(
        root=root / "fleet",
        members=[MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod(BACKEND)]})],
        target_port=backend.port,
        listener_port=free_port(),
    )
    files.write()
    fleet = yaml.safe_load(files.fleet.read_text())
    fleet["spec"]["identities"] = [
        {"identity": EDGE, "roles": ["gateway"], "gateways": ["default/gw"]}
    ]
    files.fleet.write_text(yaml.safe_dump(fleet))
    routes = root / "fleet" / "routes" / "gateway.yaml"
    gateway, *others = yaml.safe_load_all(routes.read_text())
    gateway["spec"]["listeners"] = [
        {
            "name": "https",
            "port": files.listener_port,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "gw-tls"}]},
        }
    ]
    routes.write_text(yaml.safe_dump_all([gateway, *others, secret_doc(gateway_tls)]))
    tls_args = ["--tls-cert", str(server_pair.cert), "--tls-key", str(server_pair.key)]
    tls_args += ["--client-ca", str(ca.ca)]
    try:
        with Server(files.fleet, args=tuple(tls_args)) as server:
            server.start()
            yield Setup(files, ca, client, gateway_tls, server)
    finally:
        backend.stop()


def https_get(setup: Setup) -> int:
    context = ssl.create_default_context(cafile=str(setup.ca.ca))
    context.check_hostname = False
    connection = http.client.HTTPSConnection(
        "127.0.0.1", setup.files.listener_port, context=context, timeout=5
    )
    try:
        connection.request("GET", "/", headers={"Host": "shop.example.com"})
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def test_an_envoy_over_mtls_gets_its_listener_and_secret_and_serves_https(setup: Setup) -> None:
    with setup.envoy("default/gw").start() as envoy:
        wait_for(lambda: https_get(setup) == 200, timeout=SECONDS, what="HTTPS through Envoy")
        secrets = json.loads(envoy.admin("/config_dump?resource=dynamic_active_secrets"))
        assert [s["name"] for s in secrets["configs"]] == ["default/gw-tls"]
    [client] = setup.server.events("stream_opened")
    assert client["profile"].startswith("gateway default/gw")


def test_an_envoy_claiming_another_gateway_is_refused(setup: Setup) -> None:
    with setup.envoy("default/other").start(wait_ready=False):
        wait_for(lambda: bool(refused(setup)), timeout=SECONDS, what="the stream refused")
    [event, *_] = refused(setup)
    assert event["identity"] == EDGE
    assert "may not claim" in event["error"]
    assert 'xdsfleet_streams_refused_total{reason="permission_denied"}' in setup.server.metrics()


def refused(setup: Setup) -> list[dict[str, Any]]:
    events = setup.server.events("stream_refused")
    return [e for e in events if e["node_id"] == "envoy-default-other"]


def test_no_private_key_in_the_log_or_on_debug_pages(setup: Setup) -> None:
    key_lines = [
        line for line in setup.gateway_tls.key.read_text().splitlines() if "-----" not in line
    ]
    pages = [get(setup.server.metrics_port, path)[1].decode() for path in DEBUG_PAGES]
    for text in (setup.server.log(), *pages):
        assert not any(line in text for line in key_lines)
        assert "PRIVATE KEY" not in text


DEBUG_PAGES = ("/debug/clients", "/debug/members", "/metrics", "/readyz", "/healthz")


def test_an_identity_removed_from_the_fleet_loses_its_stream(setup: Setup) -> None:
    """Last in this module: it changes the Fleet."""
    with setup.envoy("default/gw").start():
        wait_for(
            lambda: any(c.get("node") == "envoy-default-gw" for c in setup.server.clients()),
            timeout=SECONDS,
            what="the gateway connected",
        )
        fleet = yaml.safe_load(setup.files.fleet.read_text())
        fleet["spec"]["identities"][0]["identity"] = "spiffe://test.example/ns/default/sa/other"
        setup.files.fleet.write_text(yaml.safe_dump(fleet))

        def cut_off() -> bool:
            revoked = setup.server.events("stream_revoked")
            refused = [
                e
                for e in setup.server.events("stream_refused")
                if e["node_id"] == "envoy-default-gw"
            ]
            return bool(revoked) and bool(refused)

        wait_for(cut_off, timeout=SECONDS, what="the stream revoked and the next refused")
    [revoked] = setup.server.events("stream_revoked")
    assert revoked["identity"] == EDGE
