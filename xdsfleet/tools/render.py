"""`xdsfleet render`: what a node profile would be served, as data a person or a diff reads.

Private keys are redacted unless asked for: rendered output ends up in terminals, tickets and
CI logs. Filters and the one-line summary keep a large fleet's output readable.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Collection, Iterable
from enum import StrEnum
from typing import Any

from google.protobuf import json_format

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import build_snapshot
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate
from xdsfleet.translate.snapshot import gateway_of


def unnamed_gateway(state: FleetState, profile: NodeProfile) -> str | None:
    """Why a gateway profile gets no Gateway (it names none, and the fleet has not exactly
    one to default to, or it names one the fleet lacks), naming the Gateways there are."""
    if profile.role is not Role.GATEWAY or gateway_of(state, profile.gateway) is not None:
        return None
    there = ", ".join(f"{g.namespace}/{g.name}" for g in state.gateways) or "none"
    if profile.gateway is None:
        return f"name a Gateway with --gateway NS/NAME (the fleet's Gateways: {there})"
    return f"no Gateway {profile.gateway} in the fleet (its Gateways: {there})"


REDACTED = "<redacted: render --show-secrets prints it>"


class Kind(StrEnum):
    """The xDS services, by their usual short names."""

    CDS = "cds"
    EDS = "eds"
    LDS = "lds"
    RDS = "rds"
    SDS = "sds"


TYPE_URLS = {
    Kind.CDS: typeurls.CLUSTER,
    Kind.EDS: typeurls.ENDPOINT,
    Kind.LDS: typeurls.LISTENER,
    Kind.RDS: typeurls.ROUTE,
    Kind.SDS: typeurls.SECRET,
}
_KINDS = {url: kind for kind, url in TYPE_URLS.items()}


def render(state: FleetState, profile: NodeProfile) -> list[dict[str, Any]]:
    """`{typeUrl, name, version, resource}` per resource, sorted by (typeUrl, name); the versions
    are those the server would send, the resource in protobuf's JSON mapping."""
    messages = translate(state, profile)
    snapshot = build_snapshot(messages, Encoder())
    rows = [
        {
            "typeUrl": type_url,
            "name": name,
            "version": snapshot.of(type_url)[name].version,
            # Through JSON text: MessageToDict gives `Any` fields as OrderedDicts, which the
            # YAML output cannot represent.
            "resource": json.loads(json_format.MessageToJson(message)),
        }
        for type_url, named in messages.items()
        for name, message in named.items()
    ]
    return sorted(rows, key=lambda row: (row["typeUrl"], row["name"]))


def select(
    rows: Iterable[dict[str, Any]], *, kinds: Collection[Kind] = (), names: Collection[str] = ()
) -> list[dict[str, Any]]:
    """The rows of these kinds (all when none) whose names match one of these globs (all when
    none)."""
    urls = {TYPE_URLS[kind] for kind in kinds}
    return [
        row
        for row in rows
        if (not urls or row["typeUrl"] in urls)
        and (not names or any(fnmatch.fnmatchcase(row["name"], glob) for glob in names))
    ]


def redacted(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with every secret's private key replaced by a note (versions unchanged: they
    still tell whether two keys differ)."""
    found = []
    for row in rows:
        certificate = row["resource"].get("tlsCertificate")
        if row["typeUrl"] == typeurls.SECRET and certificate and "privateKey" in certificate:
            certificate = {**certificate, "privateKey": {"inlineString": REDACTED}}
            row = {**row, "resource": {**row["resource"], "tlsCertificate": certificate}}
        found.append(row)
    return found


def summary(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One line per resource: kind, name, version, and what it holds."""
    return [
        f"{_KINDS.get(row['typeUrl'], row['typeUrl'])}  {row['name']}  {row['version']}  "
        f"{_describe(row['typeUrl'], row['resource'])}"
        for row in rows
    ]


def _describe(type_url: str, resource: dict[str, Any]) -> str:
    match type_url:
        case typeurls.CLUSTER:
            return f"lb {resource.get('lbPolicy', 'ROUND_ROBIN')}"
        case typeurls.ENDPOINT:
            blocks = resource.get("endpoints", [])
            endpoints = sum(len(b.get("lbEndpoints", [])) for b in blocks)
            tiers = len({b.get("priority", 0) for b in blocks})
            return f"{endpoints} endpoints in {len(blocks)} localities, {tiers} tiers"
        case typeurls.LISTENER:
            address = resource.get("address", {}).get("socketAddress", {})
            if not address:
                return "api listener"
            protocol = address.get("protocol", "TCP")
            return f"{address.get('address', '')}:{address.get('portValue', 0)} {protocol}"
        case typeurls.ROUTE:
            hosts = resource.get("virtualHosts", [])
            routes = sum(len(h.get("routes", [])) for h in hosts)
            return f"{len(hosts)} virtual hosts, {routes} routes"
        case typeurls.SECRET:
            return "TLS certificate" if "tlsCertificate" in resource else "secret"
    return ""
