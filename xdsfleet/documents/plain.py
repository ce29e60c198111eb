"""Services, EndpointSlices and ServiceExports of the common, well-formed shape, read at once.

A large fleet is mostly these (150,000 objects at E = 100,000), nearly all well formed, and
reading each one field by field through `reading.Map` (a `Map` per entry, a path string per list
item, a regular expression per name) was about 60 % of decoding and reading a listed page. Here
such a document is read straight off its dicts and lists, 3-4 times cheaper (measured by
`python -m benchmarks.parsing`).

The rule that keeps this honest: a reader here may be stricter than `manifests`, never looser.
At the first thing it does not expect (a wrong type, a missing or unknown field, a bad name,
address or port, a repeat) it returns None, and `manifests` reads the document again in full, so
every problem is found and worded in one place only. A reader that returns an object returns
exactly what `manifests` would have returned, with no problem: tests/test_plain_documents.py
proves both with hypothesis. It must not report problems, do I/O or know about Envoy.

Objects listed from a member's API server are read here too, as they come (`api_service`,
`api_endpoint_slice`, `api_service_export`): they carry much the model does not read
(managedFields, status, uid, an endpoint's hints), which a file may not, and list items carry
no apiVersion or kind. `sources.kube.objects` cuts such an object down to the fields the model
reads before `manifests` reads it; these readers skip the copy and read the same fields off the
object itself, with the same rule: what they accept is exactly what the cut-down document reads
as, anything unexpected is left to that path (tests/test_kube_objects.py holds them to it).
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

from xdsfleet.documents.reading import (
    DNS_1035_LABEL,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    HOSTNAME,
    MAX_PORT,
    MCS_GROUP,
    METADATA_FIELDS,
    PORT_NAME,
    NameRule,
)
from xdsfleet.model.fleet import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort
from xdsfleet.model.frozen import builder

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Set by multi-cluster services implementations (KEP-1645) on the slices they import from other
# clusters: those endpoints belong to another member, which xdsfleet reads itself.
IMPORTED_LABEL = "multicluster.kubernetes.io/source-cluster"
PROTOCOLS = ("TCP", "UDP", "SCTP")
IP_FAMILIES = ("IPv4", "IPv6")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# Kubernetes allows at most 100 addresses per endpoint.
MAX_ADDRESSES = 100

SLICE_API_VERSION = "discovery.k8s.io/v1"
SLICE_FIELDS = frozenset({"apiVersion", "kind", "metadata", "addressType", "ports", "endpoints"})
SLICE_PORT_FIELDS = ("name", "port", "protocol", "appProtocol")
ENDPOINT_FIELDS = ("addresses", "conditions", "zone", "nodeName", "targetRef")
CONDITION_FIELDS = ("ready", "serving", "terminating")
TARGET_FIELDS = ("kind", "namespace", "name")
SERVICE_API_VERSION = "v1"
SERVICE_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec"})
SERVICE_SPEC_FIELDS = ("ports", "ipFamilies")
SERVICE_PORT_FIELDS = ("name", "port", "protocol", "appProtocol", "targetPort", "nodePort")
EXPORT_API_VERSION = f"{MCS_GROUP}/v1alpha1"
EXPORT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})

_SLICE_PORT_KEYS = frozenset(SLICE_PORT_FIELDS)
_ENDPOINT_KEYS = frozenset(ENDPOINT_FIELDS)
_CONDITION_KEYS = frozenset(CONDITION_FIELDS)
_TARGET_KEYS = frozenset(TARGET_FIELDS)
_SERVICE_SPEC_KEYS = frozenset(SERVICE_SPEC_FIELDS)
_SERVICE_PORT_KEYS = frozenset(SERVICE_PORT_FIELDS)
# Exactly the octets `ipaddress` accepts: decimal, 0-255, no leading zero.
_OCTETS = frozenset(str(n) for n in range(256))
_intern = sys.intern
_new_endpoint = builder(Endpoint)
_new_endpoint_port = builder(EndpointPort)
_new_slice = builder(EndpointSlice)
_new_service_port = builder(ServicePort)
_new_service = builder(Service)


def valid_address(address: str, address_type: str) -> bool:
    """Whether `address` is one of `address_type` (IPv4, IPv6 or FQDN, as in an EndpointSlice)."""
    if address_type == "FQDN":
        return HOSTNAME.accepts(address) and not address.startswith("*")
    try:
        return ipaddress.ip_address(address).version == (4 if address_type == "IPv4" else 6)
    except ValueError:
        return False


def _ipv4(address: str) -> bool:
    # What `ipaddress.ip_address(a).version == 4` says, by set lookups (a property test checks).
    parts = address.split(".")
    return len(parts) == 4 and _OCTETS.issuperset(parts)


class _Accepted:
    """Names a rule accepted lately. Namespaces, service and port names repeat across a fleet's
    objects, and a set lookup is cheaper than the rule's regular expression. Bounded: cleared
    when full."""

    __slots__ = ("_rule", "_seen")
    _LIMIT = 65_536

    def __init__(self, rule: NameRule) -> None:
        self._rule = rule
        self._seen: set[str] = set()

    def __call__(self, value: str) -> bool:
        if value in self._seen:
            return True
        if not self._rule.accepts(value):
            return False
        if len(self._seen) >= self._LIMIT:
            self._seen.clear()
        self._seen.add(value)
        return True


_label = _Accepted(DNS_LABEL)
_service_name = _Accepted(DNS_1035_LABEL)
_port_name = _Accepted(PORT_NAME)


def _strings_map(value: object) -> bool:
    """Whether `value` is absent or a map of strings to strings (labels, annotations)."""
    if value is None:
        return True
    if type(value) is not dict:
        return False
    return all(type(k) is str and type(v) is str for k, v in value.items())


def _metadata(
    document: dict[Any, Any], name_ok: Any, api: bool = False
) -> tuple[str, str, dict[str, str]] | None:
    """(namespace, name, labels) of a namespaced object, as `reading.metadata` reads them. Of an
    API object (`api`): its other fields, labels and annotations are not read (labels: {})."""
    meta = document.get("metadata")
    if type(meta) is not dict or not (api or METADATA_FIELDS.issuperset(meta)):
        return None
    name = meta.get("name")
    if type(name) is not str or not name or not name_ok(name):
        return None
    namespace = meta.get("namespace")
    if not namespace:
        if namespace is not None and namespace != "":
            return None  # 0, False, [], {}: the wrong type
        namespace = "default"
    elif type(namespace) is not str or not _label(namespace):
        return None
    if api:
        return _intern(namespace), name, {}
    labels = meta.get("labels")
    if not _strings_map(labels) or not _strings_map(meta.get("annotations")):
        return None
    return _intern(namespace), name, labels or {}


def _port_fields(port: dict[Any, Any]) -> tuple[str, int, str, str | None] | None:
    """(name, port, protocol, appProtocol) of a port entry; its other keys are the caller's."""
    name = port.get("name")
    if name is None:
        name = ""
    elif type(name) is not str or (name and not _label(name)):
        return None
    number = port.get("port")
    if type(number) is not int or not 1 <= number <= MAX_PORT:
        return None
    protocol = port.get("protocol")
    if protocol is None:
        protocol = "TCP"
    elif protocol not in PROTOCOLS or type(protocol) is not str:
        return None
    app_protocol = port.get("appProtocol")
    if app_protocol is not None and type(app_protocol) is not str:
        return None
    return _intern(name), number, _intern(protocol), app_protocol


