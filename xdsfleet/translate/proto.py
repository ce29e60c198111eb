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
