"""Make before break with a real Envoy: a route moves to a cluster that did not exist, under
load, and not one request fails.

The route and the new service arrive in one change (the member file, then the route file, in
the same coalescing window), so Envoy learns of the new cluster, its assignment and the moved
route together: the route must reach it only once the cluster is warm (docs/xds-protocol.md
rules 13 and 14), or requests get 503 while it warms. Then the old service goes, and its cluster
with it, after the route stopped using it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleets import FleetFiles, MemberSpec, Pod
from gateways import served_envoy

from harness.local import Backend, Envoy, free_port, get, wait_for
from xdsfleet.model.node import NodeProfile

pytestmark = pytest.mark.envoy

PROFILE = NodeProfile(gateway="default/gw", region="eu-west", zone="")
OLD, NEW = "127.0.13.1", "127.0.13.2"
HOST = "shop.example.com"
CONVERGE_SECONDS = 20


class Load:
    """Requests to the gateway, one after another on a thread, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = get(self.port, "/", host=HOST, timeout=2)
            self.statuses[json.loads(body)["member"] if status == 200 else f"HTTP {status}"] += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def backends() -> Iterator[int]:
    port = free_port()
    started = [
        Backend(member=name, address=address, port=port).start()
        for name, address in (("old", OLD), ("new", NEW))
    ]
    try:
        yield port
    finally:
        for backend in started:
            backend.stop()


def answers(port: int) -> str:
    status, body = get(port, "/", host=HOST)
    return str(json.loads(body)["member"]) if status == 200 else f"HTTP {status}"


def clusters(envoy: Envoy) -> set[str]:
    dump = envoy.config_dump()
    [cds] = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
    return {c["cluster"]["name"] for c in cds.get("dynamic_active_clusters", [])}


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
def test_route_moves_to_a_new_cluster_under_load_without_a_failed_request(
    protocol: str, tmp_path: Path, backends: int
) -> None:
    east = MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod(OLD)]})
    files = FleetFiles(
        root=tmp_path, members=[east], target_port=backends, listener_port=free_port()
    )
    files.write()
    delta = protocol == "delta"
    with served_envoy(files.fleet, f"gateway-{protocol}", PROFILE, delta=delta) as (_, envoy):
        port = files.listener_port
        wait_for(lambda: answers(port) == "old", timeout=CONVERGE_SECONDS, what="old serving")
        with Load(port) as load:
            wait_for(lambda: load.statuses["old"] > 20, timeout=10, what="load running")
            # One change: a new service, and the host's route moved to it.
            east.services["shop-v2"] = [Pod(NEW)]
            files.write_member(east)
            files.rules["shop"] = [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [files.backend("shop-v2")],
                }
            ]
            files.write_routes()
            wait_for(lambda: load.statuses["new"] > 20, timeout=CONVERGE_SECONDS, what="moved")
            # Then the old service goes; its cluster leaves Envoy.
            del east.services["shop"]
            files.write_member(east)
            wait_for(
                lambda: "default/shop:80" not in clusters(envoy),
                timeout=CONVERGE_SECONDS,
                what="old cluster removed",
            )
            seen = load.statuses["new"]
            wait_for(lambda: load.statuses["new"] > seen + 20, timeout=10, what="still new")
    assert set(load.statuses) == {"old", "new"}, load.statuses
