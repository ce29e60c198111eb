"""Reading a node profile off the Envoy `node` of a stream's first request."""

from __future__ import annotations

from typing import Any

from xdsfleet.model.node import (
    GATEWAY_KEY,
    MEMBER_KEY,
    ROLE_KEY,
    NodeProfile,
    profile_from_fields,
)


def _text(metadata: Any, key: str) -> str | None:
    value = metadata.fields.get(key)
    if value is None or value.WhichOneof("kind") != "string_value":
        return None
    return str(value.string_value)


def profile_of(node: Any) -> NodeProfile:
    """Raises `ProfileError` for metadata that names no valid role or gateway."""
    return profile_from_fields(
        role=_text(node.metadata, ROLE_KEY),
        gateway=_text(node.metadata, GATEWAY_KEY),
        member=_text(node.metadata, MEMBER_KEY),
        region=node.locality.region,
        zone=node.locality.zone,
    )