def _endpoint(entry: object, address_type: str, api: bool = False) -> Endpoint | None:
    """One `endpoints[]` entry. Of an API object (`api`), fields other than those the model reads
    are not read, and a `targetRef` without a name is none (`objects` leaves it out)."""
    if type(entry) is not dict or not (api or _ENDPOINT_KEYS.issuperset(entry)):
        return None
    addresses = entry.get("addresses")
    if type(addresses) is not list or not addresses or len(addresses) > MAX_ADDRESSES:
        return None
    for address in addresses:
        if type(address) is not str:
            return None
        if not (_ipv4(address) if address_type == "IPv4" else valid_address(address, address_type)):
            return None
    ready: object = True
    serving: object = None
    terminating: object = False
    conditions = entry.get("conditions")
    if conditions is not None:
        if type(conditions) is not dict or not (api or _CONDITION_KEYS.issuperset(conditions)):
            return None
        ready = conditions.get("ready", True)
        serving = conditions.get("serving")
        terminating = conditions.get("terminating", False)
        if ready is None:
            ready = True
        if terminating is None:
            terminating = False
        if type(ready) is not bool or type(terminating) is not bool:
            return None
        if serving is not None and type(serving) is not bool:
            return None
    zone = entry.get("zone")
    node_name = entry.get("nodeName")
    if (zone is not None and type(zone) is not str) or (
        node_name is not None and type(node_name) is not str
    ):
        return None
    target = entry.get("targetRef")
    target_text = None
    if api and type(target) is dict and not target.get("name"):
        target = None
    if target is not None:
        if type(target) is not dict or not (api or _TARGET_KEYS.issuperset(target)):
            return None
        target_name = target.get("name")
        target_namespace = target.get("namespace")
        if (target_name is not None and type(target_name) is not str) or (
            target_namespace is not None and type(target_namespace) is not str
        ):
            return None
        if target_name:
            target_text = f"{target_namespace or ''}/{target_name}"
    return _new_endpoint(
        tuple(addresses),
        ready,
        ready if serving is None else serving,
        terminating,
        None if zone is None else _intern(zone),
        None if node_name is None else _intern(node_name),
        target_text,
    )


