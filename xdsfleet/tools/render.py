"""`xdsfleet render`: what a node profile would be served, as data a person or a diff reads."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

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
