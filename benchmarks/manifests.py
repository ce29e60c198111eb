"""A generated fleet written to disk as the manifests a user would keep (docs/fleet.md), so that
cold start can be timed from files through the real file source.

One file per member (its Services, EndpointSlices and ServiceExports) and one for the routes:
a GitOps checkout of a large fleet groups objects like this, not one file per object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmarks.fleet import (
    FLEET_NAME,
    GATEWAY,
    GATEWAY_PORT,
    NAMESPACE,
    PORT,
    PORT_NAME,
    ROUTE_DOMAIN,
    TARGET_PORT,
    Fleet,
)
from xdsfleet.model.fleet import Endpoint, Member

FLEET_FILE = "fleet.yaml"
ROUTES_DIR = "routes"
MCS_GROUP = "multicluster.x-k8s.io"
# libyaml's emitter: the pure-Python one would take longer than the measure itself.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write(fleet: Fleet, root: Path) -> Path:
    """Write `fleet` under `root`; returns the Fleet file."""
    (root / ROUTES_DIR).mkdir(parents=True, exist_ok=True)
    sources = {m.name: {"manifests": f"members/{m.name}"} for m in fleet.members}
    _dump(root / FLEET_FILE, [_fleet_doc(fleet.members, sources)])
    _dump(root / ROUTES_DIR / "gateway.yaml", [_gateway_doc(), *_route_docs(fleet)])
    for m, member in enumerate(fleet.members):
        directory = root / "members" / member.name
        directory.mkdir(parents=True, exist_ok=True)
        _dump(directory / "services.yaml", member_docs(fleet, m))
    return root / FLEET_FILE


def write_kube(fleet: Fleet, root: Path, kubeconfigs: dict[str, Path]) -> Path:
    """The Fleet file and routes of `fleet` under `root`, its members read from the Kubernetes
    API servers their `kubeconfigs` reach (which hold `member_docs`); returns the Fleet file."""
    (root / ROUTES_DIR).mkdir(parents=True, exist_ok=True)
    sources = {name: {"kubeconfig": str(path)} for name, path in kubeconfigs.items()}
    _dump(root / FLEET_FILE, [_fleet_doc(fleet.members, sources)])
    _dump(root / ROUTES_DIR / "gateway.yaml", [_gateway_doc(), *_route_docs(fleet)])
    return root / FLEET_FILE


def member_docs(fleet: Fleet, m: int) -> list[dict[str, Any]]:
    """The Services, EndpointSlices and ServiceExports of the member at index `m`."""
    member = fleet.members[m]
    docs = []
    for s, service in enumerate(fleet.services()):
        docs += [
            _service_doc(service.name),
            _slice_doc(member, service.name, fleet.endpoints(m, s)),
            _export_doc(service.name),
        ]
    return docs


def _dump(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_text(yaml.dump_all(docs, Dumper=_DUMPER, sort_keys=False))


def _metadata(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE}


def _fleet_doc(members: tuple[Member, ...], sources: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": FLEET_NAME},
        "spec": {
            "source": {"manifests": ROUTES_DIR},
            "members": [
                {
                    "name": m.name,
                    "region": m.region,
                    "zone": m.zone,
                    "source": sources[m.name],
                }
                for m in members
            ],
        },
    }


def _gateway_doc() -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": _metadata(GATEWAY),
        "spec": {
            "gatewayClassName": "xdsfleet",
            "listeners": [{"name": "http", "port": GATEWAY_PORT, "protocol": "HTTP"}],
        },
    }


def _route_docs(fleet: Fleet) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": _metadata(service.name),
            "spec": {
                "parentRefs": [{"name": GATEWAY}],
                "hostnames": [f"{service.name}.{ROUTE_DOMAIN}"],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [
                            {
                                "group": MCS_GROUP,
                                "kind": "ServiceImport",
                                "name": service.name,
                                "port": PORT,
                            }
                        ],
                    }
                ],
            },
        }
        for service in fleet.services()
    ]


def _service_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name),
        "spec": {"ports": [{"name": PORT_NAME, "port": PORT, "targetPort": TARGET_PORT}]},
    }


def _slice_doc(member: Member, service: str, endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            **_metadata(f"{service}-{member.name}"),
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": PORT_NAME, "port": TARGET_PORT}],
        "endpoints": [
            {"addresses": list(e.addresses), "conditions": {"ready": e.ready}, "zone": e.zone}
            for e in endpoints
        ],
    }


def _export_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{MCS_GROUP}/v1alpha1",
        "kind": "ServiceExport",
        "metadata": _metadata(name),
    }