def endpoint_slice(document: dict[Any, Any]) -> EndpointSlice | None:
    """The EndpointSlice `document` (a member's, of kind EndpointSlice) defines when it has the
    common shape and no problem; None when `manifests` must read it in full."""
    if document.get("apiVersion") != SLICE_API_VERSION or not SLICE_FIELDS.issuperset(document):
        return None
    found = _metadata(document, DNS_SUBDOMAIN.accepts)
    if found is None:
        return None
    namespace, name, labels = found
    return _slice_body(document, namespace, name, labels.get(SERVICE_NAME_LABEL), api=False)


def api_endpoint_slice(obj: dict[Any, Any]) -> EndpointSlice | None:
    """The EndpointSlice a member's API object `obj` is, as `objects` cut down and `manifests`
    read it, when it has the common shape, no problem, and is one of a Service that is not
    imported from elsewhere; None when that path must read it."""
    meta = obj.get("metadata")
    labels = meta.get("labels") if type(meta) is dict else None
    if type(labels) is not dict or IMPORTED_LABEL in labels:
        return None
    service = labels.get(SERVICE_NAME_LABEL)
    if type(service) is not str:
        return None
    found = _metadata(obj, DNS_SUBDOMAIN.accepts, api=True)
    if found is None:
        return None
    namespace, name, _ = found
    return _slice_body(obj, namespace, name, service, api=True)


def _slice_body(
    document: dict[Any, Any], namespace: str, name: str, service: str | None, *, api: bool
) -> EndpointSlice | None:
    """An EndpointSlice's fields after its metadata. Of an API object (`api`): a port without a
    number is one `objects` leaves out, left to that path, and no endpoints is none."""
    address_type = document.get("addressType")
    if not service or address_type not in ADDRESS_TYPES or type(address_type) is not str:
        return None
    raw_ports = document.get("ports")
    ports: list[EndpointPort] = []
    if raw_ports is not None:
        if type(raw_ports) is not list:
            return None
        names = set()
        for port in raw_ports:
            if type(port) is not dict or not (api or _SLICE_PORT_KEYS.issuperset(port)):
                return None
            fields = _port_fields(port)
            if fields is None or fields[0] in names:
                return None
            names.add(fields[0])
            ports.append(_new_endpoint_port(*fields))
    entries = document.get("endpoints")
    if api and entries is None:
        entries = []
    if type(entries) is not list:
        return None
    endpoints = []
    for entry in entries:
        endpoint = _endpoint(entry, address_type, api)
        if endpoint is None:
            return None
        endpoints.append(endpoint)
    return _new_slice(
        namespace, name, _intern(service), tuple(ports), tuple(endpoints), _intern(address_type)
    )


