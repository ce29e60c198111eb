"""The disaster-recovery scenarios as fleets on disk: the e2e failover tests, `make bench-dr` and
the demo stand them up with `xdsfleet.tools.drill` (real backends, `xdsfleet serve`, a real
Envoy) and break them.

Pod and node addresses here are documentation addresses (RFC 5737): the drill maps every one to
an address of this machine before anything is served, so nothing ever reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GATEWAY = "default/edge"
HOST = "shop.example.com"
SERVICE_PORT = 80
TARGET_PORT = 8080
NODE_PORT = 30080
# Cross-region distance, added in the far member's backends (no `tc netem` here).
FAR_DELAY_MS = 30
CANARY_HEADER = ("x-canary", "true")


@dataclass(frozen=True)
class MemberDef:
    name: str
    region: str
    zone: str
    pods: int
    node_port: bool = False
    nodes: int = 0


@dataclass(frozen=True)
class FleetDef:
    name: str
    members: tuple[MemberDef, ...]
    policies: tuple[dict[str, Any], ...] = ()
    canary: bool = False  # a rule for CANARY_HEADER, pinned to `canary_member`
    canary_member: str = ""
    service_port: int = SERVICE_PORT
    delays: dict[str, int] = field(default_factory=dict)


# Two zones of eu-west split by replicas (3 and 2), an on-prem data centre in eu-west reached by
# NodePort, and a member in another region. A gateway in eu-west (no zone) sees eu-west as tier
# 0, active-active by ready replicas, and us-east as tier 1.
REGIONAL = FleetDef(
    name="regional",
    members=(
        MemberDef("zone-a", "eu-west", "eu-west-1a", pods=3),
        MemberDef("zone-b", "eu-west", "eu-west-1b", pods=2),
        MemberDef("onprem", "eu-west", "dc1", pods=2, node_port=True, nodes=2),
        MemberDef("far", "us-east", "us-east-1a", pods=2),
    ),
    canary=True,
    canary_member="zone-b",
    delays={"far": FAR_DELAY_MS},
)
REGION_1 = ("zone-a", "zone-b", "onprem")


def _pod_address(member: int, pod: int) -> str:
    return f"192.0.2.{member * 16 + pod + 1}"


def _node_address(member: int, node: int) -> str:
    return f"198.51.100.{member * 16 + node + 1}"


def _member_docs(fleet: FleetDef, index: int, member: MemberDef) -> list[dict[str, Any]]:
    port: dict[str, Any] = {"name": "http", "port": fleet.service_port, "targetPort": TARGET_PORT}
    if member.node_port:
        port["nodePort"] = NODE_PORT
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"ports": [port]},
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"shop-{member.name}",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "shop"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": TARGET_PORT}],
        "endpoints": [
            {"addresses": [_pod_address(index, k)], "conditions": {"ready": True}}
            for k in range(member.pods)
        ],
    }
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"{member.name}-node-{k}"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": _node_address(index, k)}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        for k in range(member.nodes)
    ]
    return [service, slice_, *nodes]


def _route(fleet: FleetDef) -> dict[str, Any]:
    backend = {
        "group": "multicluster.x-k8s.io",
        "kind": "ServiceImport",
        "name": "shop",
        "port": fleet.service_port,
    }
    rules: list[dict[str, Any]] = []
    if fleet.canary:
        name, value = CANARY_HEADER
        rules.append(
            {
                "name": "canary",
                "matches": [{"headers": [{"name": name, "value": value}]}],
                "backendRefs": [backend],
            }
        )
    rules.append(
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [backend]}
    )
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": [HOST], "rules": rules},
    }


def _canary_policy(fleet: FleetDef) -> dict[str, Any]:
    return {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "canary", "namespace": "default"},
        "spec": {
            "targetRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "HTTPRoute",
                    "name": "shop",
                    "sectionName": "canary",
                }
            ],
            "pin": {"members": [fleet.canary_member]},
        },
    }


def drain_policy(member: str) -> dict[str, Any]:
    """A TrafficPolicy that drains `member` from `shop` (for an upgrade)."""
    return {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "upgrade", "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": "shop"}],
            "members": [{"name": member, "drain": True}],
        },
    }


def write_fleet(fleet: FleetDef, root: Path) -> Path:
    """The fleet's files under `root`; returns the Fleet file."""
    members = []
    for index, member in enumerate(fleet.members):
        directory = root / "members" / member.name
        directory.mkdir(parents=True, exist_ok=True)
        docs = _member_docs(fleet, index, member)
        (directory / "shop.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        entry: dict[str, Any] = {
            "name": member.name,
            "region": member.region,
            "zone": member.zone,
            "source": {"manifests": f"members/{member.name}"},
        }
        if member.node_port:
            entry["endpointMode"] = "nodePort"
        members.append(entry)
    routes = root / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {
            "gatewayClassName": "xdsfleet",
            "listeners": [{"name": "http", "port": 10080, "protocol": "HTTP"}],
        },
    }
    policies = list(fleet.policies) + ([_canary_policy(fleet)] if fleet.canary else [])
    docs = [gateway, _route(fleet), *policies]
    (routes / "edge.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    spec = {"exportAll": True, "source": {"manifests": "routes"}, "members": members}
    document = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": fleet.name},
        "spec": spec,
    }
    path = root / "fleet.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
