"""Snapshots: one node profile's complete, consistent resource set at one generation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xdsfleet.cache import types
from xdsfleet.cache.resources import Encoded, Encoder, encode, set_version

HCM_TYPE_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


class InconsistentSnapshot(ValueError):
    """A snapshot that names resources it does not hold; serving it would leave Envoy warming."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    resources: Mapping[str, Mapping[str, Encoded]]
    # Per type: the set version of all its resources (SotW `version_info`).
    versions: Mapping[str, str]
    # Cluster name -> the ClusterLoadAssignment name it warms on (rule 14).
    eds_names: Mapping[str, str] = field(default_factory=dict)
    # Per type: the versions of the snapshot this one replaced, and the names that differ from
    # it (added, changed or removed). A stream that was up to date with the previous snapshot
    # only looks at those names, so its work per change is proportional to the change.
    base_versions: Mapping[str, str] = field(default_factory=dict)
    changed: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def of(self, type_url: str) -> Mapping[str, Encoded]:
        return self.resources.get(type_url, {})

    def changes_since(self, type_url: str, version: str | None) -> frozenset[str] | None:
        """The names of `type_url` that may differ from a snapshot whose version of the type was
        `version`; None when unknown (the caller must look at every name)."""
        if version is None:
            return None
        if version == self.versions.get(type_url, ""):
            return frozenset()
        if version == self.base_versions.get(type_url):
            return self.changed.get(type_url, frozenset())
        return None

    def after(self, previous: Snapshot) -> Snapshot:
        """This snapshot, knowing what changed since `previous`."""
        changed: dict[str, frozenset[str]] = {}
        for type_url, now in self.resources.items():
            before = previous.of(type_url)
            if self.versions.get(type_url) == previous.versions.get(type_url):
                changed[type_url] = frozenset()
                continue
            changed[type_url] = frozenset(
                name
                for name in now.keys() | before.keys()
                if (a := now.get(name)) is None
                or (b := before.get(name)) is None
                or a.version != b.version
            )
        return replace(self, base_versions=previous.versions, changed=changed)


def build_snapshot(messages: Mapping[str, Mapping[str, Any]], encoder: Encoder) -> Snapshot:
    """Encode a translated resource set and check that every reference resolves."""
    eds_names = {
        name: _eds_name(name, cluster) for name, cluster in messages.get(types.CLUSTER, {}).items()
    }
    problems = [
        f"cluster {c!r} needs ClusterLoadAssignment {e!r}, which is missing"
        for c, e in eds_names.items()
        if e is not None and e not in messages.get(types.ENDPOINT, {})
    ]
    problems += [
        f"listener {listener!r} needs RouteConfiguration {route!r}, which is missing"
        for listener, msg in messages.get(types.LISTENER, {}).items()
        for route in _rds_names(msg)
        if route not in messages.get(types.ROUTE, {})
    ]
    if problems:
        raise InconsistentSnapshot("; ".join(problems))
    resources = {
        type_url: {name: encoder.encode(type_url, name, msg) for name, msg in sorted(named.items())}
        for type_url, named in messages.items()
    }
    return Snapshot(
        resources=resources,
        versions={t: set_version(list(named.values())) for t, named in resources.items()},
        eds_names={c: e for c, e in eds_names.items() if e is not None},
    )


def _eds_name(name: str, cluster: Any) -> str | None:
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    return str(cluster.eds_cluster_config.service_name) or name


def _rds_names(listener: Any) -> list[str]:
    managers = [
        flt.typed_config
        for chain in listener.filter_chains
        for flt in chain.filters
        if flt.typed_config.type_url == HCM_TYPE_URL
    ]
    if listener.HasField("api_listener"):
        managers.append(listener.api_listener.api_listener)
    names = []
    for packed in managers:
        hcm = hcm_pb2.HttpConnectionManager()
        packed.Unpack(hcm)
        if hcm.HasField("rds"):
            names.append(hcm.rds.route_config_name)
    return names


@lru_cache(maxsize=4096)
def empty_assignment(name: str) -> Encoded:
    """The answer to an EDS request for a cluster we do not know (rule 15): withholding it
    would leave the requesting cluster warming forever (envoy#9934)."""
    return encode(types.ENDPOINT, name, endpoint_pb2.ClusterLoadAssignment(cluster_name=name))
