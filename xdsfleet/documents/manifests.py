"""Fleet manifests: YAML documents in, model objects out, and exactly what is wrong otherwise.

Every fleet input that is not a live Kubernetes API is a set of YAML files. This module decides
which kinds a file may hold where, reads the Fleet and the member documents, and joins files into
one state; Gateway API kinds are read by `gateway_api` and TrafficPolicy by `policy`, all through
`reading` (docs/fleet.md and docs/policy.md are the user-facing twins). Each mistake is named by
file, object and field. It is strict on purpose: a misspelt field that was silently ignored would
be a route or an endpoint silently missing. A member's Services and EndpointSlices (the bulk of a
large fleet) are first offered to `plain`, which reads the common well-formed shape in one pass
and hands anything else back to be read here.

It must not do I/O, read the clock or know about Envoy: text and path strings come in (paths are
joined, never resolved), frozen model objects and `Problem`s go out. Reading and watching files is
`files.py`'s job.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os.path
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from xdsfleet.documents import gateway_api, plain, policy
from xdsfleet.documents.plain import (
    ADDRESS_TYPES,
    CONDITION_FIELDS,
    ENDPOINT_FIELDS,
    EXPORT_API_VERSION,
    IP_FAMILIES,
    MAX_ADDRESSES,
    PROTOCOLS,
    SERVICE_API_VERSION,
    SERVICE_NAME_LABEL,
    SERVICE_PORT_FIELDS,
    SERVICE_SPEC_FIELDS,
    SLICE_API_VERSION,
    SLICE_PORT_FIELDS,
    TARGET_FIELDS,
    valid_address,
)
from xdsfleet.documents.reading import (
    DNS_1035_LABEL,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    FLEET_API_VERSION,
    GATEWAY_GROUP,
    MAX_PORT,
    MAX_WEIGHT,
    PORT_NAME,
    Map,
    NameRule,
    Where,
    did_you_mean,
    flag_repeats,
    load_documents,
    metadata,
    type_name,
)
from xdsfleet.documents.reading import object_label as object_label
from xdsfleet.documents.reading import origin_key as origin_key
from xdsfleet.documents.references import reference_problems as reference_problems
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.model.fleet import (
    Endpoint,
    EndpointMode,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Gateway,
    GRPCRoute,
    HTTPRoute,
    Member,
    MemberState,
    Namespace,
    Node,
    ReferenceGrant,
    Service,
    ServicePort,
    TLSSecret,
)
from xdsfleet.model.frozen import builder
from xdsfleet.model.identity import ANY, IdentityRule
from xdsfleet.model.node import Role
from xdsfleet.model.policy import TrafficPolicy

T = TypeVar("T")

SERVICE_NAME_FIELD = f'metadata.labels["{SERVICE_NAME_LABEL}"]'
ZONE_LABEL = "topology.kubernetes.io/zone"


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
    # spec.source.kubeconfig (joined) and .context: the fleet cluster, where fleet-level
    # objects and member Secrets are watched.
    kubeconfig: str | None = None
    context: str | None = None
    # spec.ipFamily: the address family dual-stack Services serve (else each one's first).
    ip_family: str | None = None
    # spec.identities: who may claim which node profile over mTLS (model/identity.py).
    identities: tuple[IdentityRule, ...] = ()


@dataclass(frozen=True, slots=True)
class FileContents:
    """Everything one valid file defines, in document order."""

    fleet: FleetSpec | None = None
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    exports: tuple[tuple[str, str], ...] = ()
    gateways: tuple[Gateway, ...] = ()
    http_routes: tuple[HTTPRoute, ...] = ()
    nodes: tuple[Node, ...] = ()
    grpc_routes: tuple[GRPCRoute, ...] = ()
    policies: tuple[TrafficPolicy, ...] = ()
    secrets: tuple[TLSSecret, ...] = ()
    reference_grants: tuple[ReferenceGrant, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    foreign_gateways: tuple[tuple[str, str], ...] = ()  # of another class: skipped


# --- Kinds -----------------------------------------------------------------------------------

_NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS")


@dataclass(frozen=True, slots=True)
class _Kind:
    api_versions: tuple[str, ...]  # the first is the one written in messages
    namespaced: bool
    fields: frozenset[str]  # the top-level keys besides apiVersion, kind and metadata


def _kind(api_version: str | tuple[str, ...], *fields: str, namespaced: bool = True) -> _Kind:
    versions = (api_version,) if isinstance(api_version, str) else api_version
    return _Kind(versions, namespaced, frozenset({"apiVersion", "kind", "metadata", *fields}))


_KINDS = {
    "Fleet": _kind(FLEET_API_VERSION, "spec", namespaced=False),
    "Service": _kind(SERVICE_API_VERSION, "spec"),
    "EndpointSlice": _kind(SLICE_API_VERSION, "addressType", "ports", "endpoints"),
    "ServiceExport": _kind(EXPORT_API_VERSION),
    "Node": _kind("v1", "status", namespaced=False),
    "Gateway": _kind(f"{GATEWAY_GROUP}/v1", "spec"),
    "HTTPRoute": _kind(f"{GATEWAY_GROUP}/v1", "spec"),
    "GRPCRoute": _kind(f"{GATEWAY_GROUP}/v1", "spec"),
    "Secret": _kind("v1", "type", "data", "stringData"),
    "TrafficPolicy": _kind(FLEET_API_VERSION, "spec"),
    # Served as v1 and v1beta1 alike by current Gateway API CRDs.
    "ReferenceGrant": _kind((f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1beta1"), "spec"),
    # Read for its labels (allowedRoutes selectors); its spec and status say nothing to us.
    "Namespace": _kind("v1", "spec", "status", namespaced=False),
}
_FLEET_LEVEL_KINDS = (
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TrafficPolicy",
    "Secret",
    "ReferenceGrant",
    "Namespace",
)
_PLACE_KINDS = {
    Place.FLEET: ("Fleet", *_FLEET_LEVEL_KINDS),
    Place.MEMBER: ("Service", "EndpointSlice", "ServiceExport", "Node"),
    Place.ROUTES: _FLEET_LEVEL_KINDS,
}


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


def _metadata(doc: Map, kind: _Kind, rule: NameRule) -> tuple[str, str, dict[str, str]]:
    """(namespace, name, labels); the namespace is "" for unnamespaced kinds."""
    return metadata(doc, rule, namespaced=kind.namespaced)


def _path(source: Map, key: str, base_dir: str) -> str | None:
    value = source.text(key)
    if value is None:
        return None
    if not value:
        source.problem(key, "must not be empty")
    return os.path.normpath(os.path.join(base_dir, value))


@dataclass(frozen=True, slots=True)
class _Source:
    """A `source`: exactly one of `manifests`, `kubeconfig` (with an optional `context`), or,
    for a member, `secret`."""

    manifests: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    secret: str | None = None


def _source(owner: Map, base_dir: str, *, secret: bool, required: bool) -> _Source:
    fields = ("manifests", "kubeconfig", "context", *(("secret",) if secret else ()))
    source = owner.mapping("source", fields, required=required)
    found = _Source(
        manifests=_path(source, "manifests", base_dir),
        kubeconfig=_path(source, "kubeconfig", base_dir),
        context=source.text("context"),
        secret=source.optional_name("secret", DNS_SUBDOMAIN) if secret else None,
    )
    if found.context == "":
        source.problem("context", "must not be empty")
    given = [f for f in fields if f != "context" and source.has(f)]
    if owner.has("source") and len(given) != 1:
        choices = " or ".join(f for f in fields if f != "context")
        owner.problem("source", f"needs exactly one of {choices}; got {len(given)}")
    if found.context is not None and found.kubeconfig is None:
        source.problem("context", "only with kubeconfig")
    return found


def _member(entry: Map, base_dir: str) -> Member:
    modes = [mode.value for mode in EndpointMode]
    source = _source(entry, base_dir, secret=True, required=True)
    return Member(
        name=entry.name("name", DNS_LABEL),
        region=entry.required_text("region"),
        zone=entry.required_text("zone"),
        weight=entry.number("weight", 0, MAX_WEIGHT, 1),
        endpoint_mode=EndpointMode(entry.choice("endpointMode", modes, EndpointMode.POD)),
        manifests=source.manifests,
        kubeconfig=source.kubeconfig,
        context=source.context,
        secret=source.secret,
        drain=entry.flag("drain", False),
    )


_MEMBER_FIELDS = ("name", "region", "zone", "weight", "endpointMode", "source", "drain")


def parse_member(entry: Mapping[str, object], file: str, obj: str) -> Member:
    """One member described outside a Fleet (by a member Secret's annotations), read exactly as
    a `spec.members[]` entry; raises `InvalidInput` naming the entry's fields."""
    problems: list[Problem] = []
    member = _member(Map(Where(file, obj, problems), "", dict(entry), _MEMBER_FIELDS), "")
    if problems:
        raise InvalidInput(problems)
    return member


_IDENTITY_FIELDS = ("identity", "roles", "gateways", "members")


def _identity_rule(entry: Map, members: Collection[str]) -> IdentityRule:
    identity = entry.required_text("identity")
    if ANY in identity[:-1]:
        entry.problem("identity", f"{ANY!r} may only end the pattern (a prefix match)")
    known = [role.value for role in Role]
    roles = entry.strings("roles", required=True)
    for i, role in enumerate(roles):
        if role not in known:
            entry.problem(f"roles[{i}]", f"must be one of {', '.join(known)}; got {role!r}")
    gateways = entry.strings("gateways")
    for i, gateway in enumerate(gateways):
        if gateway != ANY and (gateway.count("/") != 1 or "" in gateway.split("/")):
            entry.problem(f"gateways[{i}]", f"expected NAMESPACE/NAME or {ANY!r}; got {gateway!r}")
    listed = entry.strings("members")
    for i, member in enumerate(listed):
        if member != ANY and member not in members:
            entry.problem(f"members[{i}]", f"no member {member!r} in spec.members")
    return IdentityRule(
        identity=identity,
        roles=tuple(Role(r) for r in roles if r in known),
        gateways=tuple(gateways),
        members=tuple(listed),
    )


def _fleet(doc: Map, kind: _Kind, base_dir: str) -> FleetSpec:
    _, name, _ = _metadata(doc, kind, DNS_SUBDOMAIN)
    spec = doc.mapping(
        "spec", ("exportAll", "ipFamily", "source", "members", "identities"), required=True
    )
    source = _source(spec, base_dir, secret=False, required=False)
    routes_dir = source.manifests
    entries = spec.mappings("members", _MEMBER_FIELDS, required=True)
    members = tuple(_member(entry, base_dir) for entry in entries)
    flag_repeats(spec, "members", "name", [m.name for m in members], "member name")
    for i, member in enumerate(members):
        # One directory, one role: its files are read either as member objects or as routes.
        if routes_dir is not None and member.manifests == routes_dir:
            spec.problem(f"members[{i}].source.manifests", "same directory as spec.source")
    names = {m.name for m in members}
    identities = spec.mappings("identities", _IDENTITY_FIELDS)
    return FleetSpec(
        name,
        spec.flag("exportAll", False),
        members,
        routes_dir,
        kubeconfig=source.kubeconfig,
        context=source.context,
        ip_family=spec.choice("ipFamily", IP_FAMILIES, "IPv4") if spec.has("ipFamily") else None,
        identities=tuple(_identity_rule(entry, names) for entry in identities),
    )


def _target_port(port: Map) -> int | str | None:
    value = port.value("targetPort")
    if isinstance(value, str):
        port.optional_name("targetPort", PORT_NAME)
        return value
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return port.number("targetPort", 1, MAX_PORT)
    port.problem("targetPort", f"expected a port number or name, got {type_name(value)}")
    return None


def _service_port(port: Map) -> ServicePort:
    return ServicePort(
        name=port.optional_name("name", DNS_LABEL) or "",
        port=port.port("port"),
        protocol=port.choice("protocol", PROTOCOLS, "TCP"),
        app_protocol=port.text("appProtocol"),
        target_port=_target_port(port),
        node_port=port.number("nodePort", 1, MAX_PORT),
    )


def _service(doc: Map, kind: _Kind) -> Service:
    namespace, name, _ = _metadata(doc, kind, DNS_1035_LABEL)
    spec = doc.mapping("spec", SERVICE_SPEC_FIELDS, required=True)
    entries = spec.mappings("ports", SERVICE_PORT_FIELDS, required=True, non_empty=True)
    ports = tuple(_service_port(entry) for entry in entries)
    if len(ports) > 1:
        for i, port in enumerate(ports):
            if not port.name:
                spec.problem(f"ports[{i}].name", "required when a Service has several ports")
    flag_repeats(spec, "ports", "name", [p.name for p in ports if p.name], "port name")
    numbers = [f"{p.port}/{p.protocol}" for p in ports]
    flag_repeats(spec, "ports", "port", numbers, "port")
    families = spec.strings("ipFamilies")
    for i, family in enumerate(families):
        if family not in IP_FAMILIES:
            spec.problem(f"ipFamilies[{i}]", f"must be one of {', '.join(IP_FAMILIES)}")
    return Service(namespace, name, ports, tuple(families))


def _check_address(entry: Map, i: int, address: str, address_type: str) -> None:
    if not valid_address(address, address_type):
        entry.problem(f"addresses[{i}]", f"{address!r} is not an {address_type} address")


def _endpoint(entry: Map, address_type: str) -> Endpoint:
    addresses = entry.strings("addresses", required=True)
    if len(addresses) > MAX_ADDRESSES:
        entry.problem("addresses", f"at most {MAX_ADDRESSES} addresses; got {len(addresses)}")
    if address_type in ADDRESS_TYPES:
        for i, address in enumerate(addresses):
            _check_address(entry, i, address, address_type)
    conditions = entry.mapping("conditions", CONDITION_FIELDS)
    target = entry.mapping("targetRef", TARGET_FIELDS)
    target_name = target.text("name")
    # Kubernetes defaults: unknown readiness counts as ready, and serving follows ready.
    ready = conditions.flag("ready", True)
    return Endpoint(
        addresses=tuple(addresses),
        ready=ready,
        serving=conditions.flag("serving", ready),
        terminating=conditions.flag("terminating", False),
        zone=entry.text("zone"),
        node_name=entry.text("nodeName"),
        target=f"{target.text('namespace', '')}/{target_name}" if target_name else None,
    )


def _endpoint_port(port: Map) -> EndpointPort:
    return EndpointPort(
        name=port.optional_name("name", DNS_LABEL) or "",
        port=port.port("port"),
        protocol=port.choice("protocol", PROTOCOLS, "TCP"),
        app_protocol=port.text("appProtocol"),
    )


def _endpoint_slice(doc: Map, kind: _Kind) -> EndpointSlice:
    namespace, name, labels = _metadata(doc, kind, DNS_SUBDOMAIN)
    service = labels.get(SERVICE_NAME_LABEL, "")
    if not service:
        doc.problem(SERVICE_NAME_FIELD, "missing required label")
    address_type = doc.required_text("addressType")
    if address_type and address_type not in ADDRESS_TYPES:
        doc.problem(
            "addressType", f"must be one of {', '.join(ADDRESS_TYPES)}; got {address_type!r}"
        )
    ports = tuple(_endpoint_port(entry) for entry in doc.mappings("ports", SLICE_PORT_FIELDS))
    flag_repeats(doc, "ports", "name", [p.name for p in ports], "port name")
    entries = doc.mappings("endpoints", ENDPOINT_FIELDS, required=True)
    endpoints = tuple(_endpoint(entry, address_type) for entry in entries)
    return EndpointSlice(namespace, name, service, ports, endpoints, address_type or "IPv4")


def _service_export(doc: Map, kind: _Kind) -> tuple[str, str]:
    # An export is named after the Service it exports.
    namespace, name, _ = _metadata(doc, kind, DNS_1035_LABEL)
    return namespace, name


def _node_address(entry: Map) -> tuple[str, str]:
    kind = entry.choice("type", _NODE_ADDRESS_TYPES, "InternalIP")
    if not entry.has("type"):
        entry.problem("type", "missing required field")
    address = entry.required_text("address")
    if address and kind in ("InternalIP", "ExternalIP"):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            entry.problem("address", f"{address!r} is not an IP address")
    return kind, address


def _node(doc: Map, kind: _Kind) -> Node:
    _, name, labels = _metadata(doc, kind, DNS_SUBDOMAIN)
    status = doc.mapping("status", ("addresses", "conditions"), required=True)
    addresses = [_node_address(a) for a in status.mappings("addresses", ("type", "address"))]
    internal = tuple(address for kind_name, address in addresses if kind_name == "InternalIP")
    if not internal:
        status.problem("addresses", "needs an InternalIP address (node ports are reached there)")
    fields = ("type", "status", "reason", "message", "lastHeartbeatTime", "lastTransitionTime")
    ready = True
    for condition in status.mappings("conditions", fields):
        condition_type = condition.required_text("type")
        value = condition.choice("status", ("True", "False", "Unknown"), "Unknown")
        if condition_type == "Ready":
            ready = value == "True"
    return Node(name, internal, zone=labels.get(ZONE_LABEL), ready=ready)


# --- Files -----------------------------------------------------------------------------------


_new_contents = builder(FileContents)


@dataclass(slots=True)
class _Found:
    fleets: list[FleetSpec] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    endpoint_slices: list[EndpointSlice] = field(default_factory=list)
    exports: list[tuple[str, str]] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    http_routes: list[HTTPRoute] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    grpc_routes: list[GRPCRoute] = field(default_factory=list)
    policies: list[TrafficPolicy] = field(default_factory=list)
    secrets: list[TLSSecret] = field(default_factory=list)
    reference_grants: list[ReferenceGrant] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    foreign_gateways: list[tuple[str, str]] = field(default_factory=list)

    def contents(self) -> FileContents:
        # Built once per API object read (a file of one object), so without `__init__`.
        return _new_contents(
            fleet=self.fleets[0] if self.fleets else None,
            services=tuple(self.services),
            endpoint_slices=tuple(self.endpoint_slices),
            exports=tuple(self.exports),
            gateways=tuple(self.gateways),
            http_routes=tuple(self.http_routes),
            nodes=tuple(self.nodes),
            grpc_routes=tuple(self.grpc_routes),
            policies=tuple(self.policies),
            secrets=tuple(self.secrets),
            reference_grants=tuple(self.reference_grants),
            namespaces=tuple(self.namespaces),
            foreign_gateways=tuple(self.foreign_gateways),
        )


def _check_kind(where: Where, document: dict[Any, Any], place: Place) -> _Kind | None:
    """The document's kind when its fields can be read, after reporting what is wrong with its
    apiVersion and kind."""
    kind_name = document.get("kind")
    if not isinstance(kind_name, str) or not kind_name:
        where.add("kind", "missing required field")
        return None
    kind = _KINDS.get(kind_name)
    if kind is None:
        where.add("kind", f"unknown kind {kind_name!r}{did_you_mean(kind_name, _KINDS)}")
        return None
    if kind_name not in _PLACE_KINDS[place]:
        allowed = ", ".join(_PLACE_KINDS[place])
        where.add("kind", f"{kind_name} does not belong in {place} (only {allowed})")
        return None
    api_version = document.get("apiVersion")
    if api_version is None:
        where.add("apiVersion", "missing required field")
    elif api_version not in kind.api_versions:
        wanted = " or ".join(repr(v) for v in kind.api_versions)
        where.add("apiVersion", f"{kind_name} needs {wanted}; got {api_version!r}")
    return kind


def _plain(document: dict[Any, Any]) -> Service | EndpointSlice | tuple[str, str] | None:
    """A member's Service, EndpointSlice or ServiceExport of the common shape, read at once
    (`plain`); None for every other document, read field by field below."""
    match document.get("kind"):
        case "EndpointSlice":
            return plain.endpoint_slice(document)
        case "Service":
            return plain.service(document)
        case "ServiceExport":
            return plain.service_export(document)
    return None


# The FileContents field of what `_plain` reads, by its type.
_PLAIN_FIELDS = {Service: "services", EndpointSlice: "endpoint_slices", tuple: "exports"}
_NOTHING = {f.name: getattr(FileContents(), f.name) for f in dataclasses.fields(FileContents)}


def _parse_document(
    document: object, index: int, where: Where, place: Place, base_dir: str, found: _Found
) -> None:
    if not isinstance(document, dict):
        where.obj = f"document {index}"
        where.add("", f"expected a Kubernetes object, got {type_name(document)}")
        return
    if place is Place.MEMBER and (plain_object := _plain(document)) is not None:
        getattr(found, _PLAIN_FIELDS[type(plain_object)]).append(plain_object)
        return
    where.obj = _document_label(document, index)
    kind = _check_kind(where, document, place)
    if kind is None:
        return
    doc = Map(where, "", document, kind.fields)
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
        case "Node":
            found.nodes.append(_node(doc, kind))
        case "Gateway":
            if (foreign := gateway_api.foreign_gateway(doc)) is not None:
                found.foreign_gateways.append(foreign)
            else:
                found.gateways.append(gateway_api.gateway(doc))
        case "HTTPRoute":
            found.http_routes.append(gateway_api.http_route(doc))
        case "GRPCRoute":
            found.grpc_routes.append(gateway_api.grpc_route(doc))
        case "Secret":
            found.secrets.append(gateway_api.tls_secret(doc))
        case "TrafficPolicy":
            found.policies.append(policy.traffic_policy(doc))
        case "ReferenceGrant":
            found.reference_grants.append(gateway_api.reference_grant(doc))
        case "Namespace":
            found.namespaces.append(gateway_api.namespace_object(doc))


def parse_file(text: str, file: str, place: Place, base_dir: str = "") -> FileContents:
    """Parse one file found at `place`. `base_dir` (the Fleet file's directory) anchors the
    relative directories a Fleet document names. Raises `InvalidInput` with every problem of the
    file; objects defined in several files are checked later, by `assemble`."""
    return parse_documents(load_documents(text, file), file, place, base_dir)


def parse_documents(
    documents: Iterable[object], file: str, place: Place, base_dir: str = ""
) -> FileContents:
    """`parse_file` for documents already loaded: objects read from a Kubernetes API are
    checked by exactly the rules files are. `file` names where they came from in problems."""
    if (
        place is Place.MEMBER
        and type(documents) is list
        and len(documents) == 1
        and isinstance(documents[0], dict)
        and (plain_object := _plain(documents[0])) is not None
    ):
        # One API object of the common shape, as a member list gives them: no file to gather.
        return _new_contents(**{**_NOTHING, _PLAIN_FIELDS[type(plain_object)]: (plain_object,)})
    problems: list[Problem] = []
    found = _Found()
    for index, document in enumerate(documents, start=1):
        where = Where(file, "", problems)
        _parse_document(document, index, where, place, base_dir, found)
    if place is Place.FLEET and not found.fleets and not problems:
        problems.append(Problem(file, "", "", "no Fleet document (a Fleet file holds exactly one)"))
    if problems:
        raise InvalidInput(problems)
    return found.contents()


# --- Fleets ----------------------------------------------------------------------------------


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


class _Named(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...


def _namespaced_name(item: _Named) -> tuple[str, str]:
    return item.namespace, item.name


def _node_name(node: Node) -> tuple[str, str]:
    return "", node.name


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
    nodes = found.gather("Node", files, lambda c: c.nodes, _node_name)
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
        nodes=_in_order(nodes),
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
    level = files.fleet_level
    gateways = found.gather("Gateway", level, lambda c: c.gateways, _namespaced_name)
    routes = found.gather("HTTPRoute", level, lambda c: c.http_routes, _namespaced_name)
    grpc_routes = found.gather("GRPCRoute", level, lambda c: c.grpc_routes, _namespaced_name)
    policies = found.gather("TrafficPolicy", level, lambda c: c.policies, _namespaced_name)
    secrets = found.gather("Secret", level, lambda c: c.secrets, _namespaced_name)
    grants = found.gather("ReferenceGrant", level, lambda c: c.reference_grants, _namespaced_name)
    namespaces = found.gather("Namespace", level, lambda c: c.namespaces, _namespaced_name)
    state = FleetState(
        name=files.fleet.name,
        members=members,
        gateways=_in_order(gateways),
        http_routes=_in_order(routes),
        export_all=files.fleet.export_all,
        ip_family=files.fleet.ip_family,
        grpc_routes=_in_order(grpc_routes),
        policies=_in_order(policies),
        secrets=_in_order(secrets),
        reference_grants=_in_order(grants),
        namespaces=_in_order(namespaces),
        foreign_gateways=tuple(sorted({k for c in level.values() for k in c.foreign_gateways})),
        identities=files.fleet.identities,
    )
    return LoadedFleet(state, origins), problems
