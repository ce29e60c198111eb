"""Kubernetes API objects into model objects, through the very parser that reads files.

An object from an API server went through that server's validation, and carries much the model
does not read (managedFields, status, a Service's clusterIP and selector, an endpoint's
targetRef). Member objects are therefore cut down to the fields the model reads before parsing;
fleet-level objects (Gateway API, TrafficPolicy, the Fleet) keep their whole `spec`, so that a
field we do not support is reported, as in a file, instead of silently ignored. What is left
goes through `manifests.parse_documents`: both sources validate identically. A member's
Services, EndpointSlices and ServiceExports of the common shape (150,000 objects of a cold start
at E = 100,000) are first read straight off the object by `documents.plain`, which reads exactly
what the cut-down object would read as, or leaves the object to this path.

It must not do I/O or keep state: one JSON object in, one model object (or a reason) out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from xdsfleet.documents import plain
from xdsfleet.documents.certificates import rejected_problems
from xdsfleet.documents.gateway_api import TLS_SECRET_KEYS
from xdsfleet.documents.manifests import (
    FileContents,
    FleetSpec,
    Place,
    parse_documents,
)
from xdsfleet.documents.plain import IMPORTED_LABEL, SERVICE_NAME_LABEL
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.fleet import (
    EndpointSlice,
    Gateway,
    GRPCRoute,
    HTTPRoute,
    Namespace,
    Node,
    ReferenceGrant,
    Service,
    TLSSecret,
)
from xdsfleet.model.policy import TrafficPolicy
from xdsfleet.sources.kube import resources
from xdsfleet.sources.kube.resources import ApiResource

JsonObject = dict[str, Any]
# A ServiceExport is known by (namespace, name) only.
ModelObject = (
    Service
    | EndpointSlice
    | tuple[str, str]
    | Node
    | Gateway
    | HTTPRoute
    | GRPCRoute
    | TrafficPolicy
    | FleetSpec
    | ReferenceGrant
    | Namespace
    | TLSSecret
)


def key_of(obj: JsonObject) -> tuple[str, str]:
    """(namespace, name) of an API object; namespace "" for cluster-scoped ones."""
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _pick(source: Mapping[str, Any], *keys: str) -> JsonObject:
    """The given keys of `source` that hold a value (the API leaves empty ones out, or sends
    null)."""
    return {key: source[key] for key in keys if source.get(key) is not None}


def _metadata(obj: JsonObject, *, labels: bool = False) -> JsonObject:
    return _pick(obj.get("metadata") or {}, "name", "namespace", *(("labels",) if labels else ()))


def _service(obj: JsonObject) -> JsonObject | None:
    ports = (obj.get("spec") or {}).get("ports") or []
    if not ports or (obj.get("spec") or {}).get("type") == "ExternalName":
        # ExternalName Services (a DNS name, no endpoints, even with ports) and port-less
        # headless ones: nothing a proxy could send to.
        return None
    fields = ("name", "port", "protocol", "appProtocol", "targetPort", "nodePort")
    spec = {"ports": [_pick(p, *fields) for p in ports]}
    if families := (obj.get("spec") or {}).get("ipFamilies"):
        spec["ipFamilies"] = families
    return {"metadata": _metadata(obj), "spec": spec}


def _endpoint(endpoint: JsonObject) -> JsonObject:
    picked = _pick(endpoint, "addresses", "zone", "nodeName")
    conditions = _pick(endpoint.get("conditions") or {}, "ready", "serving", "terminating")
    if conditions:
        picked["conditions"] = conditions
    target = _pick(endpoint.get("targetRef") or {}, "kind", "namespace", "name")
    if target.get("name"):
        picked["targetRef"] = target
    return picked


def _endpoint_slice(obj: JsonObject) -> JsonObject | None:
    metadata = _metadata(obj, labels=True)
    labels = metadata.get("labels") or {}
    if SERVICE_NAME_LABEL not in labels or IMPORTED_LABEL in labels:
        # A slice no Service owns (hand-made, mirrored for another purpose), or one an MCS
        # controller imported from another cluster: nothing of this member's to serve. Slices
        # of other controllers (`endpointslice.kubernetes.io/managed-by`) stay: a Service
        # without a selector has its endpoints managed by whoever runs them.
        return None
    metadata["labels"] = {SERVICE_NAME_LABEL: metadata["labels"][SERVICE_NAME_LABEL]}
    fields = ("name", "port", "protocol", "appProtocol")
    return {
        "metadata": metadata,
        "addressType": obj.get("addressType"),
        # A port without a number means "all ports": no Service port can be matched to it.
        "ports": [_pick(p, *fields) for p in obj.get("ports") or [] if p.get("port")],
        "endpoints": [_endpoint(e) for e in obj.get("endpoints") or []],
    }


def _service_export(obj: JsonObject) -> JsonObject:
    return {"metadata": _metadata(obj)}


def _node(obj: JsonObject) -> JsonObject:
    status = obj.get("status") or {}
    # Only readiness matters; the other conditions (and every heartbeat time) change often.
    conditions = [
        _pick(c, "type", "status")
        for c in status.get("conditions") or []
        if c.get("type") == "Ready"
    ]
    addresses = [_pick(a, "type", "address") for a in status.get("addresses") or []]
    return {
        "metadata": _metadata(obj, labels=True),
        "status": {"addresses": addresses, "conditions": conditions},
    }


def _namespace(obj: JsonObject) -> JsonObject:
    return {"metadata": _metadata(obj, labels=True)}


def _tls_secret(obj: JsonObject) -> JsonObject:
    # Other keys (cert-manager's additional output formats, say) are for other readers.
    data = {k: v for k, v in (obj.get("data") or {}).items() if k in TLS_SECRET_KEYS}
    return {"metadata": _metadata(obj), "type": obj.get("type"), "data": data}


def _with_spec(obj: JsonObject) -> JsonObject:
    return {"metadata": _metadata(obj), "spec": obj.get("spec")}


_PROJECTIONS: dict[ApiResource, Callable[[JsonObject], JsonObject | None]] = {
    resources.SERVICES: _service,
    resources.ENDPOINT_SLICES: _endpoint_slice,
    resources.SERVICE_EXPORTS: _service_export,
    resources.NODES: _node,
    resources.GATEWAYS: _with_spec,
    resources.HTTP_ROUTES: _with_spec,
    resources.GRPC_ROUTES: _with_spec,
    resources.TRAFFIC_POLICIES: _with_spec,
    resources.FLEETS: _with_spec,
    resources.REFERENCE_GRANTS: _with_spec,
    resources.NAMESPACES: _namespace,
    resources.TLS_SECRETS: _tls_secret,
}
_PLACES = {
    resources.SERVICES: Place.MEMBER,
    resources.ENDPOINT_SLICES: Place.MEMBER,
    resources.SERVICE_EXPORTS: Place.MEMBER,
    resources.NODES: Place.MEMBER,
    resources.FLEETS: Place.FLEET,
}
_PICKS: dict[ApiResource, Callable[[FileContents], tuple[Any, ...]]] = {
    resources.SERVICES: lambda c: c.services,
    resources.ENDPOINT_SLICES: lambda c: c.endpoint_slices,
    resources.SERVICE_EXPORTS: lambda c: c.exports,
    resources.NODES: lambda c: c.nodes,
    resources.GATEWAYS: lambda c: c.gateways,
    resources.HTTP_ROUTES: lambda c: c.http_routes,
    resources.GRPC_ROUTES: lambda c: c.grpc_routes,
    resources.TRAFFIC_POLICIES: lambda c: c.policies,
    resources.FLEETS: lambda c: (c.fleet,) if c.fleet else (),
    resources.REFERENCE_GRANTS: lambda c: c.reference_grants,
    resources.NAMESPACES: lambda c: c.namespaces,
    resources.TLS_SECRETS: lambda c: c.secrets,
}


# A member's objects of the common shape, read straight off the API object: what the
# projection above and `parse_documents` make of it, without the copy (`plain`). Keyed by kind,
# whose hash a string keeps, rather than by the resource, whose hash is made on every lookup
# (one per object); only the member kinds are here, and each is one resource's.
_DIRECT: dict[str, Callable[[JsonObject], ModelObject | None]] = {
    resources.SERVICES.kind: plain.api_service,
    resources.ENDPOINT_SLICES.kind: plain.api_endpoint_slice,
    resources.SERVICE_EXPORTS.kind: plain.api_service_export,
}


def parse_object(resource: ApiResource, obj: JsonObject, origin: str) -> ModelObject | None:
    """The model object for `obj`, or None for objects that have nothing to serve (a Service
    without ports, a slice no Service owns). Raises `InvalidInput` naming `origin` (such as
    `member zone-a`), the object and the field, exactly as for a file."""
    direct = _DIRECT.get(resource.kind)
    if direct is not None and (read := direct(obj)) is not None:
        return read
    return _parsed(resource, obj, origin)


def _parsed(resource: ApiResource, obj: JsonObject, origin: str) -> ModelObject | None:
    """`parse_object` the long way: the object cut down to what the model reads, then read by
    `parse_documents` as a file's document is."""
    projected = _PROJECTIONS[resource](obj)
    if projected is None:
        return None
    projected = {"apiVersion": resource.api_version, "kind": resource.kind, **projected}
    contents = parse_documents([projected], origin, _PLACES.get(resource, Place.ROUTES))
    picked = _PICKS[resource](contents)
    if not picked:
        return None  # another controller's Gateway
    [parsed] = picked
    if isinstance(parsed, TLSSecret) and (problems := rejected_problems(parsed, origin)):
        # Envoy would reject it (and with it every listener waiting for it): its last good
        # version keeps serving instead.
        raise InvalidInput(problems)
    found: ModelObject = parsed
    return found
