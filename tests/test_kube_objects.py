"""A member's API objects read straight off the object (`documents/plain.py` `api_*`) against
the long way (`sources/kube/objects.py`: cut down to what the model reads, then
`manifests.parse_documents`).

For any object, valid or not, `parse_object` gives what the long way gives: the same model
object, None for one left out, or the same problems; and whenever a direct reader accepts an
object, the long way builds an equal one. The objects are those of test_plain_documents.py (well
formed, then 0-3 random mistakes) dressed as an API server sends them: no apiVersion or kind in a
list's items, and fields the model does not read (uid, managedFields, an endpoint's hints, a
Service's clusterIP, status).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_plain_documents import _mistaken, _valid_service, _valid_slice, _value, exports

from benchmarks import manifests as generated
from benchmarks.fleet import Fleet, Shape
from xdsfleet.documents import plain
from xdsfleet.model.errors import InvalidInput
from xdsfleet.sources.kube import objects, resources
from xdsfleet.sources.kube.resources import ApiResource

ORIGIN = "member east"
_RESOURCES = {
    "Service": resources.SERVICES,
    "EndpointSlice": resources.ENDPOINT_SLICES,
    "ServiceExport": resources.SERVICE_EXPORTS,
}
_DIRECT: dict[str, Callable[[dict[str, Any]], object]] = {
    "Service": plain.api_service,
    "EndpointSlice": plain.api_endpoint_slice,
    "ServiceExport": plain.api_service_export,
}

# What an API server adds that the model does not read, by where it goes.
_METADATA = {
    "uid": "0b7f6c2e",
    "resourceVersion": "12345",
    "generation": 3,
    "creationTimestamp": "2025-01-01T00:00:00Z",
    "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}],
    "ownerReferences": [{"kind": "Service", "name": "web", "uid": "1"}],
}
_ENDPOINT = {"hints": {"forZones": [{"name": "zone-a"}]}, "hostname": "web-0"}
_TARGET = {"uid": "pod-uid", "apiVersion": "v1", "resourceVersion": "7"}
_SPEC = {"clusterIP": "10.96.0.10", "selector": {"app": "web"}, "type": "ClusterIP"}
_STATUS: dict[str, object] = {"loadBalancer": {}}


@st.composite
def _as_listed(draw: st.DrawFn, document: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """`document` dressed (or not) as an API server's list item."""
    obj = copy.deepcopy(draw(document))
    kind = obj["kind"]
    if draw(st.booleans()):
        obj.pop("apiVersion", None)
        obj.pop("kind", None)
    if draw(st.booleans()) and isinstance(obj.get("metadata"), dict):
        obj["metadata"].update(copy.deepcopy(_METADATA))
    if draw(st.booleans()):
        obj["status"] = copy.deepcopy(_STATUS)
    if draw(st.booleans()) and isinstance(obj.get("spec"), dict):
        obj["spec"].update(copy.deepcopy(_SPEC))
    for endpoint in obj.get("endpoints") or [] if isinstance(obj.get("endpoints"), list) else []:
        if isinstance(endpoint, dict) and draw(st.booleans()):
            endpoint.update(copy.deepcopy(_ENDPOINT))
            if isinstance(endpoint.get("targetRef"), dict):
                endpoint["targetRef"].update(_TARGET)
    if draw(st.booleans()):
        # A value the cut-down object reads as absent.
        *where, last = draw(st.sampled_from(list(_nulls(obj)) or [("status",)]))
        parent: Any = obj
        for step in where:
            parent = parent[step]
        parent[last] = draw(st.sampled_from([None, None, [], {}, "", 0]) | _value)
    obj["__kind"] = kind  # for the test only; removed before reading
    return obj


def _nulls(node: object, path: tuple[object, ...] = ()) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _nulls(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*path, i)
            yield from _nulls(value, (*path, i))


def _outcome(read: Callable[[], object]) -> object:
    try:
        return ("read", read())
    except InvalidInput as error:
        return ("problems", error.problems)
    except Exception as error:  # what the long way does with an object it cannot cut down
        return ("raised", type(error))


def _check(obj: dict[str, Any]) -> None:
    kind = obj.pop("__kind")
    resource: ApiResource = _RESOURCES[kind]
    direct = _DIRECT[kind](copy.deepcopy(obj))
    long = _outcome(lambda: objects._parsed(resource, copy.deepcopy(obj), ORIGIN))
    if direct is not None:
        assert long == ("read", direct)
    assert _outcome(lambda: objects.parse_object(resource, copy.deepcopy(obj), ORIGIN)) == long


_SLOW = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SLOW
@given(_as_listed(_mistaken(_valid_slice())))
def test_an_endpoint_slice_object_reads_the_same_directly_as_the_long_way(obj: Any) -> None:
    _check(obj)


@_SLOW
@given(_as_listed(_mistaken(_valid_service())))
def test_a_service_object_reads_the_same_directly_as_the_long_way(obj: Any) -> None:
    _check(obj)


@_SLOW
@given(_as_listed(exports))
def test_a_service_export_object_reads_the_same_directly_as_the_long_way(obj: Any) -> None:
    _check(obj)


def test_listed_objects_of_the_common_shape_are_read_directly() -> None:
    # Not vacuous: a generated fleet's objects, as an API server lists them, all go the direct
    # way; and those the long way leaves out are left to it.
    for doc in generated.member_docs(Fleet(Shape(1, 20, 60)), 0):
        kind = doc.pop("kind")
        doc.pop("apiVersion")
        doc["metadata"].update(_METADATA)
        read = _DIRECT[kind](doc)
        assert read is not None
        assert read == objects._parsed(_RESOURCES[kind], doc, ORIGIN)
    external = {"metadata": {"name": "db"}, "spec": {"type": "ExternalName", "ports": [80]}}
    labels = {plain.SERVICE_NAME_LABEL: "web", plain.IMPORTED_LABEL: "east"}
    imported = {
        "metadata": {"name": "web-x", "labels": labels},
        "addressType": "IPv4",
        "endpoints": None,
    }
    assert plain.api_service(external) is None
    assert objects.parse_object(resources.SERVICES, external, ORIGIN) is None
    assert plain.api_endpoint_slice(imported) is None
    assert objects.parse_object(resources.ENDPOINT_SLICES, imported, ORIGIN) is None
    del labels[plain.IMPORTED_LABEL]
    assert plain.api_endpoint_slice(imported) == objects._parsed(
        resources.ENDPOINT_SLICES, imported, ORIGIN
    )
