"""Fleets written to disk for tests: the same manifests a user would write, built from data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Pod:
    address: str
    ready: bool = True


@dataclass
class MemberSpec:
    name: str
    region: str
    zone: str
    # service name -> pods; every service listens on `target_port` behind service port 80.
    services: dict[str, list[Pod]] = field(default_factory=dict)
    weight: int = 1
    drain: bool = False


@dataclass
class FleetFiles:
    """A fleet directory whose member files tests rewrite to change the fleet."""

    root: Path
    members: list[MemberSpec]
    target_port: int
    listener_port: int
    service_port: int = 80
    app_protocol: str | None = None
    # TrafficPolicy documents (routes/policies.yaml); `spec` only, keyed by policy name.
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    # service -> the rules of its HTTPRoute, instead of one rule to the service.
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def fleet(self) -> Path:
        return self.root / "fleet.yaml"

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.fleet.write_text(yaml.safe_dump(self._fleet_doc(), sort_keys=False))
        self.write_routes()
        self.write_policies()
        for member in self.members:
            self.write_member(member)

    def write_routes(self) -> None:
        (self.root / "routes").mkdir(parents=True, exist_ok=True)
        routes = [self._gateway_doc(), *self._route_docs()]
        (self.root / "routes" / "gateway.yaml").write_text(yaml.safe_dump_all(routes))

    def write_policies(self) -> None:
        path = self.root / "routes" / "policies.yaml"
        if not self.policies:
            path.unlink(missing_ok=True)
            return
        docs = [
            {
                "apiVersion": "xdsfleet.io/v1alpha1",
                "kind": "TrafficPolicy",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            }
            for name, spec in self.policies.items()
        ]
        path.write_text(yaml.safe_dump_all(docs))

    def write_member(self, member: MemberSpec) -> None:
        directory = self.root / "members" / member.name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.yaml"):
            if old.stem not in member.services:
                old.unlink()
        for service, pods in member.services.items():
            docs = self._service_docs(member, service, pods)
            (directory / f"{service}.yaml").write_text(yaml.safe_dump_all(docs))

    def member(self, name: str) -> MemberSpec:
        return next(m for m in self.members if m.name == name)

    def services(self) -> list[str]:
        return sorted({s for m in self.members for s in m.services})

    def _fleet_doc(self) -> dict[str, Any]:
        return {
            "apiVersion": "xdsfleet.io/v1alpha1",
            "kind": "Fleet",
            "metadata": {"name": "test"},
            "spec": {
                "source": {"manifests": "routes"},
                "members": [
                    {
                        "name": m.name,
                        "region": m.region,
                        "zone": m.zone,
                        "weight": m.weight,
                        "source": {"manifests": f"members/{m.name}"},
                    }
                    | ({"drain": True} if m.drain else {})
                    for m in self.members
                ],
            },
        }

    def _gateway_doc(self) -> dict[str, Any]:
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {
                "gatewayClassName": "xdsfleet",
                "listeners": [{"name": "http", "port": self.listener_port, "protocol": "HTTP"}],
            },
        }

    def _route_docs(self) -> list[dict[str, Any]]:
        """One HTTPRoute per service, and per entry of `rules`: host `SERVICE.example.com`."""
        return [
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": service, "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "gw"}],
                    "hostnames": [f"{service}.example.com"],
                    "rules": self.rules.get(service)
                    or [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [self.backend(service)],
                        }
                    ],
                },
            }
            for service in sorted({*self.services(), *self.rules})
        ]

    def backend(self, service: str) -> dict[str, Any]:
        """A backendRef to the service across its members."""
        return {
            "group": "multicluster.x-k8s.io",
            "kind": "ServiceImport",
            "name": service,
            "port": self.service_port,
        }

    def _service_docs(self, member: MemberSpec, service: str, pods: list[Pod]) -> list[Any]:
        port: dict[str, Any] = {"name": "http", "port": self.service_port}
        if self.app_protocol:
            port["appProtocol"] = self.app_protocol
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": "default"},
                "spec": {"ports": [port | {"targetPort": self.target_port}]},
            },
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceExport",
                "metadata": {"name": service, "namespace": "default"},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": self.target_port}],
                "endpoints": [
                    {
                        "addresses": [pod.address],
                        "conditions": {"ready": pod.ready},
                        "zone": member.zone,
                    }
                    for pod in pods
                ],
            },
        ]