def _service_port(port: object, api: bool = False) -> ServicePort | None:
    if type(port) is not dict or not (api or _SERVICE_PORT_KEYS.issuperset(port)):
        return None
    fields = _port_fields(port)
    if fields is None:
        return None
    target = port.get("targetPort")
    if type(target) is str:
        if target and not _port_name(target):
            return None
        target = _intern(target)
    elif target is not None and (type(target) is not int or not 1 <= target <= MAX_PORT):
        return None
    node_port = port.get("nodePort")
    if node_port is not None and (type(node_port) is not int or not 1 <= node_port <= MAX_PORT):
        return None
    return _new_service_port(*fields, target, node_port)


def service(document: dict[Any, Any]) -> Service | None:
    """The Service `document` (a member's, of kind Service) defines when it has the common shape
    and no problem; None when `manifests` must read it in full."""
    if document.get("apiVersion") != SERVICE_API_VERSION or not SERVICE_FIELDS.issuperset(document):
        return None
    spec = document.get("spec")
    if type(spec) is not dict or not _SERVICE_SPEC_KEYS.issuperset(spec):
        return None
    return _service_body(document, spec, spec.get("ipFamilies"), api=False)


def api_service(obj: dict[Any, Any]) -> Service | None:
    """The Service a member's API object `obj` is, as `objects` cut down and `manifests` read
    it, when it has the common shape, ports, no problem and is not an ExternalName; None when
    that path must read it."""
    spec = obj.get("spec")
    if type(spec) is not dict or spec.get("type") == "ExternalName":
        return None
    # `objects` keeps `ipFamilies` only when it holds something.
    return _service_body(obj, spec, spec.get("ipFamilies") or None, api=True)


def _service_body(
    document: dict[Any, Any], spec: dict[Any, Any], families: object, *, api: bool
) -> Service | None:
    found = _metadata(document, _service_name, api)
    if found is None:
        return None
    namespace, name, _ = found
    raw_ports = spec.get("ports")
    if type(raw_ports) is not list or not raw_ports:
        return None
    ports = []
    names = set()
    numbers = set()
    for raw in raw_ports:
        port = _service_port(raw, api)
        if port is None or port.name in names or (port.port, port.protocol) in numbers:
            return None
        if port.name:
            names.add(port.name)
        elif len(raw_ports) > 1:
            return None  # several ports, each needs a name
        numbers.add((port.port, port.protocol))
        ports.append(port)
    if families is None:
        families = []
    elif type(families) is not list or not all(
        type(family) is str and family in IP_FAMILIES for family in families
    ):
        return None
    return _new_service(namespace, _intern(name), tuple(ports), tuple(families))


def service_export(document: dict[Any, Any]) -> tuple[str, str] | None:
    """The (namespace, name) a plain ServiceExport `document` exports; None when `manifests`
    must read it in full."""
    if document.get("apiVersion") != EXPORT_API_VERSION or not EXPORT_FIELDS.issuperset(document):
        return None
    found = _metadata(document, _service_name)
    if found is None:
        return None
    namespace, name, _ = found
    return namespace, _intern(name)


def api_service_export(obj: dict[Any, Any]) -> tuple[str, str] | None:
    """The (namespace, name) a member's ServiceExport API object `obj` exports; None when
    `objects` and `manifests` must read it."""
    found = _metadata(obj, _service_name, api=True)
    if found is None:
        return None
    namespace, name, _ = found
    return namespace, _intern(name)
