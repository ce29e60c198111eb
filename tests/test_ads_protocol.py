"""Issue 8's protocol defects, one case each, over a real gRPC server and channel: the machines'
fixes reach the wire through the servicer (`server/ads.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from snapshots import delta_request, request, snapshot
from test_ads_server import Fixture, read, start, with_node

from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, LISTENER, ROUTE


@pytest.fixture
async def ads() -> AsyncIterator[Fixture]:
    fixture, server = await start(snapshot({}))
    try:
        yield fixture
    finally:
        await server.stop(0)


def publish(ads: Fixture, snap: Snapshot) -> Snapshot:
    """As the cache does it: the new snapshot knows what changed since the last."""
    chained = snap.after(ads.current)
    ads.publish(chained)
    return chained


MESSAGES = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    ROUTE: route_pb2.RouteConfiguration,
}


def resource_names(response: Any) -> list[str]:
    """Names of a Delta response's resources, or of a SotW response's (decoded)."""
    if hasattr(response, "removed_resources"):
        return sorted(r.name for r in response.resources)
    messages = [MESSAGES[a.type_url].FromString(a.value) for a in response.resources]
    return sorted(getattr(m, "cluster_name", "") or m.name for m in messages)


async def test_defect1_sotw_names_of_a_stale_request_count(ads: Fixture) -> None:
    publish(ads, snapshot({"a": ("1",), "b": ("2",)}, {"r0": "a", "r1": "a"}))
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(ROUTE, ["r0", "r1"])))
    first = await read(call)
    await call.write(request(ROUTE, ["r0", "r1"], nonce=first.nonce, version=first.version_info))
    publish(ads, snapshot({"a": ("1",), "b": ("2",)}, {"r0": "a", "r1": "b"}))
    second = await read(call)
    # Written as if the second response had not arrived yet: a listener goes and comes back.
    await call.write(request(ROUTE, ["r1"], nonce=first.nonce))
    await call.write(request(ROUTE, ["r0", "r1"], nonce=first.nonce))
    await call.write(request(ROUTE, ["r0", "r1"], nonce=second.nonce))
    third = await read(call)
    assert resource_names(second) == ["r1"]
    assert resource_names(third) == ["r0"]
    call.cancel()


async def test_defect2_refused_assignment_is_sent_when_its_cluster_changes(ads: Fixture) -> None:
    publish(ads, snapshot({"a": ("1",), "b": ("2",)}))
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(CLUSTER)))
    await call.write(request(ENDPOINT, ["a", "b"]))
    cds = await read(call)
    await call.write(request(CLUSTER, nonce=cds.nonce, version=cds.version_info))
    eds = await read(call)
    await call.write(request(ENDPOINT, ["a", "b"], nonce=eds.nonce, version=eds.version_info))
    publish(ads, snapshot({"a": ("3",), "b": ("4",)}))
    refused = await read(call)
    await call.write(request(ENDPOINT, ["a", "b"], nonce=refused.nonce, error="b is bad"))
    publish(ads, snapshot({"a": ("3",), "b": ("4",)}, timeout_ms=2000))
    changed = await read(call)
    forced = await read(call)
    assert (changed.type_url, forced.type_url) == (CLUSTER, ENDPOINT)
    assert resource_names(forced) == ["a", "b"]
    call.cancel()


async def test_defect3_delta_nack_does_not_rewind_past_a_later_response(ads: Fixture) -> None:
    publish(ads, snapshot({"a": ("0",)}))
    call = ads.stub().DeltaAggregatedResources()
    await call.write(with_node(delta_request(ENDPOINT, ["a"])))
    v0 = await read(call)
    await call.write(delta_request(ENDPOINT, nonce=v0.nonce))
    publish(ads, snapshot({"a": ("1",)}))
    v1 = await read(call)
    publish(ads, snapshot({"a": ("2",)}))
    await call.write(delta_request(ENDPOINT, nonce=v1.nonce, error="no"))
    v2 = await read(call)
    await call.write(delta_request(ENDPOINT, nonce=v2.nonce))
    publish(ads, snapshot({"a": ("0",)}))
    back = await read(call)
    assert back.resources[0].version == v0.resources[0].version
    assert len({v0.resources[0].version, v1.resources[0].version, v2.resources[0].version}) == 3
    call.cancel()


async def test_defect4_delta_first_wildcard_request_is_answered_when_empty(ads: Fixture) -> None:
    call = ads.stub().DeltaAggregatedResources()
    await call.write(with_node(delta_request(CLUSTER)))
    await call.write(delta_request(LISTENER, ["*"]))
    first, second = await read(call), await read(call)
    assert {first.type_url, second.type_url} == {CLUSTER, LISTENER}
    assert list(first.resources) == list(second.resources) == []
    call.cancel()


async def test_defect5_route_moves_to_a_new_cluster_after_it_is_warm(ads: Fixture) -> None:
    """An Envoy-like Delta client: clusters and listeners by wildcard, assignments and routes as
    they are named; the order of what it receives is the point."""
    publish(ads, snapshot({"a": ("1",)}, {"r": "a"}))
    call = ads.stub().DeltaAggregatedResources()
    await call.write(with_node(delta_request(CLUSTER)))
    await call.write(delta_request(LISTENER))
    seen: list[tuple[str, list[str], list[str]]] = []
    moved = False
    while True:
        response = await read(call)
        names, removed = resource_names(response), sorted(response.removed_resources)
        seen.append((response.type_url, names, removed))
        if response.type_url == CLUSTER and (names or removed):
            await call.write(delta_request(ENDPOINT, names, removed))
        if response.type_url == LISTENER and names:
            await call.write(delta_request(ROUTE, [n.removeprefix("L-") for n in names]))
        await call.write(delta_request(response.type_url, nonce=response.nonce))
        if response.type_url == ROUTE and not moved:
            moved = True
            seen.clear()
            publish(ads, snapshot({"c": ("3",)}, {"r": "c"}))
        if response.type_url == CLUSTER and "a" in removed:
            break
    types = [t for t, _, _ in seen]
    assert seen[0] == (CLUSTER, ["c"], [])  # c first, a kept while the route uses it
    assert types.index(ENDPOINT) < types.index(ROUTE) < len(seen) - 1
    assert seen[-1] == (CLUSTER, [], ["a"])
    call.cancel()
