"""What `xdsfleet status` and `xdsfleet config` print from the admin API's answers.

`status` is one row per client, like `istioctl proxy-status`: per type SYNCED, PENDING, STALE
or NACKED (admin/sync.py says when), and the message of any NACK. `config` is what a client
holds, in the shape `xdsfleet render` prints, so the two can be diffed.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from rich.table import Table

# Importing translation registers the Envoy message types, which the JSON mapping of the
# resources (packed in `Any`) needs.
import xdsfleet.translate  # noqa: F401
from xdsfleet.admin import sync
from xdsfleet.admin.v1 import admin_pb2
from xdsfleet.cache import typeurls

_COLOURS = {
    admin_pb2.SYNCED: "green",
    admin_pb2.PENDING: "yellow",
    admin_pb2.STALE: "red",
    admin_pb2.NACKED: "red",
}


def _cell(status: admin_pb2.TypeStatus | None) -> str:
    if status is None:
        return "-"
    text = sync.name(status.state).replace("_", " ")
    colour = _COLOURS.get(status.state)
    return f"[{colour}]{text}[/{colour}]" if colour else text


def status_table(clients: admin_pb2.ListClientsResponse) -> Table:
    short = [typeurls.SHORT_NAMES[t] for t in typeurls.ORDER]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "PROFILE", "PROTOCOL", *short, "IDENTITY", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for client in clients.clients:
        by_type = {t.type_url: t for t in client.types}
        messages = [
            f"{t.short_name}: {t.nack_message}" for t in client.types if t.state == admin_pb2.NACKED
        ]
        table.add_row(
            client.node_id,
            client.profile,
            client.protocol,
            *(_cell(by_type.get(t)) for t in typeurls.ORDER),
            client.identity or "-",
            "; ".join(messages),
        )
    return table


def as_data(message: Any) -> Any:
    """A response as plain data (protobuf's JSON mapping), for -o json|yaml."""
    return json.loads(json_format.MessageToJson(message))


def config_rows(configs: admin_pb2.GetClientConfigResponse) -> list[dict[str, Any]]:
    """`{typeUrl, name, version, current, resource}` per resource a client holds, sorted by
    (typeUrl, name) as `render` sorts; `resource` is absent for a version no longer served
    and for Secrets."""
    rows = []
    for config in configs.configs:
        for resource in config.resources:
            row: dict[str, Any] = {
                "typeUrl": resource.type_url,
                "name": resource.name,
                "version": resource.version,
                "current": resource.current,
            }
            if resource.HasField("resource"):
                row["resource"] = as_data(resource.resource)
                row["resource"].pop("@type", None)
            rows.append(row)
    return sorted(rows, key=lambda row: (row["typeUrl"], row["name"]))
