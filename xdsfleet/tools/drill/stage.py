"""A user's fleet made local: a copy of its files in which every endpoint address of every member
is replaced by an address of this machine (in the member's namespace, or on loopback), and the
gateway's listeners by free ports. The copy is what `xdsfleet serve` serves, with the user's own
routes and policies untouched; the originals are never written.

Only members described by manifests can be staged: a member read from a live Kubernetes cluster
has no files to copy (export its objects with `kubectl get -o yaml` into a directory first).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xdsfleet.model.fleet import EndpointMode, FleetState, MemberState
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.drill.processes import free_port
from xdsfleet.tools.drill.topology import Topology


class CannotStage(ValueError):
    """The fleet cannot be staged locally; the message says why."""


@dataclass(frozen=True, slots=True)
class Staged:
    fleet: Path  # the copy's Fleet file
    state: FleetState  # the original fleet
    listeners: dict[str, int]  # listener name -> local port
    listen: dict[str, list[tuple[str, int]]]  # member -> where its backends answer


def _endpoint_addresses(member: MemberState) -> list[str]:
    if member.member.endpoint_mode is EndpointMode.NODE_PORT:
        return sorted({n.addresses[0] for n in member.nodes if n.addresses})
    return sorted({a for s in member.endpoint_slices for e in s.endpoints for a in e.addresses})


def _listen(member: MemberState, mapping: dict[str, str]) -> list[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    if member.member.endpoint_mode is EndpointMode.NODE_PORT:
        ports = {p.node_port for s in member.services for p in s.ports if p.node_port}
        found = {(mapping[a], port) for a in mapping for port in ports}
    else:
        for piece in member.endpoint_slices:
            for endpoint in piece.endpoints:
                for address in endpoint.addresses:
                    found.update((mapping[address], port.port) for port in piece.ports)
    return sorted(found)


def _rewrite(path: Path, edit: Any) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    if any([edit(doc) for doc in docs if isinstance(doc, dict)]):  # noqa: C419 (edit every one)
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def stage(
    fleet: Path, gateway: str, topology: Topology, into: Path, *, delays: dict[str, int]
) -> Staged:
    """Copy `fleet` into `into`, give each member room in `topology`, and map addresses."""
    fleet = fleet.resolve()
    state = load_fleet(fleet).state
    root = fleet.parent
    for member in state.members:
        where = member.member.manifests
        if where is None:
            raise CannotStage(
                f"member {member.member.name} is read from Kubernetes; the drill needs its "
                "objects as manifests (kubectl get -o yaml into a directory the Fleet names)"
            )
        if not (root / where).resolve().is_relative_to(root):
            raise CannotStage(f"member {member.member.name}: {where} is outside {root}")
    # Never written: every edit below goes to the copy (paths in the state are absolute).
    namespace, _, name = gateway.partition("/")
    gateways = [g for g in state.gateways if (g.namespace, g.name) == (namespace, name)]
    if not gateways:
        raise CannotStage(f"no Gateway {gateway} in {fleet}")
    copy = into / "fleet"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".*"))

    listeners = {listener.name: free_port() for listener in gateways[0].listeners}

    def set_ports(doc: dict[str, Any]) -> bool:
        meta = doc.get("metadata") or {}
        if doc.get("kind") != "Gateway" or (meta.get("namespace", "default"), meta.get("name")) != (
            namespace,
            name,
        ):
            return False
        for listener in doc["spec"]["listeners"]:
            listener["port"] = listeners[listener["name"]]
        return True

    for path in copy.rglob("*.y*ml"):
        _rewrite(path, set_ports)

    listen = {}
    for member in state.members:
        addresses = _endpoint_addresses(member)
        name_ = member.member.name
        local = topology.add_member(name_, len(addresses), delay_ms=delays.get(name_, 0))
        mapping = dict(zip(addresses, local, strict=True))
        listen[name_] = _listen(member, mapping)
        assert member.member.manifests is not None
        relative = (root / member.member.manifests).resolve().relative_to(root)
        for path in (copy / relative).glob("*.y*ml"):
            _rewrite(path, lambda doc, m=mapping: _map_addresses(doc, m))
    return Staged(copy / fleet.name, state, listeners, listen)


def _map_addresses(doc: dict[str, Any], mapping: dict[str, str]) -> bool:
    if doc.get("kind") == "EndpointSlice":
        for endpoint in doc.get("endpoints") or []:
            endpoint["addresses"] = [mapping.get(a, a) for a in endpoint.get("addresses", [])]
        return True
    if doc.get("kind") == "Node":
        for address in (doc.get("status") or {}).get("addresses") or []:
            address["address"] = mapping.get(address["address"], address["address"])
        return True
    return False
