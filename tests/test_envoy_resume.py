"""Make before break across a reconnect, with a real Envoy (SotW): Envoy holds a route to a
cluster, is away while the route moves to a new cluster and the old one is deleted, and comes
back to the other replica holding both. Not one request fails while it catches up: the deleted
cluster stays, with its endpoints, until the moved route has arrived (docs/xds-protocol.md rule
13, "That holds across a reconnect").

Two replicas serve the same files; a raw client of the same profile stays on the second one, so
that its snapshot, and the history that tells what Envoy holds, lives there. Envoy is frozen
(SIGSTOP) before its replica stops, so that it learns nothing of the change until it is back.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from fleets import FleetFiles, MemberSpec, Pod
from google.protobuf import json_format
from test_envoy_ha import ads_cluster_to_both
from test_envoy_route_move import NEW, OLD, PROFILE, Load, answers, backends, clusters

from harness.local import Envoy, Server, free_port, wait_for
from xdsfleet.cache.typeurls import CLUSTER
from xdsfleet.tools.bootstrap import Target, envoy_bootstrap

__all__ = ["backends"]

pytestmark = pytest.mark.envoy

SECONDS = 30


class Watcher:
    """A raw SotW client asking for every cluster as `node`, ACKing each answer: it keeps the
    profile's snapshot on its replica. `versions`: the cluster sets it was sent."""

    def __init__(self, port: int, node: Any) -> None:
        self.versions: list[str] = []
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = stub.StreamAggregatedResources(iter(self._requests.get, None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._call:
                self.versions.append(response.version_info)
                ack = discovery_pb2.DiscoveryRequest(
                    type_url=CLUSTER,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
                self._requests.put(ack)
        except grpc.RpcError:
            pass  # cancelled at the end

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._thread.join(timeout=5)
        self._channel.close()


@pytest.fixture
def watching() -> Iterator[list[Watcher]]:
    watchers: list[Watcher] = []
    try:
        yield watchers
    finally:
        for watcher in watchers:
            watcher.close()


def test_envoy_back_from_a_stopped_replica_keeps_a_deleted_cluster_until_its_route_moved(
    tmp_path: Path, backends: int, watching: list[Watcher]
) -> None:
    east = MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod(OLD)]})
    files = FleetFiles(
        root=tmp_path, members=[east], target_port=backends, listener_port=free_port()
    )
    files.write()
    drain = ("--drain-seconds", "0")  # Envoy is frozen: nothing to drain for
    with Server(files.fleet, args=drain) as one, Server(files.fleet, args=drain) as two:
        one.start()
        two.start()
        boot = envoy_bootstrap(
            node_id="gateway-resume",
            cluster="test",
            profile=PROFILE,
            target=Target(port=one.xds_port),
            admin_port=0,
        )
        with Envoy(ads_cluster_to_both(boot, one, two)).start() as envoy:
            port = files.listener_port
            wait_for(lambda: answers(port) == "old", timeout=SECONDS, what="old serving")
            [serving] = [s for s in (one, two) if "gateway-resume" in nodes(s)]
            other = two if serving is one else one
            node = json_format.ParseDict({**boot["node"], "id": "watcher"}, base_pb2.Node())
            watcher = Watcher(other.xds_port, node)
            watching.append(watcher)
            wait_for(lambda: len(watcher.versions) == 1, timeout=SECONDS, what="watcher served")

            envoy.freeze()
            serving.sigterm()
            assert serving.wait() == 0
            # The route moves to a new service, and the old one goes, while Envoy is away.
            east.services = {"shop-v2": [Pod(NEW)]}
            files.write_member(east)
            files.rules["shop"] = [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [files.backend("shop-v2")],
                }
            ]
            files.write_routes()
            wait_for(lambda: len(watcher.versions) >= 2, timeout=SECONDS, what="published")

            envoy.thaw()
            with Load(port) as load:
                wait_for(
                    lambda: load.statuses["new"] > 20 and "default/shop:80" not in clusters(envoy),
                    timeout=SECONDS,
                    what="moved, and the old cluster gone",
                )
            assert "gateway-resume" in nodes(other)
    assert set(load.statuses) == {"old", "new"}, load.statuses


def nodes(server: Server) -> set[str]:
    return {str(c.get("node")) for c in server.clients()}
