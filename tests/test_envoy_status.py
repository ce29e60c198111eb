"""`xdsfleet status` and `xdsfleet config` against a real server and a real Envoy (SotW and
Delta): the row of a client that holds everything says SYNCED per type; a Secret Envoy rejects
(its key does not fit its certificate) makes SDS NACKED with Envoy's message; `config` prints
what it holds, in `render`'s shape, Secrets by name only."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleets import FleetFiles, MemberSpec, Pod
from gateways import served_envoy

from harness.certs import Authority
from harness.local import Backend, Envoy, Server, free_port, wait_for
from xdsfleet.cache import typeurls
from xdsfleet.model.node import NodeProfile

pytestmark = pytest.mark.envoy

SECONDS = 30
NODE = "gateway-status"


@dataclass
class Setup:
    server: Server
    envoy: Envoy

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "xdsfleet", *args]
        argv += ["--server", f"127.0.0.1:{self.server.admin_port}"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def status(self) -> list[dict[str, Any]]:
        done = self.cli("status", "-o", "json")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


def types(row: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["shortName"]: t for t in row["types"]}


@pytest.fixture(scope="module", params=["sotw", "delta"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("status")
    ca = Authority(root)
    good, other = ca.issue("good", server=True), ca.issue("other", server=True)
    backend = Backend(member="east", address="127.0.22.1", port=free_port()).start()
    files = FleetFiles(
        root=root / "fleet",
        members=[MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod("127.0.22.1")]})],
        target_port=backend.port,
        listener_port=free_port(),
    )
    files.write()
    routes = root / "fleet" / "routes" / "gateway.yaml"
    gateway, *others = yaml.safe_load_all(routes.read_text())
    gateway["spec"]["listeners"].append(
        {
            "name": "https",
            "port": free_port(),
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "mismatched"}]},
        }
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mismatched", "namespace": "default"},
        "type": "kubernetes.io/tls",
        # A key that is not the certificate's: Envoy refuses it.
        "stringData": {"tls.crt": good.cert.read_text(), "tls.key": other.key.read_text()},
    }
    routes.write_text(yaml.safe_dump_all([gateway, *others, secret]))
    try:
        profile = NodeProfile(gateway="default/gw", region="eu-west")
        delta = request.param == "delta"
        # It refuses a secret of its config, so it is never ready.
        with served_envoy(files.fleet, NODE, profile, delta=delta, wait_ready=False) as both:
            yield Setup(*both)
    finally:
        backend.stop()


def test_status_shows_synced_types_and_the_nacked_secret_with_envoys_message(
    setup: Setup,
) -> None:
    def settled() -> bool:
        rows = setup.status()
        if len(rows) != 1:
            return False
        by_type = types(rows[0])
        return by_type.get("SDS", {}).get("state") == "NACKED" and all(
            by_type.get(t, {}).get("state") == "SYNCED" for t in ("CDS", "EDS", "LDS", "RDS")
        )

    wait_for(settled, timeout=SECONDS, what="CDS/EDS/LDS/RDS synced, SDS nacked")
    [row] = setup.status()
    assert row["nodeId"] == NODE
    assert row["state"] == "NACKED"
    assert types(row)["SDS"]["nackMessage"]
    table = setup.cli("status")
    assert table.returncode == 0, table.stderr
    [line] = [line for line in table.stdout.splitlines() if line.startswith(NODE)]
    assert line.count("SYNCED") == 4
    assert "NACKED" in line
    assert "SDS: " in line


def test_config_prints_what_the_client_holds_as_render_does(setup: Setup) -> None:
    wait_for(
        lambda: types(setup.status()[0]).get("CDS", {}).get("state") == "SYNCED",
        timeout=SECONDS,
        what="CDS synced",
    )
    done = setup.cli("config", "--node", NODE, "-o", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    clusters = [r for r in rows if r["typeUrl"] == typeurls.CLUSTER]
    assert [c["name"] for c in clusters] == ["default/shop:80"]
    assert clusters[0]["resource"]["name"] == "default/shop:80"
    assert all("resource" not in r for r in rows if r["typeUrl"] == typeurls.SECRET)
    dumped = setup.envoy.config_dump()
    assert "default/shop:80" in json.dumps(dumped)


def test_config_of_a_node_that_is_not_connected_exits_1(setup: Setup) -> None:
    done = setup.cli("config", "--node", "nobody")
    assert done.returncode == 1
    assert "nobody" in done.stderr


def test_status_without_a_server_says_why_in_one_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "xdsfleet", "status", "--server", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr
