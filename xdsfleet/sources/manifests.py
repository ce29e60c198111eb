"""Fleet manifests: YAML documents in, model objects out, and exactly what is wrong otherwise.

Every fleet input that is not a live Kubernetes API is a set of YAML files. This module is the one
place that decides what those documents may say (docs/fleet.md is its user-facing twin) and names
each mistake by file, object and field. It is strict on purpose: a misspelt field that was
silently ignored would be a route or an endpoint silently missing.

It must not do I/O, read the clock or know about Envoy: text and path strings come in (paths are
joined, never resolved), frozen model objects and `Problem`s go out. Reading and watching files is
`files.py`'s job.
"""

from __future__ import annotations

import ipaddress
import os.path
import re
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, overload

import yaml

from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.model.fleet import (
    BackendRef,
    Endpoint,
    EndpointMode,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Gateway,
    GatewayListener,
    HTTPRoute,
    Member,
    MemberState,
    ParentRef,
    PathMatch,
    PathMatchType,
    RouteMatch,
    RouteRule,
    Service,
    ServicePort,
)

T = TypeVar("T")

FLEET_API_VERSION = "xdsfleet.io/v1alpha1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MCS_GROUP = "multicluster.x-k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SERVICE_NAME_FIELD = f'metadata.labels["{SERVICE_NAME_LABEL}"]'

MAX_PORT = 65535
# Gateway API's bound for backendRef weights; member weights share it so that locality weights
# (healthy endpoints x member weight) stay far from uint32 overflow in Envoy.
MAX_WEIGHT = 1_000_000
# Kubernetes allows at most 100 addresses per endpoint.
MAX_ADDRESSES = 100


class Place(StrEnum):
    """Where a file sits, which decides the kinds of documents it may hold."""

    FLEET = "the Fleet file"
    MEMBER = "a member directory"
    ROUTES = "the fleet routes directory"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """The `Fleet` document. Members keep their document order so that problems found later
    (a missing directory) can still name `spec.members[i]`."""

    name: str
    export_all: bool
    members: tuple[Member, ...]
    routes_dir: str | None = None  # spec.source.manifests, joined to the Fleet file's directory


@dataclass(frozen=True, slots=True)
class FileContents:
    """Everything one valid file defines, in document order."""

    fleet: FleetSpec | None = None
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    exports: tuple[tuple[str, str], ...] = ()
    gateways: tuple[Gateway, ...] = ()
    http_routes: tuple[HTTPRoute, ...] = ()


# --- Names -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """A Kubernetes name syntax, with the words used to explain it."""

    pattern: re.Pattern[str]
    max_length: int
    description: str

    def accepts(self, value: str) -> bool:
        return len(value) <= self.max_length and self.pattern.fullmatch(value) is not None


_LABEL_RE = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL = _Rule(
    re.compile(_LABEL_RE),
    63,
    "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or "
    "digit, at most 63 characters)",
)
# Service names must also start with a letter: they become DNS names.
DNS_1035_LABEL = _Rule(
    re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"),
    63,
    "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with "
    "a letter or digit, at most 63 characters)",
)
DNS_SUBDOMAIN = _Rule(
    re.compile(rf"{_LABEL_RE}(\.{_LABEL_RE})*"),
    253,
    "a DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253 characters)",
)
HOSTNAME = _Rule(
    re.compile(rf"(\*\.)?{_LABEL_RE}(\.{_LABEL_RE})*"),
    253,
    "a hostname (DNS-1123 labels separated by dots, optionally starting with '*.')",
)
# A named targetPort refers to a container port name, which is an IANA service name.
PORT_NAME = _Rule(
    re.compile(r"(?=[-a-z0-9]*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?"),
    15,
    "a port name (lowercase letters, digits and '-', with at least one letter, at most 15 "
    "characters)",
)


# --- YAML ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys: plain YAML keeps the last one without a word,
    which would hide a mistake exactly where this module promises to find them."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_documents(text: str, file: str) -> list[object]:
    """The documents of a multi-document YAML text (empty documents dropped); raises
    `InvalidInput` naming the line when the text does not parse."""
    try:
        documents = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        reason = error.problem or error.context or "invalid YAML"
        raise InvalidInput(
            [Problem(file, "", "", f"YAML does not parse{line}: {reason}")]
        ) from None
    except yaml.YAMLError as error:
        raise InvalidInput([Problem(file, "", "", f"YAML does not parse: {error}")]) from None
    return [document for document in documents if document is not None]


# --- Reading one mapping ---------------------------------------------------------------------


def _type_name(value: object) -> str:
    match value:
        case None:
            return "nothing"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "a list"
        case dict():
            return "a map"
        case _:
            return type(value).__name__


_EXPECTED = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a map"}


@dataclass(slots=True)
class _Where:
    """Where the problems of one document go, and the object they name."""

    file: str
    obj: str
    problems: list[Problem]

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, self.obj, path, message))


class _Map:
    """One mapping of a document, read field by field. It reports its unknown keys once, when
    created, and every value of the wrong type as it is read, so that each parser only says what
    it expects. Values it cannot use come back as the default: the document is invalid by then,
    and the caller raises instead of using them."""

    def __init__(self, where: _Where, path: str, value: object, fields: Collection[str]) -> None:
        self._where = where
        self.path = path
        self._raw: dict[Any, Any] = {}
        # A map that is missing (None) or not a map was reported once, where it was read: its
        # fields are not reported missing on top.
        self._absent = not isinstance(value, dict)
        if isinstance(value, dict):
            self._raw = value
            for key in value:
                if key not in fields:
                    where.add(self.at(str(key)), "unknown field")
        elif value is not None:
            where.add(path, f"expected a map, got {_type_name(value)}")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self._where.add(self.at(key), message)

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def value(self, key: str) -> object:
        return self._raw.get(key)

    def _get(self, key: str, kind: type[T], *, required: bool) -> T | None:
        value = self._raw.get(key)
        if value is None:
            if required and not self._absent:
                self.problem(key, "missing required field")
            return None
        # YAML booleans are Python ints: `port: true` must not pass for port 1.
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        self.problem(key, f"expected {_EXPECTED[kind]}, got {_type_name(value)}")
        return None

    @overload
    def text(self, key: str) -> str | None: ...
    @overload
    def text(self, key: str, default: str) -> str: ...
    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key, str, required=False)
        return default if value is None else value

    def required_text(self, key: str) -> str:
        value = self._get(key, str, required=True)
        if value == "":
            self.problem(key, "must not be empty")
        return value or ""

    def name(self, key: str, rule: _Rule) -> str:
        value = self.required_text(key)
        self._check_name(key, value, rule)
        return value

    def optional_name(self, key: str, rule: _Rule) -> str | None:
        value = self.text(key)
        if value is not None:
            self._check_name(key, value, rule)
        return value

    def _check_name(self, key: str, value: str, rule: _Rule) -> None:
        if value and not rule.accepts(value):
            self.problem(key, f"{value!r} is not {rule.description}")

    def choice(self, key: str, options: Sequence[str], default: str) -> str:
        value = self.text(key, default)
        if value not in options:
            self.problem(key, f"must be one of {', '.join(options)}; got {value!r}")
            return default
        return value

    @overload
    def number(self, key: str, low: int, high: int) -> int | None: ...
    @overload
    def number(self, key: str, low: int, high: int, default: int) -> int: ...
    def number(self, key: str, low: int, high: int, default: int | None = None) -> int | None:
        value = self._get(key, int, required=False)
        if value is None:
            return default
        self._check_range(key, value, low, high)
        return value

    def port(self, key: str) -> int:
        """A required port number."""
        value = self._get(key, int, required=True)
        if value is None:
            return 0
        self._check_range(key, value, 1, MAX_PORT)
        return value

    def _check_range(self, key: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}; got {value}")

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, required=False)
        return default if value is None else value

    def mapping(self, key: str, fields: Collection[str], *, required: bool = False) -> _Map:
        value = self._raw.get(key)
        if value is None and required and not self._absent:
            self.problem(key, "missing required field")
        return _Map(self._where, self.at(key), value, fields)

    def mappings(
        self, key: str, fields: Collection[str], *, required: bool = False, non_empty: bool = False
    ) -> list[_Map]:
        items = self._get(key, list, required=required) or []
        if non_empty and key in self._raw and not items:
            self.problem(key, "must not be empty")
        return [
            _Map(self._where, f"{self.at(key)}[{i}]", item, fields) for i, item in enumerate(items)
        ]

    def strings(self, key: str, *, required: bool = False) -> list[str]:
        items = self._get(key, list, required=required) or []
        if required and key in self._raw and not items:
            self.problem(key, "must not be empty")
        found = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                found.append(item)
            else:
                self._where.add(
                    f"{self.at(key)}[{i}]", f"expected a string, got {_type_name(item)}"
                )
        return found

    def string_map(self, key: str) -> dict[str, str]:
        """A map of strings to strings, like labels; its keys are free, so none is unknown."""
        items = self._get(key, dict, required=False) or {}
        found = {}
        for name, value in items.items():
            if isinstance(name, str) and isinstance(value, str):
                found[name] = value
            else:
                self._where.add(f'{self.at(key)}["{name}"]', "expected a string key and value")
        return found


def _flag_repeats(
    owner: _Map, path: str, field: str, values: Sequence[Hashable], what: str
) -> None:
    """Report every entry of the list `path` whose `field` repeats an earlier entry's."""
    seen: set[Hashable] = set()
    for i, value in enumerate(values):
        if value in seen:
            owner.problem(f"{path}[{i}].{field}", f"duplicate {what} {value}")
        seen.add(value)


# --- Kinds -----------------------------------------------------------------------------------

_METADATA_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
    }
)
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# The group a backendRef must name for each kind it may point at.
_BACKEND_GROUPS = {"Service": "", "ServiceImport": MCS_GROUP}


@dataclass(frozen=True, slots=True)
class _Kind:
    api_version: str
    namespaced: bool
    fields: frozenset[str]  # the top-level keys besides apiVersion, kind and metadata


def _kind(api_version: str, *fields: str, namespaced: bool = True) -> _Kind:
    return _Kind(api_version, namespaced, frozenset({"apiVersion", "kind", "metadata", *fields}))


_KINDS = {
    "Fleet": _kind(FLEET_API_VERSION, "spec", namespaced=False),
    "Service": _kind("v1", "spec"),
    "EndpointSlice": _kind("discovery.k8s.io/v1", "addressType", "ports", "endpoints"),
    "ServiceExport": _kind(f"{MCS_GROUP}/v1alpha1"),
    "Gateway": _kind(f"{GATEWAY_GROUP}/v1", "spec"),
    "HTTPRoute": _kind(f"{GATEWAY_GROUP}/v1", "spec"),
}
_PLACE_KINDS = {
    Place.FLEET: ("Fleet", "Gateway", "HTTPRoute"),
    Place.MEMBER: ("Service", "EndpointSlice", "ServiceExport"),
    Place.ROUTES: ("Gateway", "HTTPRoute"),
}


def object_label(kind: str, namespace: str, name: str) -> str:
    """How problems and origins name an object: `Kind NS/NAME`, or `Kind NAME` unnamespaced."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _document_label(document: dict[Any, Any], index: int) -> str:
    kind = document.get("kind")
    kind_text = kind if isinstance(kind, str) and kind else "object"
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return f"{kind_text} (document {index})"
    known = _KINDS.get(kind_text)
    namespace = metadata.get("namespace", "default")
    if (known is not None and not known.namespaced) or not isinstance(namespace, str):
        namespace = ""
    return object_label(kind_text, namespace, name)


def _metadata(doc: _Map, kind: _Kind, rule: _Rule) -> tuple[str, str, dict[str, str]]:
    """(namespace, name, labels); the namespace is "" for unnamespaced kinds."""
    metadata = doc.mapping("metadata", _METADATA_FIELDS, required=True)
    name = metadata.name("name", rule)
    namespace = ""
    if kind.namespaced:
        namespace = metadata.optional_name("namespace", DNS_LABEL) or "default"
    labels = metadata.string_map("labels")
    metadata.string_map("annotations")
    return namespace, name, labels


def _directory(source: _Map, base_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, source.required_text("manifests")))


def _member(entry: _Map, base_dir: str) -> Member:
    modes = [mode.value for mode in EndpointMode]
    return Member(
        name=entry.name("name", DNS_LABEL),
        region=entry.required_text("region"),
        zone=entry.required_text("zone"),
        weight=entry.number("weight", 0, MAX_WEIGHT, 1),
        endpoint_mode=EndpointMode(entry.choice("endpointMode", modes, EndpointMode.POD)),
        manifests=_directory(entry.mapping("source", ("manifests",), required=True), base_dir),
    )


def _fleet(doc: _Map, kind: _Kind, base_dir: str) -> FleetSpec:
    _, name, _ = _metadata(doc, kind, DNS_SUBDOMAIN)
    spec = doc.mapping("spec", ("exportAll", "source", "members"), required=True)
    routes_dir = None
    if spec.has("source"):
        routes_dir = _directory(spec.mapping("source", ("manifests",)), base_dir)
    entries = spec.mappings(
        "members", ("name", "region", "zone", "weight", "endpointMode", "source"), required=True
    )
    members = tuple(_member(entry, base_dir) for entry in entries)
    _flag_repeats(spec, "members", "name", [m.name for m in members], "member name")
    for i, member in enumerate(members):
        # One directory, one role: its files are read either as member objects or as routes.
        if routes_dir is not None and member.manifests == routes_dir:
            spec.problem(f"members[{i}].source.manifests", "same directory as spec.source")
    return FleetSpec(name, spec.flag("exportAll", False), members, routes_dir)


def _target_port(port: _Map) -> int | str | None:
    value = port.value("targetPort")
    if isinstance(value, str):
        port.optional_name("targetPort", PORT_NAME)
        return value
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return port.number("targetPort", 1, MAX_PORT)
    port.problem("targetPort", f"expected a port number or name, got {_type_name(value)}")
    return None


def _service_port(port: _Map) -> ServicePort:
    return ServicePort(
        name=port.optional_name("name", DNS_LABEL) or "",
        port=port.port("port"),
        protocol=port.choice("protocol", _PROTOCOLS, "TCP"),
        app_protocol=port.text("appProtocol"),
        target_port=_target_port(port),
    )


def _service(doc: _Map, kind: _Kind) -> Service:
    namespace, name, _ = _metadata(doc, kind, DNS_1035_LABEL)
    spec = doc.mapping("spec", ("ports",), required=True)
    entries = spec.mappings(
        "ports",
        ("name", "port", "protocol", "appProtocol", "targetPort"),
        required=True,
        non_empty=True,
    )
    ports = tuple(_service_port(entry) for entry in entries)
    if len(ports) > 1:
        for i, port in enumerate(ports):
            if not port.name:
                spec.problem(f"ports[{i}].name", "required when a Service has several ports")
    _flag_repeats(spec, "ports", "name", [p.name for p in ports if p.name], "port name")
    numbers = [f"{p.port}/{p.protocol}" for p in ports]
    _flag_repeats(spec, "ports", "port", numbers, "port")
    return Service(namespace, name, ports)


def _check_address(entry: _Map, i: int, address: str, address_type: str) -> None:
    if address_type == "FQDN":
        valid = HOSTNAME.accepts(address) and not address.startswith("*")
    else:
        try:
            valid = ipaddress.ip_address(address).version == (4 if address_type == "IPv4" else 6)
        except ValueError:
            valid = False
    if not valid:
        entry.problem(f"addresses[{i}]", f"{address!r} is not an {address_type} address")


def _endpoint(entry: _Map, address_type: str) -> Endpoint:
    addresses = entry.strings("addresses", required=True)
    if len(addresses) > MAX_ADDRESSES:
        entry.problem("addresses", f"at most {MAX_ADDRESSES} addresses; got {len(addresses)}")
    if address_type in _ADDRESS_TYPES:
        for i, address in enumerate(addresses):
            _check_address(entry, i, address, address_type)
    conditions = entry.mapping("conditions", ("ready", "serving", "terminating"))
    # Kubernetes defaults: unknown readiness counts as ready, and serving follows ready.
    ready = conditions.flag("ready", True)
    return Endpoint(
        addresses=tuple(addresses),
        ready=ready,
        serving=conditions.flag("serving", ready),
        terminating=conditions.flag("terminating", False),
        zone=entry.text("zone"),
        node_name=entry.text("nodeName"),
    )


def _endpoint_port(port: _Map) -> EndpointPort:
    return EndpointPort(
        name=port.optional_name("name", DNS_LABEL) or "",
        port=port.port("port"),
        protocol=port.choice("protocol", _PROTOCOLS, "TCP"),
        app_protocol=port.text("appProtocol"),
    )


def _endpoint_slice(doc: _Map, kind: _Kind) -> EndpointSlice:
    namespace, name, labels = _metadata(doc, kind, DNS_SUBDOMAIN)
    service = labels.get(SERVICE_NAME_LABEL, "")
    if not service:
        doc.problem(SERVICE_NAME_FIELD, "missing required label")
    address_type = doc.required_text("addressType")
    if address_type and address_type not in _ADDRESS_TYPES:
        doc.problem(
            "addressType", f"must be one of {', '.join(_ADDRESS_TYPES)}; got {address_type!r}"
        )
    fields = ("name", "port", "protocol", "appProtocol")
    ports = tuple(_endpoint_port(entry) for entry in doc.mappings("ports", fields))
    _flag_repeats(doc, "ports", "name", [p.name for p in ports], "port name")
    entries = doc.mappings(
        "endpoints", ("addresses", "conditions", "zone", "nodeName"), required=True
    )
    endpoints = tuple(_endpoint(entry, address_type) for entry in entries)
    return EndpointSlice(namespace, name, service, ports, endpoints, address_type or "IPv4")


def _service_export(doc: _Map, kind: _Kind) -> tuple[str, str]:
    # An export is named after the Service it exports.
    namespace, name, _ = _metadata(doc, kind, DNS_1035_LABEL)
    return namespace, name


def _fixed(entry: _Map, key: str, only: str) -> None:
    """A field that may only state its default: generated manifests often spell it out."""
    value = entry.text(key, only)
    if value != only:
        entry.problem(key, f"only {only!r} is supported; got {value!r}")


def _listener(entry: _Map) -> GatewayListener:
    name = entry.name("name", DNS_SUBDOMAIN)
    port = entry.port("port")
    protocol = entry.required_text("protocol")
    if protocol and protocol != "HTTP":
        entry.problem("protocol", f"only HTTP is supported for now; got {protocol!r}")
    return GatewayListener(name, port, protocol, entry.optional_name("hostname", HOSTNAME))


def _gateway(doc: _Map, kind: _Kind) -> Gateway:
    namespace, name, _ = _metadata(doc, kind, DNS_SUBDOMAIN)
    spec = doc.mapping("spec", ("gatewayClassName", "listeners"), required=True)
    gateway_class = spec.name("gatewayClassName", DNS_SUBDOMAIN)
    entries = spec.mappings(
        "listeners", ("name", "port", "protocol", "hostname"), required=True, non_empty=True
    )
    listeners = tuple(_listener(entry) for entry in entries)
    _flag_repeats(spec, "listeners", "name", [x.name for x in listeners], "listener name")
    bindings = [f"{x.port} {x.hostname or '*'}" for x in listeners]
    _flag_repeats(spec, "listeners", "port", bindings, "listener port and hostname")
    return Gateway(namespace, name, gateway_class, listeners)


def _parent_ref(entry: _Map, route_namespace: str) -> ParentRef:
    _fixed(entry, "group", GATEWAY_GROUP)
    _fixed(entry, "kind", "Gateway")
    return ParentRef(
        namespace=entry.optional_name("namespace", DNS_LABEL) or route_namespace,
        name=entry.name("name", DNS_SUBDOMAIN),
        section_name=entry.optional_name("sectionName", DNS_SUBDOMAIN),
        port=entry.number("port", 1, MAX_PORT),
    )


def _backend_ref(entry: _Map, route_namespace: str) -> BackendRef:
    kind = entry.choice("kind", tuple(_BACKEND_GROUPS), "Service")
    group = entry.text("group", "")
    if group != _BACKEND_GROUPS[kind]:
        entry.problem("group", f"kind {kind} needs group {_BACKEND_GROUPS[kind]!r}; got {group!r}")
    return BackendRef(
        name=entry.name("name", DNS_1035_LABEL),
        namespace=entry.optional_name("namespace", DNS_LABEL) or route_namespace,
        port=entry.port("port"),
        weight=entry.number("weight", 0, MAX_WEIGHT, 1),
        kind=kind,
    )


def _route_match(entry: _Map) -> RouteMatch:
    if not entry.has("path"):
        return RouteMatch()
    path = entry.mapping("path", ("type", "value"))
    types = [t.value for t in PathMatchType]
    match_type = PathMatchType(path.choice("type", types, PathMatchType.PATH_PREFIX))
    value = path.text("value", "/")
    if not value.startswith("/"):
        path.problem("value", "must start with '/'")
    return RouteMatch(PathMatch(match_type, value))


def _route_rule(entry: _Map, route_namespace: str) -> RouteRule:
    # Gateway API: a rule without matches matches every path (PathPrefix "/").
    matches = tuple(_route_match(m) for m in entry.mappings("matches", ("path",)))
    fields = ("group", "kind", "name", "namespace", "port", "weight")
    backends = tuple(
        _backend_ref(b, route_namespace) for b in entry.mappings("backendRefs", fields)
    )
    return RouteRule(matches or (RouteMatch(),), backends)


def _http_route(doc: _Map, kind: _Kind) -> HTTPRoute:
    namespace, name, _ = _metadata(doc, kind, DNS_SUBDOMAIN)
    spec = doc.mapping("spec", ("parentRefs", "hostnames", "rules"), required=True)
    fields = ("group", "kind", "name", "namespace", "sectionName", "port")
    parents = tuple(_parent_ref(p, namespace) for p in spec.mappings("parentRefs", fields))
    hostnames = spec.strings("hostnames")
    for i, hostname in enumerate(hostnames):
        if not HOSTNAME.accepts(hostname):
            spec.problem(f"hostnames[{i}]", f"{hostname!r} is not {HOSTNAME.description}")
    rules = tuple(
        _route_rule(r, namespace) for r in spec.mappings("rules", ("matches", "backendRefs"))
    )
    return HTTPRoute(namespace, name, parents, tuple(hostnames), rules)


# --- Files -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Found:
    fleets: list[FleetSpec] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    endpoint_slices: list[EndpointSlice] = field(default_factory=list)
    exports: list[tuple[str, str]] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    http_routes: list[HTTPRoute] = field(default_factory=list)

    def contents(self) -> FileContents:
        return FileContents(
            fleet=self.fleets[0] if self.fleets else None,
            services=tuple(self.services),
            endpoint_slices=tuple(self.endpoint_slices),
            exports=tuple(self.exports),
            gateways=tuple(self.gateways),
            http_routes=tuple(self.http_routes),
        )


def _check_kind(where: _Where, document: dict[Any, Any], place: Place) -> _Kind | None:
    """The document's kind when its fields can be read, after reporting what is wrong with its
    apiVersion and kind."""
    kind_name = document.get("kind")
    if not isinstance(kind_name, str) or not kind_name:
        where.add("kind", "missing required field")
        return None
    kind = _KINDS.get(kind_name)
    if kind is None:
        where.add("kind", f"unknown kind {kind_name!r}")
        return None
    if kind_name not in _PLACE_KINDS[place]:
        allowed = ", ".join(_PLACE_KINDS[place])
        where.add("kind", f"{kind_name} does not belong in {place} (only {allowed})")
        return None
    api_version = document.get("apiVersion")
    if api_version is None:
        where.add("apiVersion", "missing required field")
    elif api_version != kind.api_version:
        where.add("apiVersion", f"{kind_name} needs {kind.api_version!r}; got {api_version!r}")
    return kind


def _parse_document(
    document: object, index: int, where: _Where, place: Place, base_dir: str, found: _Found
) -> None:
    if not isinstance(document, dict):
        where.obj = f"document {index}"
        where.add("", f"expected a Kubernetes object, got {_type_name(document)}")
        return
    where.obj = _document_label(document, index)
    kind = _check_kind(where, document, place)
    if kind is None:
        return
    doc = _Map(where, "", document, kind.fields)
    match document["kind"]:
        case "Fleet":
            if found.fleets:
                where.add("kind", "a second Fleet document (a Fleet file holds exactly one)")
            found.fleets.append(_fleet(doc, kind, base_dir))
        case "Service":
            found.services.append(_service(doc, kind))
        case "EndpointSlice":
            found.endpoint_slices.append(_endpoint_slice(doc, kind))
        case "ServiceExport":
            found.exports.append(_service_export(doc, kind))
        case "Gateway":
            found.gateways.append(_gateway(doc, kind))
        case "HTTPRoute":
            found.http_routes.append(_http_route(doc, kind))


def parse_file(text: str, file: str, place: Place, base_dir: str = "") -> FileContents:
    """Parse one file found at `place`. `base_dir` (the Fleet file's directory) anchors the
    relative directories a Fleet document names. Raises `InvalidInput` with every problem of the
    file; objects defined in several files are checked later, by `assemble`."""
    problems: list[Problem] = []
    found = _Found()
    for index, document in enumerate(load_documents(text, file), start=1):
        where = _Where(file, "", problems)
        _parse_document(document, index, where, place, base_dir, found)
    if place is Place.FLEET and not found.fleets and not problems:
        problems.append(Problem(file, "", "", "no Fleet document (a Fleet file holds exactly one)"))
    if problems:
        raise InvalidInput(problems)
    return found.contents()


# --- Fleets ----------------------------------------------------------------------------------


def origin_key(obj: str, member: str | None = None) -> str:
    """The `LoadedFleet.origins` key of the object labelled `obj` (see `object_label`); objects
    of a member carry its name, as `Service default/shop@zone-a`."""
    return obj if member is None else f"{obj}@{member}"


@dataclass(frozen=True, slots=True)
class LoadedFleet:
    """A fleet loaded from files: its state, and the file each object came from (keyed by
    `origin_key`), so that checks run on the state can still point at the file to fix."""

    state: FleetState
    origins: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class FleetFiles:
    """The parsed files that make up one fleet. Each mapping is ordered: when two files define
    the same object, the first keeps it and the later one is reported."""

    fleet_file: str
    fleet: FleetSpec
    fleet_level: Mapping[str, FileContents]  # the Fleet file and its routes directory
    members: Mapping[str, Mapping[str, FileContents]]  # member name -> its files


class _Definitions:
    """Where objects are gathered across files: first definition wins, repeats are problems."""

    def __init__(self, problems: list[Problem], origins: dict[str, str], member: str | None):
        self._problems = problems
        self._origins = origins
        self._member = member

    def gather(
        self,
        kind: str,
        files: Mapping[str, FileContents],
        pick: Callable[[FileContents], Iterable[T]],
        key: Callable[[T], tuple[str, str]],
    ) -> dict[tuple[str, str], tuple[str, T]]:
        """(namespace, name) -> (file, object), first definitions only."""
        first: dict[tuple[str, str], tuple[str, T]] = {}
        for file, contents in files.items():
            for item in pick(contents):
                namespaced_name = key(item)
                label = object_label(kind, *namespaced_name)
                if namespaced_name in first:
                    where = f" of member {self._member}" if self._member else ""
                    message = f"already defined in {first[namespaced_name][0]}{where}"
                    self._problems.append(Problem(file, label, "metadata.name", message))
                    continue
                first[namespaced_name] = (file, item)
                self._origins[origin_key(label, self._member)] = file
        return first


def _in_order(found: Mapping[tuple[str, str], tuple[str, T]]) -> tuple[T, ...]:
    return tuple(found[key][1] for key in sorted(found))


def _identity(key: tuple[str, str]) -> tuple[str, str]:
    return key


def _namespaced_name(item: Service | EndpointSlice | Gateway | HTTPRoute) -> tuple[str, str]:
    return item.namespace, item.name


def _member_state(
    member: Member,
    files: Mapping[str, FileContents],
    problems: list[Problem],
    origins: dict[str, str],
) -> MemberState:
    found = _Definitions(problems, origins, member.name)
    services = found.gather("Service", files, lambda c: c.services, _namespaced_name)
    slices = found.gather("EndpointSlice", files, lambda c: c.endpoint_slices, _namespaced_name)
    exports = found.gather("ServiceExport", files, lambda c: c.exports, _identity)
    for (namespace, name), (file, endpoint_slice) in sorted(slices.items()):
        if (namespace, endpoint_slice.service_name) not in services:
            label = object_label("EndpointSlice", namespace, name)
            service = object_label("Service", namespace, endpoint_slice.service_name)
            message = f"{service} is not defined in member {member.name}"
            problems.append(Problem(file, label, SERVICE_NAME_FIELD, message))
    return MemberState(
        member,
        services=_in_order(services),
        endpoint_slices=_in_order(slices),
        exports=tuple(sorted(exports)),
    )


def assemble(files: FleetFiles) -> tuple[LoadedFleet, list[Problem]]:
    """Join the files of a fleet into one state. The problems are those no single file shows:
    an object defined twice (the first definition is kept) and an EndpointSlice whose Service no
    file of its member defines (the slice is kept: translation ignores it)."""
    problems: list[Problem] = []
    origins = {origin_key(object_label("Fleet", "", files.fleet.name)): files.fleet_file}
    members = tuple(
        _member_state(member, files.members.get(member.name, {}), problems, origins)
        for member in sorted(files.fleet.members, key=lambda m: m.name)
    )
    found = _Definitions(problems, origins, None)
    gateways = found.gather("Gateway", files.fleet_level, lambda c: c.gateways, _namespaced_name)
    routes = found.gather("HTTPRoute", files.fleet_level, lambda c: c.http_routes, _namespaced_name)
    state = FleetState(
        name=files.fleet.name,
        members=members,
        gateways=_in_order(gateways),
        http_routes=_in_order(routes),
        export_all=files.fleet.export_all,
    )
    return LoadedFleet(state, origins), problems


# --- References ------------------------------------------------------------------------------


def _parent_problem(parent: ParentRef, gateways: Mapping[tuple[str, str], Gateway]) -> str:
    gateway = gateways.get((parent.namespace, parent.name))
    label = object_label("Gateway", parent.namespace, parent.name)
    if gateway is None:
        return f"{label} does not exist"
    listeners = [
        listener
        for listener in gateway.listeners
        if parent.section_name in (None, listener.name) and parent.port in (None, listener.port)
    ]
    if listeners:
        return ""
    if parent.section_name is not None and parent.port is not None:
        return f"{label} has no listener {parent.section_name!r} on port {parent.port}"
    if parent.section_name is not None:
        return f"{label} has no listener {parent.section_name!r}"
    return f"{label} has no listener on port {parent.port}"


@dataclass(frozen=True, slots=True)
class _Offered:
    """What the members offer, by (namespace, service name)."""

    ports: Mapping[tuple[str, str], frozenset[int]]
    exported: frozenset[tuple[str, str]]

    @classmethod
    def of(cls, state: FleetState) -> _Offered:
        ports: dict[tuple[str, str], set[int]] = {}
        exported: set[tuple[str, str]] = set()
        for member in state.members:
            for service in member.services:
                key = (service.namespace, service.name)
                ports.setdefault(key, set()).update(p.port for p in service.ports)
                if state.export_all or key in member.exports:
                    exported.add(key)
        return cls({k: frozenset(v) for k, v in ports.items()}, frozenset(exported))

    def problem(self, backend: BackendRef) -> str:
        key = (backend.namespace, backend.name)
        label = object_label("Service", *key)
        if key not in self.ports:
            return f"{label} is not defined by any member"
        if backend.port not in self.ports[key]:
            return f"{label} has no port {backend.port} in any member"
        if key not in self.exported:
            return f"{label} is not exported by any member (add a ServiceExport)"
        return ""


def reference_problems(state: FleetState, origins: Mapping[str, str]) -> list[Problem]:
    """What the routes point at that does not exist: a parentRef to an unknown Gateway or
    listener, a backendRef to a service (namespace, name, port) no member defines or exports.
    Not parse errors: translation skips such references, and `validate` reports them."""
    gateways = {(g.namespace, g.name): g for g in state.gateways}
    offered = _Offered.of(state)
    problems = []
    for route in state.http_routes:
        label = object_label("HTTPRoute", route.namespace, route.name)
        file = origins.get(origin_key(label), "")
        for i, parent in enumerate(route.parent_refs):
            if message := _parent_problem(parent, gateways):
                problems.append(Problem(file, label, f"spec.parentRefs[{i}]", message))
        for r, rule in enumerate(route.rules):
            for b, backend in enumerate(rule.backend_refs):
                if message := offered.problem(backend):
                    path = f"spec.rules[{r}].backendRefs[{b}]"
                    problems.append(Problem(file, label, path, message))
    return problems
