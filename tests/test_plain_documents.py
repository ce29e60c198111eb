"""The common-shape readers (`documents/plain.py`) against the field-by-field reader.

For any document, valid or not, reading a member's files with the plain readers on must give
exactly what reading with them off gives: the same model objects, or the same problems (file,
object, field and wording). And whenever a plain reader accepts a document, the full reader finds
no problem in it and builds an equal object: the plain readers may only be stricter.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmarks import manifests as generated
from benchmarks.fleet import Fleet, Shape
from xdsfleet.documents import manifests, plain
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.fleet import Endpoint, EndpointPort, EndpointSlice, Service, ServicePort
from xdsfleet.model.frozen import builder

MEMBER = manifests.Place.MEMBER

# --- Documents: well formed, then 0-3 random mistakes -----------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70_000) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
# Values close to right, which is where a reader that is too lenient would show.
_NEAR: tuple[object, ...] = (
    None,
    "",
    0,
    1,
    True,
    False,
    65535,
    65536,
    -1,
    80,
    "80",
    "http",
    "HTTP",
    "a" * 64,
    "x.y",
    "-a",
    "1abc",
    "TCP",
    "tcp",
    "IPv4",
    "IPv6",
    "FQDN",
    "10.0.0.1",
    "1.2.3.04",
    "256.0.0.1",
    "::1",
    "*.example",
    "a.example",
    "1.2.3.4/32",
    [],
    {},
    ["10.0.0.1"],
    {"a": 1},
    ["10.0.0.1"] * 101,
)
_value = st.sampled_from(_NEAR) | _json
# And per field, the values just past its bounds.
_NEAR_BY_KEY: dict[object, tuple[object, ...]] = {
    "port": (0, 65536, True, "80", 1.5),
    "nodePort": (0, 65536, False, "30000"),
    "targetPort": (0, 65536, True, "HTTP", "p" * 16, "123", "-a"),
    "addresses": (["10.0.0.1"] * 101, [], [5], ["10.0.0.1"] * 100),
    "namespace": ("", "Shop", 0, False, "n" * 64, []),
    "name": ("", "Web", "-a", "a" * 254, "n" * 64, 5),
    "protocol": ("tcp", "", "HTTP", 6),
    "addressType": ("ipv4", "", "IPv5"),
    "ready": (None, "true", 1, 0),
    "serving": (None, "true", 1, 0),
    "terminating": (None, "false", 1, 0),
    "ipFamilies": (["IPv4", "IPv4"], ["ipv6"], "IPv4", []),
    "ports": ([], None, {}),
    "endpoints": ([], None, {}),
    plain.SERVICE_NAME_LABEL: ("", 5),
}
_key = st.sampled_from(["extra", "name", "port", "ready", "zone", "uid", "labels", "targetPort"])

_NAME = st.sampled_from(["web", "web-1", "a.b", "w" * 63, "a1"])
_LABEL = st.sampled_from(["web", "api", "w-1", "z" * 63])
_PORT_NAME = st.sampled_from(["http", "grpc", "h-2", "p" * 15])


def _some(**fields: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    """A map of `fields`, each present or not."""
    return st.fixed_dictionaries({}, optional=fields)


_ADDRESSES = {
    "IPv4": st.sampled_from(["10.0.0.1", "192.168.1.255", "0.0.0.0", "8.8.8.8"]),
    "IPv6": st.sampled_from(["::1", "2001:db8::1", "fe80::1%eth0", "::ffff:1.2.3.4"]),
    "FQDN": st.sampled_from(["a.example", "web", "x-1.y"]),
}


def _named_uniquely(ports: list[dict[str, Any]]) -> bool:
    names = [p.get("name", "") for p in ports]
    return len(set(names)) == len(names)


@st.composite
def _valid_slice(draw: st.DrawFn) -> dict[str, Any]:
    address_type = draw(st.sampled_from(["IPv4", "IPv4", "IPv6", "FQDN"]))
    ports = draw(
        st.lists(
            st.fixed_dictionaries(
                {"port": st.integers(1, 65535)},
                optional={
                    "name": _PORT_NAME | st.just(""),
                    "protocol": st.sampled_from(plain.PROTOCOLS),
                    "appProtocol": st.sampled_from(["h2c", "kubernetes.io/ws"]),
                },
            ),
            max_size=3,
        ).filter(_named_uniquely)
    )
    endpoint = st.fixed_dictionaries(
        {"addresses": st.lists(_ADDRESSES[address_type], min_size=1, max_size=3)},
        optional={
            "conditions": _some(
                ready=st.booleans(), serving=st.booleans(), terminating=st.booleans()
            ),
            "zone": st.sampled_from(["zone-a", ""]),
            "nodeName": st.just("node-1"),
            "targetRef": _some(kind=st.just("Pod"), namespace=_LABEL, name=_NAME | st.just("")),
        },
    )
    return {
        "apiVersion": plain.SLICE_API_VERSION,
        "kind": "EndpointSlice",
        "metadata": draw(_metadata(_NAME, labels={plain.SERVICE_NAME_LABEL: draw(_LABEL)})),
        "addressType": address_type,
        **draw(_some(ports=st.just(ports))),
        "endpoints": draw(st.lists(endpoint, max_size=3)),
    }


def _metadata(
    name: st.SearchStrategy[str], labels: dict[str, str] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Metadata named by `name`, carrying `labels` (always) and perhaps an app label."""
    fixed: dict[str, st.SearchStrategy[Any]] = {"name": name}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "namespace": _LABEL | st.just(""),
        "annotations": st.just({"note": "x"}),
        "uid": st.just("u-1"),
    }
    extra: st.SearchStrategy[dict[str, str]] = st.just({"app": "web"}) | st.just({})
    if labels:
        fixed["labels"] = extra.map(lambda more: {**more, **labels})
    else:
        optional["labels"] = extra
    return st.fixed_dictionaries(fixed, optional=optional)


