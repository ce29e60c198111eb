"""A real Envoy gateway against `xdsfleet serve`, over SotW and Delta ADS.

Member pods are HTTP backends on loopback addresses of their own; every change is made the way
a user makes it (editing the fleet's files) and every assertion is on what Envoy does or shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fleets import FleetFiles, MemberSpec, Pod
from gateways import served_envoy

from harness.local import Backend, Envoy, Server, free_port, get, wait_for
from xdsfleet.cache.typeurls import CLUSTER
from xdsfleet.model.node import NodeProfile
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.render import render

pytestmark = pytest.mark.envoy

PROFILE = NodeProfile(gateway="default/gw", region="eu-west", zone="")
CONVERGE_SECONDS = 20
# Every address a test may give a pod; each gets a backend that says which member it is.
ADDRESSES = {
    "east": [f"127.0.11.{i}" for i in (1, 2, 3)],
    "west": [f"127.0.12.{i}" for i in (1, 2, 3)],
}


@dataclass
class Mesh:
    files: FleetFiles
    server: Server
    envoy: Envoy
    delta: bool

    def members_answering(self, service: str = "shop", requests: int = 20) -> set[str]:
        answered = set()
        for _ in range(requests):
            status, body = get(self.files.listener_port, "/", host=f"{service}.example.com")
            answered.add(json.loads(body)["member"] if status == 200 else f"HTTP {status}")
        return answered

    def clusters(self) -> dict[str, dict[str, Any]]:
        dump = self.envoy.config_dump()
        [cds] = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
        return {c["cluster"]["name"]: c for c in cds.get("dynamic_active_clusters", [])}

    def hosts(self, cluster: str) -> set[str]:
        data = json.loads(self.envoy.admin("/clusters?format=json"))
        [status] = [c for c in data["cluster_statuses"] if c["name"] == cluster]
        return {
            h["address"]["socket_address"]["address"]
            for h in status.get("host_statuses", [])
            if h["health_status"].get("eds_health_status") == "HEALTHY"
        }


@pytest.fixture(scope="module")
def backends() -> Iterator[int]:
    port = free_port()
    started = [
        Backend(member=member, address=address, port=port).start()
        for member, addresses in ADDRESSES.items()
        for address in addresses
    ]
    try:
        yield port
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture(params=["sotw", "delta"])
def mesh(request: pytest.FixtureRequest, tmp_path: Path, backends: int) -> Iterator[Mesh]:
    files = FleetFiles(
        root=tmp_path,
        members=[
            MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod("127.0.11.1")]}),
            MemberSpec("west", "eu-west", "eu-west-1b", {"shop": [Pod("127.0.12.1")]}),
        ],
        target_port=backends,
        listener_port=free_port(),
    )
    files.write()
    delta = request.param == "delta"
    node_id = f"gateway-{request.param}"
    with served_envoy(files.fleet, node_id, PROFILE, delta=delta) as (server, envoy):
        yield Mesh(files, server, envoy, delta)


def converge(condition: Any, what: str) -> None:
    wait_for(condition, timeout=CONVERGE_SECONDS, what=what)


def test_request_through_the_gateway_reaches_both_members(mesh: Mesh) -> None:
    converge(lambda: mesh.members_answering() == {"east", "west"}, "both members answering")


def test_editing_an_endpoint_slice_moves_traffic(mesh: Mesh) -> None:
    converge(lambda: mesh.members_answering() == {"east", "west"}, "both members answering")
    east = mesh.files.member("east")
    east.services["shop"] = [Pod("127.0.11.1", ready=False)]
    mesh.files.write_member(east)
    converge(lambda: mesh.members_answering() == {"west"}, "traffic off east")
    assert mesh.members_answering(requests=50) == {"west"}


def test_removing_a_service_removes_its_cluster(mesh: Mesh) -> None:
    east = mesh.files.member("east")
    east.services["extra"] = [Pod("127.0.11.2")]
    mesh.files.write()
    converge(lambda: mesh.members_answering("extra") == {"east"}, "new service served")
    assert "default/extra:80" in mesh.clusters()
    del east.services["extra"]
    mesh.files.write()
    converge(lambda: "default/extra:80" not in mesh.clusters(), "cluster removed")
    assert mesh.members_answering() == {"east", "west"}


def test_three_successive_updates_all_converge(mesh: Mesh) -> None:
    east, west = mesh.files.member("east"), mesh.files.member("west")
    east.services["shop"].append(Pod("127.0.11.2"))
    mesh.files.write_member(east)
    east.services["shop"].append(Pod("127.0.11.3"))
    mesh.files.write_member(east)
    west.services["shop"] = [Pod("127.0.12.2")]
    mesh.files.write_member(west)
    final = {"127.0.11.1", "127.0.11.2", "127.0.11.3", "127.0.12.2"}
    converge(lambda: mesh.hosts("default/shop:80") == final, "final endpoints in Envoy")


def test_envoy_reports_the_versions_we_served(mesh: Mesh) -> None:
    converge(lambda: "default/shop:80" in mesh.clusters(), "cluster in config_dump")
    [client] = mesh.server.clients()
    converge(lambda: all(t["inSync"] for t in mesh.server.clients()[0]["types"].values()), "ACKs")
    active = mesh.clusters()["default/shop:80"]
    if mesh.delta:
        # Delta: Envoy records each resource's own version, our content hash.
        rendered = render(load_fleet(mesh.files.fleet).state, PROFILE)
        [row] = [r for r in rendered if (r["typeUrl"], r["name"]) == (CLUSTER, "default/shop:80")]
        assert active["version_info"] == row["version"]
    else:
        # SotW: Envoy records the response's version_info, which it also ACKed.
        client = mesh.server.clients()[0]
        assert active["version_info"] == client["types"]["CDS"]["ackedVersion"]
    assert client["node"] == f"gateway-{'delta' if mesh.delta else 'sotw'}"


def test_a_broken_file_is_rejected_and_its_last_good_version_keeps_serving(mesh: Mesh) -> None:
    converge(lambda: mesh.members_answering() == {"east", "west"}, "both members answering")
    broken = mesh.files.root / "members" / "east" / "shop.yaml"
    good = broken.read_text()
    broken.write_text(good.replace("kind: EndpointSlice", "kind: EndpointSlice\nbogus: 1"))
    converge(lambda: bool(mesh.server.events("source_rejected")), "rejection logged")
    [rejected] = mesh.server.events("source_rejected")
    assert rejected["file"] == str(broken.resolve())
    assert any("EndpointSlice default/shop-1" in p and "bogus" in p for p in rejected["problems"])
    assert 'xdsfleet_source_problems{source="files"} 1.0' in mesh.server.metrics()
    assert mesh.members_answering() == {"east", "west"}
    # A good edit of the same file replaces the rejected version.
    east = mesh.files.member("east")
    east.services["shop"] = [Pod("127.0.11.1", ready=False)]
    mesh.files.write_member(east)
    converge(lambda: mesh.members_answering() == {"west"}, "fixed file applied")
