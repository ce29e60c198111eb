"""Protobuf pieces every resource builder needs: `Any` packing, the ADS config source,
durations, and the type name for messages.

Kept apart so that clusters and listeners point back at the server the same way.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from envoy.config.core.v3 import config_source_pb2
from google.protobuf import duration_pb2

# A protobuf message. The Envoy stubs ship no type hints, and neither does protobuf without
# `types-protobuf`, so importing `google.protobuf` would only trade this alias for ignores.
Message: TypeAlias = Any


class Serialized:
    """A message made as its serialized bytes (joined from pre-serialized parts), for the hot
    paths: the cache encodes it by taking the bytes (`SerializeToString`), and anything that
    reads it (tests, `render`, `explain`) gets the parsed message, built on first use.

    Equal when the bytes are equal: they are deterministic, so equal messages have equal bytes.
    """

    __slots__ = ("_data", "_parsed", "_type")

    def __init__(self, message_type: Any, data: bytes) -> None:
        self._type = message_type
        self._data = data
        self._parsed: Message | None = None

    def SerializeToString(self, *, deterministic: bool = True) -> bytes:  # noqa: N802 - protobuf's name
        return self._data

    def parsed(self) -> Message:
        if self._parsed is None:
            self._parsed = self._type.FromString(self._data)
        return self._parsed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parsed(), name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Serialized):
            return self._data == other._data
        return bool(self.parsed() == other)

    __hash__ = None  # type: ignore[assignment]  # as protobuf messages

    def __repr__(self) -> str:
        return f"Serialized({self.parsed()!r})"


def pack_into(target: Message, message: Message) -> None:
    """Pack `message` into the `Any` field `target`, deterministically serialized so that equal
    inputs give equal bytes (map fields would otherwise vary)."""
    target.Pack(message, deterministic=True)


def ads_config_source() -> Message:
    """Fetch over the same ADS stream, v3: what every cluster and listener of ours refers to."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def duration(milliseconds: int) -> Message:
    built = duration_pb2.Duration()
    built.FromMilliseconds(milliseconds)
    return built
