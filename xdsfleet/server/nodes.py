"""Reading a node profile off the Envoy `node` of a stream's first request.

Node fields come from whoever connects: a value of the wrong kind is refused by name (never
read as absent, which would silently make a `gateway`), and what reaches logs is clipped.
"""

from __future__ import annotations

from typing import Any

from xdsfleet.model.node import (
    GATEWAY_KEY,
    MEMBER_KEY,
    ROLE_KEY,
    NodeProfile,
    ProfileError,
    profile_from_fields,
)

# Longer node fields are cut in logs and listings: a client must not write megabyte lines.
CLIP = 200


def clip(text: str, limit: int = CLIP) -> str:
    """`text`, cut to `limit` characters with a mark saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def _text(metadata: Any, key: str) -> str | None:
    value = metadata.fields.get(key)
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind != "string_value":
        raise ProfileError(f"node.metadata {key}: expected a string, got {kind or 'nothing'}")
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
