"""Protobuf wire framing for discovery responses assembled from pre-serialized parts.

A response to a stream is the bytes of its resources, each serialized once per version, joined
with a few header fields. Building a DiscoveryResponse message per stream would copy and
re-encode every resource for every client; framing bytes by hand costs one join. Field numbers
are those of envoy.service.discovery.v3 (checked against the descriptors in the tests).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable


def varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]  # tags, and the lengths of most fields here
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


_SMALL = tuple(bytes((value,)) for value in range(0x80))


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (wire type 2): strings, bytes and embedded messages."""
    return header(field_number, len(payload)) + payload


def header(field_number: int, size: int) -> bytes:
    """The tag and length of a length-delimited field of `size` bytes, without its payload:
    for joining a field from parts without copying them into one first."""
    return varint(field_number << 3 | 2) + varint(size)


def text(field_number: int, value: str) -> bytes:
    """A string field; proto3 leaves empty strings out."""
    return length_delimited(field_number, value.encode()) if value else b""


# google.protobuf.Any
ANY_TYPE_URL = 1
ANY_VALUE = 2
# envoy.service.discovery.v3.DiscoveryResponse
RESPONSE_VERSION_INFO = 1
RESPONSE_RESOURCES = 2
RESPONSE_TYPE_URL = 4
RESPONSE_NONCE = 5
# envoy.service.discovery.v3.DeltaDiscoveryResponse
DELTA_SYSTEM_VERSION_INFO = 1
DELTA_RESOURCES = 2
DELTA_TYPE_URL = 4
DELTA_NONCE = 5
DELTA_REMOVED_RESOURCES = 6
# envoy.service.discovery.v3.Resource
RESOURCE_VERSION = 1
RESOURCE_RESOURCE = 2
RESOURCE_NAME = 3


@functools.lru_cache(maxsize=256)
def _header(field_number: int, value: str) -> bytes:
    """A response's version or type URL field, framed once per value: the same for every stream
    a fan-out writes to (a snapshot's version; five type URLs), not framed per stream. Bounded:
    versions come and go."""
    return text(field_number, value)


def sotw_response(
    *, version_info: str, type_url: str, nonce: str, entries: Iterable[bytes]
) -> bytes:
    """A serialized DiscoveryResponse; `entries` are pre-framed `resources` fields."""
    return b"".join(
        (
            _header(RESPONSE_VERSION_INFO, version_info),
            *entries,
            _header(RESPONSE_TYPE_URL, type_url),
            text(RESPONSE_NONCE, nonce),
        )
    )


def delta_response(
    *,
    system_version_info: str,
    type_url: str,
    nonce: str,
    entries: Iterable[bytes],
    removed: Iterable[str],
) -> bytes:
    """A serialized DeltaDiscoveryResponse; `entries` are pre-framed `resources` fields."""
    return b"".join(
        (
            _header(DELTA_SYSTEM_VERSION_INFO, system_version_info),
            *entries,
            _header(DELTA_TYPE_URL, type_url),
            text(DELTA_NONCE, nonce),
            *(text(DELTA_REMOVED_RESOURCES, name) for name in removed),
        )
    )
