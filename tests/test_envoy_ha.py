"""Graceful stop and replicas. Two replicas of `xdsfleet serve` and a real Envoy whose ADS
cluster lists both: SIGTERM to the replica Envoy is connected to drains it (unready at once,
exit 0), Envoy moves to the other replica, and the other replica serves the very versions Envoy
already holds, so nothing new is applied. SIGTERM releases the status Lease at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleets import FleetFiles, MemberSpec, Pod
from kube_api import ApiEmulator

from harness.local import Backend, Envoy, Server, free_port, get, wait_for
from xdsfleet.model.node import NodeProfile
from xdsfleet.sources.kube.resources import LEASES
from xdsfleet.tools.bootstrap import Target, envoy_bootstrap

pytestmark = pytest.mark.envoy

NODE = "gateway-ha"
SECONDS = 30
ADDRESS = "127.0.23.1"


@pytest.fixture
def backend() -> Iterator[Backend]:
    started = Backend(member="east", address=ADDRESS, port=free_port()).start()
    try:
        yield started
    finally:
        started.stop()


def ads_cluster_to_both(boot: dict[str, Any], *servers: Server) -> dict[str, Any]:
    [cluster] = boot["static_resources"]["clusters"]
    [locality] = cluster["load_assignment"]["endpoints"]
    locality["lb_endpoints"] = [
        {
            "endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": s.xds_port}}
            }
        }
        for s in servers
    ]
    return boot


def envoy_versions(envoy: Envoy) -> dict[str, str]:
    """The version_info Envoy holds per dynamic resource (clusters, listeners, routes)."""
    found = {}
    for config in envoy.config_dump()["configs"]:
        for key in ("dynamic_active_clusters", "dynamic_listeners", "dynamic_route_configs"):
            for entry in config.get(key, []):
                state = entry.get("active_state", entry)
                name = state.get("cluster", state.get("listener", state.get("route_config", {})))
                found[f"{key}/{name.get('name')}"] = state["version_info"]
    return found


def node_of(server: Server) -> dict[str, Any] | None:
    return next((c for c in server.clients() if c.get("node") == NODE), None)


def acked(client: dict[str, Any]) -> dict[str, str]:
    return {t: s["ackedVersion"] for t, s in client["types"].items()}


def in_sync(server: Server) -> bool:
    client = node_of(server)
    return client is not None and all(s["inSync"] for s in client["types"].values())


def test_a_terminated_replica_drains_and_envoy_moves_without_a_new_version(
    tmp_path: Path, backend: Backend
) -> None:
    files = FleetFiles(
        root=tmp_path,
        members=[MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod(ADDRESS)]})],
        target_port=backend.port,
        listener_port=free_port(),
    )
    files.write()
    drain = ("--drain-seconds", "1")
    with Server(files.fleet, args=drain) as one, Server(files.fleet, args=drain) as two:
        one.start()
        two.start()
        boot = envoy_bootstrap(
            node_id=NODE,
            cluster="test",
            profile=NodeProfile(gateway="default/gw", region="eu-west"),
            target=Target(port=one.xds_port),
            admin_port=0,
        )
        with Envoy(ads_cluster_to_both(boot, one, two)).start() as envoy:
            wait_for(
                lambda: get(files.listener_port, "/", host="shop.example.com")[0] == 200,
                timeout=SECONDS,
                what="traffic through Envoy",
            )
            [serving] = [s for s in (one, two) if node_of(s) is not None]
            other = two if serving is one else one
            wait_for(lambda: in_sync(serving), timeout=SECONDS, what="Envoy in sync")
            before = envoy_versions(envoy)
            assert len(before) >= 3  # the cluster, the listener and its routes
            held = acked(node_of(serving))  # type: ignore[arg-type]

            serving.sigterm()
            # Draining (a stream is open, so it lasts --drain-seconds): no longer ready.
            wait_for(
                lambda: get(serving.metrics_port, "/readyz")[0] == 503,
                timeout=SECONDS,
                what="/readyz 503 while draining",
            )
            assert serving.wait() == 0
            [stopping] = serving.events("stopping")
            assert stopping["streams"] == 1
            assert serving.events("stopped")
            assert not serving.events("task_failed")

            # A type the client resumed shows in sync before its first answer on the new stream
            # (nothing had to be sent); wait for every type to hold what it held before.
            wait_for(
                lambda: in_sync(other) and acked(node_of(other)) == held,  # type: ignore[arg-type]
                timeout=SECONDS,
                what="Envoy on the other replica, holding the same versions",
            )
            assert envoy_versions(envoy) == before
            assert get(files.listener_port, "/", host="shop.example.com")[0] == 200
            assert connected(envoy)


def connected(envoy: Envoy) -> bool:
    stats = json.loads(envoy.admin("/stats?format=json&filter=control_plane.connected_state"))
    return [s["value"] for s in stats["stats"]] == [1]


def test_sigterm_releases_the_status_lease_and_exits_0(tmp_path: Path) -> None:
    with ApiEmulator() as fleet_cluster:
        files = FleetFiles(root=tmp_path, members=[], target_port=1, listener_port=free_port())
        files.write()
        fleet = yaml.safe_load(files.fleet.read_text())
        kubeconfig = fleet_cluster.kubeconfig(tmp_path / "fleet.kubeconfig")
        fleet["spec"]["source"] = {"kubeconfig": str(kubeconfig)}
        files.fleet.write_text(yaml.safe_dump(fleet))
        with Server(files.fleet, args=("--status-seconds", "0.2")) as server:
            server.start()

            def holder() -> str | None:
                lease = fleet_cluster.get(LEASES, "xdsfleet-status", "xdsfleet-system")
                return lease["spec"].get("holderIdentity") if lease else None

            wait_for(lambda: bool(holder()), timeout=SECONDS, what="the Lease held")
            assert server.terminate() == 0
            assert holder() == ""
            assert server.events("lease_released")
