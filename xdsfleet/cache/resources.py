"""Encoded resources: a message serialized once, with its version and framed copies.

The version is a content hash, so two replicas given the same inputs serve the same versions and
an unchanged resource never looks new. The framed copies are what the server joins into
responses, so no stream ever serializes a resource again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from xdsfleet.cache import wire


@dataclass(frozen=True, slots=True)
class Encoded:
    type_url: str
    name: str
    version: str
    body: bytes  # the message itself, deterministically serialized
    sotw_entry: bytes  # a DiscoveryResponse `resources` field: the Any, framed
    delta_entry: bytes  # a DeltaDiscoveryResponse `resources` field: the Resource, framed
    # This resource's share of a set version (`set_version`), computed once with the encoding.
    set_term: int


SET_MODULUS = 2**64


def content_version(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def set_term(name: str, version: str) -> int:
    """A 64-bit hash of one (name, version) pair: what it adds to its set's version."""
    digest = hashlib.blake2b(f"{name}\0{version}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def encode(type_url: str, name: str, message: Any) -> Encoded:
    # Deterministic serialization: map fields (Struct metadata, typed_extension_protocol_options)
    # would otherwise change bytes, and so versions, between runs (envoy#6252).
    body: bytes = message.SerializeToString(deterministic=True)
    version = content_version(body)
    # Both entries frame the same `Any` around the body: each is joined once from small
    # headers and the body, rather than nesting concatenations that copy the body at every
    # level (an assignment of a large service is megabytes).
    value_head = wire.header(wire.ANY_VALUE, len(body))
    any_head = wire.text(wire.ANY_TYPE_URL, type_url) + value_head
    any_size = len(any_head) + len(body)
    resource_version = wire.text(wire.RESOURCE_VERSION, version)
    resource_head = resource_version + wire.header(wire.RESOURCE_RESOURCE, any_size)
    resource_name = wire.text(wire.RESOURCE_NAME, name)
    resource_size = len(resource_head) + any_size + len(resource_name)
    return Encoded(
        type_url=type_url,
        name=name,
        version=version,
        body=body,
        sotw_entry=b"".join((wire.header(wire.RESPONSE_RESOURCES, any_size), any_head, body)),
        delta_entry=b"".join(
            (
                wire.header(wire.DELTA_RESOURCES, resource_size),
                resource_head,
                any_head,
                body,
                resource_name,
            )
        ),
        set_term=set_term(name, version),
    )


def set_version(resources: Iterable[Encoded]) -> str:
    """The version of a set of resources: changes when any member or the membership changes.

    The sum of each resource's `set_term`, so it does not depend on order and a patched set's
    version follows in O(changed) (`patched_set_version`); a content hash, so replicas agree.
    """
    return _hex(sum(res.set_term for res in resources))


def patched_set_version(version: str, removed: Iterable[Encoded], added: Iterable[Encoded]) -> str:
    """The version of the set of `version` without `removed` and with `added`."""
    total = int(version, 16) - sum(r.set_term for r in removed) + sum(a.set_term for a in added)
    return _hex(total)


def _hex(total: int) -> str:
    return format(total % SET_MODULUS, "016x")


EMPTY_SET = _hex(0)


class Encoder:
    """Encodes messages, remembering the result by message identity.

    Translation memoises its builders, so an unchanged resource arrives as the very same message
    object and costs a dict lookup here. Entries not used during a generation are dropped at its
    end, which keeps memory proportional to what is served.
    """

    def __init__(self) -> None:
        self._current: dict[tuple[int, str], tuple[Any, Encoded]] = {}
        self._previous: dict[tuple[int, str], tuple[Any, Encoded]] = {}
        # How many messages it has encoded (not found): what it added to memory.
        self.encoded = 0

    def encode(self, type_url: str, name: str, message: Any) -> Encoded:
        key = (id(message), name)
        hit = self._current.get(key) or self._previous.get(key)
        # The message is kept alive with the entry, so its id cannot be reused meanwhile.
        if hit is not None and hit[0] is message:
            self._current[key] = hit
            return hit[1]
        encoded = encode(type_url, name, message)
        self._current[key] = (message, encoded)
        self.encoded += 1
        return encoded

    def end_generation(self) -> dict[tuple[int, str], tuple[Any, Encoded]]:
        """Start a generation; the entries it drops, for the caller to free at its pace (all of
        a generation's at once can take 10 ms)."""
        dropped = self._previous
        self._previous, self._current = self._current, {}
        return dropped
