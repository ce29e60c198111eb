"""`xdsfleet render`: what a node profile would be served, as data a person or a diff reads."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import build_snapshot
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.translate import translate


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
