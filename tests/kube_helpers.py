"""What the Kubernetes source tests share: short settings, emulated clusters, objects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from xdsfleet.model.fleet import Member, MemberState
from xdsfleet.sources.kube.settings import KubeSettings

# Short everything, so that a test sees several watch cycles, backoffs and holds in a second.
FAST = KubeSettings(
    watch_seconds=1,
    watch_read_margin=2.0,
    connect_seconds=1.0,
    list_seconds=2.0,
    request_seconds=2.0,
    backoff_seconds=0.05,
    backoff_cap_seconds=0.3,
    watch_retry_seconds=0.5,
    absent_recheck_seconds=0.3,
    absent_confirm_seconds=1.0,
    keepalive_idle=1,
    keepalive_interval=1,
    keepalive_count=2,
    hold_seconds=2.0,
    relist_interval_seconds=0.2,
)

Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    """Fail a test that leaves a watch thread running: everything started is stopped."""
    before = set(threading.enumerate())
    yield
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("watch-")]
    assert not left, f"watch threads left running: {left}"


MEMBER = Member(name="east", region="eu-west", zone="eu-west-1a")  # the member watched


def ready_addresses(state: MemberState) -> dict[tuple[str, str], set[str]]:
    """Per (namespace, service), the addresses of its ready endpoints (the first of each, as
    translation). Written out here rather than taken from `sources.kube.members`, whose mass
    removal check the tests hold to it."""
    found: dict[tuple[str, str], set[str]] = {}
    for one in state.endpoint_slices:
        addresses = found.setdefault((one.namespace, one.service_name), set())
        addresses.update(e.addresses[0] for e in one.endpoints if e.ready and e.addresses)
    return found


def service(name: str, *, namespace: str = "default", port: int = 80, target: int = 8080) -> Obj:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": target}],
        },
    }


def endpoint_slice(
    service_name: str,
    *addresses: str,
    name: str | None = None,
    namespace: str = "default",
    port: int = 8080,
    ready: bool = True,
    zone: str | None = None,
    address_type: str = "IPv4",
    pods: tuple[str, ...] = (),
) -> Obj:
    """`pods`: the Pod behind each address (by default, one per address)."""
    endpoints: list[Obj] = []
    for i, address in enumerate(addresses):
        pod = pods[i] if pods else f"pod-{address}".replace(":", "-")
        endpoint: Obj = {
            "addresses": [address],
            "conditions": {"ready": ready, "serving": ready, "terminating": False},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
            "nodeName": "node-1",
        }
        if zone:
            endpoint["zone"] = zone
        endpoints.append(endpoint)
    obj: Obj = {
        "metadata": {
            "name": name or f"{service_name}-abcde",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [{"kind": "Service", "name": service_name}],
        },
        "addressType": address_type,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }
    return obj


def service_export(name: str, *, namespace: str = "default") -> Obj:
    return {"metadata": {"name": name, "namespace": namespace}}
