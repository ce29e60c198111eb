"""Turn an upstream conformance test's manifests into a file fleet `xdsfleet serve` reads.

The upstream suite runs in one Kubernetes cluster with echo-server Deployments; here every
Service becomes part of one member's manifests, with one local `harness.local.Backend` per
Service port standing in for its pods (a loopback address per Service). Gateway listener ports
are moved to free local ports (several Gateways listen on 80 upstream; each gets its own Envoy
here); the map is kept so requests and redirect Locations can be told in upstream's ports.
Certificates the suite creates at run time (`tls-validity-checks-certificate`) are made here.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.hand import PODS_OF
from harness.certs import certificate
from harness.local import free_port

GATEWAY_CLASS = "xdsfleet"
ROUTE_KINDS = {
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "ReferenceGrant",
    "Namespace",
    "Secret",
}


@dataclass
class Pod:
    namespace: str
    name: str  # the Deployment its Service selects (the echo server's pod name prefix)
    address: str
    ports: dict[int, int]  # service port -> the local port its backend listens on
    app_protocols: dict[int, str] = field(default_factory=dict)


@dataclass
class Fleet:
    root: Path
    pods: list[Pod]
    # ns/gateway -> upstream listener port -> local port
    ports: dict[str, dict[int, int]]
    listeners: dict[str, dict[str, int]]  # ns/gateway -> listener name -> upstream port
    https: dict[str, set[int]]  # ns/gateway -> upstream ports of HTTPS listeners


def read_manifests(paths: list[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        text = path.read_text().replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS)
        docs += [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    return docs


_addresses = (f"127.78.{i // 250}.{i % 250 + 1}" for i in itertools.count())


def fleet_document() -> dict[str, Any]:
    """The Fleet of a conformance run: Gateway API objects in `routes/`, one member `m1` (region
    r1, zone z1) whose Services and pods are in `m1/`, every Service exported."""
    return {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": "conformance"},
        "spec": {
            "exportAll": True,
            "source": {"manifests": "routes"},
            "members": [
                {"name": "m1", "region": "r1", "zone": "z1", "source": {"manifests": "m1"}}
            ],
        },
    }


def build(docs: list[dict[str, Any]], root: Path) -> Fleet:
    """Write fleet.yaml, routes/ and member m1/ under `root`."""
    (root / "routes").mkdir(parents=True, exist_ok=True)
    (root / "m1").mkdir(exist_ok=True)
    routes: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []
    pods: list[Pod] = []
    fleet = Fleet(root, pods, {}, {}, {})
    secrets: dict[tuple[str, str], list[str]] = {}
    for doc in docs:
        kind = doc.get("kind")
        meta = doc.get("metadata", {})
        namespace = meta.get("namespace", "default")
        if kind == "Service":
            members += _service(doc, pods)
        elif kind == "Gateway":
            gateway = copy.deepcopy(doc)
            key = f"{namespace}/{meta['name']}"
            moved = fleet.ports.setdefault(key, {})
            fleet.listeners[key] = {}
            fleet.https[key] = set()
            for listener in gateway["spec"].get("listeners", []):
                port = int(listener["port"])
                fleet.listeners[key][listener["name"]] = port
                if listener.get("protocol") == "HTTPS":
                    fleet.https[key].add(port)
                listener["port"] = moved.setdefault(port, free_port())
                for ref in (listener.get("tls") or {}).get("certificateRefs", []):
                    names = secrets.setdefault((ref.get("namespace", namespace), ref["name"]), [])
                    names.append(listener.get("hostname") or "*.example.com")
            routes.append(gateway)
        elif kind in ROUTE_KINDS:
            routes.append(copy.deepcopy(doc))
    for route in routes:  # parentRefs naming a port name the moved one
        if route["kind"] in ("HTTPRoute", "GRPCRoute"):
            for parent in route["spec"].get("parentRefs", []):
                ns = parent.get("namespace", route["metadata"].get("namespace", "default"))
                moved = fleet.ports.get(f"{ns}/{parent['name']}", {})
                if "port" in parent:
                    parent["port"] = moved.get(int(parent["port"]), free_port())
    have = {
        (d["metadata"].get("namespace", "default"), d["metadata"]["name"])
        for d in routes
        if d["kind"] == "Secret"
    }
    for (namespace, name), hostnames in secrets.items():
        if (namespace, name) not in have:
            cert, key = certificate(tuple(sorted(set(hostnames))))
            routes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                    "type": "kubernetes.io/tls",
                    "stringData": {"tls.crt": cert, "tls.key": key},
                }
            )
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet_document()))
    (root / "routes" / "routes.yaml").write_text(yaml.safe_dump_all(routes))
    (root / "m1" / "services.yaml").write_text(yaml.safe_dump_all(members))
    return fleet


def _service(doc: dict[str, Any], pods: list[Pod]) -> list[dict[str, Any]]:
    """The Service as the member declares it, its ports aimed at a local backend, and an
    EndpointSlice naming that backend (for selector-less and headless Services too)."""
    meta = doc["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    spec = doc.get("spec", {})
    if spec.get("type") == "ExternalName" or not spec.get("ports"):
        return []
    selected = (spec.get("selector") or {}).get("app") or PODS_OF.get((namespace, name), name)
    pod = Pod(namespace, selected, next(_addresses), {})
    ports, slice_ports = [], []
    for i, port in enumerate(spec["ports"]):
        number = int(port["port"])
        local = free_port(pod.address)
        pod.ports[number] = local
        port_name = port.get("name", f"p{i}")
        out: dict[str, Any] = {"name": port_name, "port": number, "targetPort": local}
        if "appProtocol" in port:
            out["appProtocol"] = port["appProtocol"]
            pod.app_protocols[number] = port["appProtocol"]
        ports.append(out)
        slice_ports.append({"name": port_name, "port": local})
    pods.append(pod)
    metadata = {"name": name, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": {"ports": ports}},
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {**metadata, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": slice_ports,
            "endpoints": [{"addresses": [pod.address]}],
        },
    ]


def remove(fleet: Fleet, objects: tuple[tuple[str, str, str], ...]) -> None:
    """Rewrite the fleet's route manifests without these (kind, namespace, name) objects, as
    a test that deletes them from its cluster; `serve` notices the file change."""
    path = fleet.root / "routes" / "routes.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    kept = [
        d
        for d in docs
        if (d["kind"], d["metadata"].get("namespace", "default"), d["metadata"]["name"])
        not in objects
    ]
    path.write_text(yaml.safe_dump_all(kept))