@st.composite
def _valid_service(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 3))
    optional: dict[str, st.SearchStrategy[object]] = {
        "protocol": st.sampled_from(plain.PROTOCOLS),
        "appProtocol": st.just("h2c"),
        "targetPort": st.integers(1, 65535) | _PORT_NAME | st.just(""),
        "nodePort": st.integers(30000, 32767),
    }
    # One port may go unnamed; several need names, each its own.
    ports = [
        draw(
            st.fixed_dictionaries(
                {"port": st.just(80 + i), "name": st.just(f"p{i}")}, optional=optional
            )
        )
        if count > 1
        else draw(
            st.fixed_dictionaries({"port": st.just(80)}, optional={"name": _PORT_NAME, **optional})
        )
        for i in range(count)
    ]
    families = draw(_some(ipFamilies=st.lists(st.sampled_from(plain.IP_FAMILIES), max_size=2)))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": draw(_metadata(st.sampled_from(["web", "api", "w-1", "z" * 63]))),
        "spec": {"ports": ports, **families},
    }


def _paths(node: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


@st.composite
def _mistaken(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid document with 0-3 random changes: a value replaced, a key or item dropped, an
    unknown key or an item added."""
    # Copies: `st.just` and `_NEAR` hand out the same objects every time.
    document = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(document) if p and p != ("kind",)]
        if not paths:
            break
        *where, last = draw(st.sampled_from(paths))
        parent: Any = document
        for step in where:
            parent = parent[step]
        target = parent[last]
        match draw(st.sampled_from(["set", "drop", "add"])):
            case "set":
                near = _NEAR_BY_KEY.get(last, ())
                parent[last] = copy.deepcopy(
                    draw(st.sampled_from(near) | _value if near else _value)
                )
            case "drop":
                del parent[last]
            case "add" if isinstance(target, dict):
                target[draw(_key)] = copy.deepcopy(draw(_value))
            case "add" if isinstance(target, list):
                target.append(copy.deepcopy(draw(_value)))
            case _:
                parent[last] = copy.deepcopy(draw(_value))
    return document


_READERS: dict[str, Callable[[dict[str, Any]], object]] = {
    "EndpointSlice": plain.endpoint_slice,
    "Service": plain.service,
    "ServiceExport": plain.service_export,
}
endpoint_slices = _mistaken(_valid_slice())
exports = _mistaken(
    st.fixed_dictionaries(
        {
            "apiVersion": st.just(plain.EXPORT_API_VERSION),
            "kind": st.just("ServiceExport"),
            "metadata": _metadata(st.sampled_from(["web", "api", "w-1", "z" * 63])),
        }
    )
)
services = _mistaken(_valid_service())

# --- Reading both ways ------------------------------------------------------------------------


@contextmanager
def _full_reader_only() -> Iterator[None]:
    with mock.patch.object(manifests, "_plain", return_value=None):
        yield


def _outcome(documents: list[Any]) -> object:
    try:
        return manifests.parse_documents(copy.deepcopy(documents), "m/objects.yaml", MEMBER)
    except InvalidInput as error:
        return error.problems


def _check(document: dict[str, Any]) -> None:
    reader = _READERS[document["kind"]]
    fast = reader(copy.deepcopy(document))
    with _full_reader_only():
        full = _outcome([document])
    if fast is not None:
        # Accepted by the plain reader: the full one finds nothing wrong and builds the same.
        assert isinstance(full, manifests.FileContents), full
        assert (full.services or full.endpoint_slices or full.exports) == (fast,)
    # Either way, a file of it (between two other documents) reads the same both ways.
    neighbours = [document, {"kind": "Node"}, document]
    assert _outcome(neighbours) == _outcome_full(neighbours)
    assert _outcome([document]) == full


def _outcome_full(documents: list[Any]) -> object:
    with _full_reader_only():
        return _outcome(documents)


_SLOW = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SLOW
@given(endpoint_slices)
def test_an_endpoint_slice_reads_the_same_with_the_plain_reader_as_without(doc: Any) -> None:
    _check(doc)


@_SLOW
@given(exports)
def test_a_service_export_reads_the_same_with_the_plain_reader_as_without(doc: Any) -> None:
    _check(doc)


@_SLOW
@given(services)
def test_a_service_reads_the_same_with_the_plain_reader_as_without(doc: Any) -> None:
    _check(doc)


def test_the_plain_readers_take_the_common_shape() -> None:
    # Not vacuous: the well-formed documents of a generated fleet all go the fast way, and the
    # kube projection's shape (conditions, nodeName, targetRef) too.
    docs = generated.member_docs(Fleet(Shape(1, 20, 60)), 0)
    slices = [d for d in docs if d["kind"] == "EndpointSlice"]
    assert slices
    assert all(plain.endpoint_slice(d) is not None for d in slices)
    assert all(plain.service(d) is not None for d in docs if d["kind"] == "Service")
    assert all(plain.service_export(d) is not None for d in docs if d["kind"] == "ServiceExport")
    kube_slice = {
        "apiVersion": plain.SLICE_API_VERSION,
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-x1",
            "namespace": "shop",
            "labels": {plain.SERVICE_NAME_LABEL: "web"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "zone": "zone-a",
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1"},
            }
        ],
    }
    found = plain.endpoint_slice(kube_slice)
    assert found is not None
    assert found.endpoints[0].target == "shop/web-1"
    _check(kube_slice)


@settings(max_examples=500)
@given(
    st.lists(
        st.sampled_from(
            ["0", "1", "9", "00", "01", "10", "255", "256", "300", "", " ", "+1", "٣", "/8"]
        ),
        min_size=1,
        max_size=5,
    ).map(".".join)
    | st.text(alphabet="0123456789.:/ abcdef%", max_size=16)
)
@example("1.2.3.4")
@example("1.2.3.04")
def test_ipv4_by_set_lookups_is_what_ipaddress_says(address: str) -> None:
    try:
        expected = ipaddress.ip_address(address).version == 4
    except ValueError:
        expected = False
    assert plain._ipv4(address) == expected
    assert plain.valid_address(address, "IPv4") == expected


def test_a_builder_builds_what_the_class_builds() -> None:
    values: dict[type[Any], tuple[object, ...]] = {
        Endpoint: (("10.0.0.1",), True, False, True, "zone-a", None, "shop/web-1"),
        EndpointPort: ("http", 8080, "TCP", None),
        ServicePort: ("http", 80, "UDP", "h2c", "http", 30000),
        Service: ("shop", "web", (ServicePort("http", 80),), ("IPv4",)),
        EndpointSlice: ("shop", "web-1", "web", (), (), "IPv6"),
    }
    for cls, fields in values.items():
        built = builder(cls)(*fields)
        assert type(built) is cls
        assert built == cls(*fields)
        assert dataclasses.astuple(built) == dataclasses.astuple(cls(*fields))
        assert hash(built) == hash(cls(*fields))
        assert builder(cls) is builder(cls)


_FULL_SLICE = {
    "apiVersion": plain.SLICE_API_VERSION,
    "kind": "EndpointSlice",
    "metadata": {
        "name": "web-x1",
        "namespace": "shop",
        "labels": {plain.SERVICE_NAME_LABEL: "web", "app": "web"},
        "annotations": {"note": "x"},
    },
    "addressType": "IPv4",
    "ports": [
        {"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "h2c"},
        {"name": "grpc", "port": 9090},
    ],
    "endpoints": [
        {
            "addresses": ["10.0.0.1", "10.0.0.2"],
            "conditions": {"ready": True, "serving": False, "terminating": True},
            "zone": "zone-a",
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1"},
        },
        {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
    ],
}
_FULL_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {
        "ports": [
            {
                "name": "http",
                "port": 80,
                "protocol": "TCP",
                "appProtocol": "h2c",
                "targetPort": 8080,
            },
            {"name": "grpc", "port": 90, "targetPort": "grpc", "nodePort": 30090},
        ],
        "ipFamilies": ["IPv4", "IPv6"],
    },
}


def test_every_single_mistake_in_a_full_document_reads_the_same() -> None:
    # Exhaustive where the random test is thin: each field of a document that uses every field,
    # set to each value near its bounds (and to the general odd values), dropped, or given an
    # unknown neighbour.
    checked = 0
    export = {
        "apiVersion": plain.EXPORT_API_VERSION,
        "kind": "ServiceExport",
        "metadata": {"name": "web"},
    }
    for original in (_FULL_SLICE, _FULL_SERVICE, export):
        _check(copy.deepcopy(original))
        for path in [p for p in _paths(original) if p and p != ("kind",)]:
            *where, last = path
            for change in (*_NEAR_BY_KEY.get(last, ()), *_NEAR, "drop", "unknown"):
                document = copy.deepcopy(original)
                parent: Any = document
                for step in where:
                    parent = parent[step]
                if change == "drop":
                    del parent[last]
                elif change == "unknown" and isinstance(parent[last], dict):
                    parent[last]["extra"] = 1
                else:
                    parent[last] = copy.deepcopy(change)
                _check(document)
                checked += 1
    assert checked > 1_000
