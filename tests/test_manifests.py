"""Fleet manifests: what a valid document becomes, and how each mistake is named."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from xdsfleet.documents.manifests import (
    SERVICE_NAME_FIELD,
    FileContents,
    FleetFiles,
    LoadedFleet,
    Place,
    assemble,
    origin_key,
    parse_file,
    reference_problems,
)
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.model.fleet import (
    BackendRef,
    Endpoint,
    EndpointMode,
    GatewayListener,
    ParentRef,
    PathMatch,
    PathMatchType,
    RouteMatch,
    ServicePort,
)

SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "shop", "namespace": "default"},
    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
}
SLICE: dict[str, Any] = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "shop-1", "labels": {"kubernetes.io/service-name": "shop"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080}],
    "endpoints": [{"addresses": ["10.0.0.1"], "zone": "eu-1a", "nodeName": "node-1"}],
}
EXPORT: dict[str, Any] = {
    "apiVersion": "multicluster.x-k8s.io/v1alpha1",
    "kind": "ServiceExport",
    "metadata": {"name": "shop"},
}
GATEWAY: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "demo", "namespace": "default"},
    "spec": {
        "gatewayClassName": "xdsfleet",
        "listeners": [{"name": "http", "port": 10080, "protocol": "HTTP"}],
    },
}
ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "shop", "namespace": "default"},
    "spec": {
        "parentRefs": [{"name": "demo"}],
        "hostnames": ["shop.example.com"],
        "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}],
    },
}
MEMBER: dict[str, Any] = {
    "name": "zone-a",
    "region": "eu",
    "zone": "eu-1a",
    "source": {"manifests": "members/zone-a"},
}
FLEET: dict[str, Any] = {
    "apiVersion": "xdsfleet.io/v1alpha1",
    "kind": "Fleet",
    "metadata": {"name": "demo"},
    "spec": {"members": [MEMBER]},
}

# Each base document, where it may appear, and the label problems give it.
BASES: dict[str, tuple[dict[str, Any], Place, str]] = {
    "service": (SERVICE, Place.MEMBER, "Service default/shop"),
    "slice": (SLICE, Place.MEMBER, "EndpointSlice default/shop-1"),
    "export": (EXPORT, Place.MEMBER, "ServiceExport default/shop"),
    "gateway": (GATEWAY, Place.ROUTES, "Gateway default/demo"),
    "route": (ROUTE, Place.ROUTES, "HTTPRoute default/shop"),
    "fleet": (FLEET, Place.FLEET, "Fleet demo"),
}
PLACES = {
    Place.FLEET: {"Fleet"},
    Place.MEMBER: {"Service", "EndpointSlice", "ServiceExport", "Node"},
    Place.ROUTES: {
        "Gateway",
        "HTTPRoute",
        "GRPCRoute",
        "Secret",
        "TrafficPolicy",
        "ReferenceGrant",
        "Namespace",
    },
}


class _Delete:
    """Marks a field to remove, in `edited`."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
FILE = "/fleet/file.yaml"


def edited(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of `document` with the field at `path` (as `spec.ports[0].port`) set to `value`,
    or removed when `value` is DELETE."""
    result = copy.deepcopy(document)
    steps: list[str | int] = [
        int(step[1:-1]) if step.startswith("[") else step
        for step in re.findall(r"[^.\[\]]+|\[\d+\]", path)
    ]
    parent: Any = result
    for step in steps[:-1]:
        parent = parent[step]
    if value is DELETE:
        del parent[steps[-1]]
    else:
        parent[steps[-1]] = value
    return result


def text_of(*documents: Mapping[str, Any]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def parse(*documents: Mapping[str, Any], place: Place = Place.MEMBER) -> FileContents:
    return parse_file(text_of(*documents), FILE, place, "/fleet")


def problems_of(text: str, place: Place) -> list[Problem]:
    with pytest.raises(InvalidInput) as raised:
        parse_file(text, FILE, place, "/fleet")
    return list(raised.value.problems)


# --- Valid documents -------------------------------------------------------------------------


def test_a_service_gets_the_default_namespace_and_protocol() -> None:
    document = edited(SERVICE, "metadata.namespace", DELETE)
    (service,) = parse(document).services
    assert (service.namespace, service.name) == ("default", "shop")
    assert service.ports == (ServicePort("http", 80, "TCP", None, 8080),)


def test_a_service_port_may_target_a_named_port() -> None:
    document = edited(SERVICE, "spec.ports[0].targetPort", "web")
    assert parse(document).services[0].ports[0].target_port == "web"


def test_an_endpoint_slice_keeps_its_service_ports_and_endpoints() -> None:
    (endpoint_slice,) = parse(SLICE).endpoint_slices
    assert endpoint_slice.service_name == "shop"
    assert endpoint_slice.address_type == "IPv4"
    assert [(p.name, p.port, p.protocol) for p in endpoint_slice.ports] == [("http", 8080, "TCP")]
    assert endpoint_slice.endpoints == (
        Endpoint(("10.0.0.1",), ready=True, serving=True, zone="eu-1a", node_name="node-1"),
    )


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({}, (True, True, False)),
        ({"ready": False}, (False, False, False)),
        ({"ready": False, "serving": True, "terminating": True}, (False, True, True)),
        ({"serving": False}, (True, False, False)),
    ],
)
def test_endpoint_conditions_follow_the_kubernetes_defaults(
    conditions: dict[str, bool], expected: tuple[bool, bool, bool]
) -> None:
    document = edited(SLICE, "endpoints[0].conditions", conditions)
    endpoint = parse(document).endpoint_slices[0].endpoints[0]
    assert (endpoint.ready, endpoint.serving, endpoint.terminating) == expected


def test_a_service_export_is_the_namespace_and_name_it_exports() -> None:
    assert parse(EXPORT).exports == (("default", "shop"),)


def test_a_gateway_keeps_its_class_and_listeners() -> None:
    document = edited(GATEWAY, "spec.listeners[0].hostname", "*.example.com")
    (gateway,) = parse(document, place=Place.ROUTES).gateways
    assert gateway.gateway_class == "xdsfleet"
    assert gateway.listeners == (GatewayListener("http", 10080, "HTTP", "*.example.com"),)


def test_an_http_route_defaults_namespaces_path_and_weight() -> None:
    document = edited(ROUTE, "metadata.namespace", "shop")
    (route,) = parse(document, place=Place.ROUTES).http_routes
    assert route.parent_refs == (ParentRef("shop", "demo"),)
    assert route.hostnames == ("shop.example.com",)
    (rule,) = route.rules
    assert rule.matches == (RouteMatch(PathMatch(PathMatchType.PATH_PREFIX, "/")),)
    assert rule.backend_refs == (BackendRef("shop", "shop", 80, weight=1, kind="Service"),)


def test_an_http_route_keeps_explicit_matches_and_service_imports() -> None:
    rule = {
        "matches": [{"path": {"type": "Exact", "value": "/cart"}}],
        "backendRefs": [
            {
                "group": "multicluster.x-k8s.io",
                "kind": "ServiceImport",
                "name": "shop",
                "namespace": "prod",
                "port": 80,
                "weight": 3,
            }
        ],
    }
    document = edited(ROUTE, "spec.rules", [rule])
    (parsed,) = parse(document, place=Place.ROUTES).http_routes[0].rules
    assert parsed.matches == (RouteMatch(PathMatch(PathMatchType.EXACT, "/cart")),)
    imported = BackendRef("shop", "prod", 80, 3, "ServiceImport", "multicluster.x-k8s.io")
    assert parsed.backend_refs == (imported,)


def test_a_fleet_joins_member_directories_to_the_base_directory() -> None:
    document = edited(FLEET, "spec.source", {"manifests": "./routes"})
    fleet = parse(document, place=Place.FLEET).fleet
    assert fleet is not None
    assert fleet.routes_dir == "/fleet/routes"
    (member,) = fleet.members
    assert member.manifests == "/fleet/members/zone-a"
    assert (member.weight, member.endpoint_mode) == (1, EndpointMode.POD)
    assert fleet.export_all is False


def test_a_fleet_member_may_be_drained() -> None:
    fleet = parse(edited(FLEET, "spec.members[0].drain", True), place=Place.FLEET).fleet
    assert fleet is not None
    assert [m.drain for m in fleet.members] == [True]
    assert parse(FLEET, place=Place.FLEET).fleet.members[0].drain is False  # type: ignore[union-attr]


def test_a_fleet_file_may_hold_gateways_and_routes_after_the_fleet() -> None:
    contents = parse(FLEET, GATEWAY, ROUTE, place=Place.FLEET)
    assert [g.name for g in contents.gateways] == ["demo"]
    assert [r.name for r in contents.http_routes] == ["shop"]


def test_harmless_metadata_is_accepted() -> None:
    metadata = {
        "name": "shop",
        "namespace": "default",
        "labels": {"app": "shop"},
        "annotations": {"note": "hello"},
        "uid": "0d6c6e8e",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2025-01-01T00:00:00Z",
    }
    assert parse(edited(SERVICE, "metadata", metadata)).services


def test_empty_documents_are_skipped() -> None:
    text = "---\n" + text_of(SERVICE) + "---\n"
    assert len(parse_file(text, FILE, Place.MEMBER).services) == 1


DOCUMENTED = re.findall(
    r"```yaml\n(.*?)```", (Path(__file__).parent.parent / "docs" / "fleet.md").read_text(), re.S
)


@pytest.mark.parametrize("example", DOCUMENTED, ids=lambda text: text.split("kind: ")[1].split()[0])
def test_every_example_in_the_format_documentation_parses(example: str) -> None:
    kinds = re.findall(r"^kind: (\w+)", example, re.MULTILINE)
    place = next(p for p in (Place.FLEET, Place.MEMBER, Place.ROUTES) if kinds[0] in PLACES[p])
    parse_file(example, "docs/fleet.md", place, "/fleet")


# --- Bad documents: each names file, object and field ----------------------------------------


class Case(NamedTuple):
    base: str
    path: str
    value: object
    field: str
    message: str
    obj: str | None = None  # when the edit changes the object's label


CASES = [
    Case("service", "spec.ports[0].prot", "TCP", "spec.ports[0].prot", "unknown field"),
    Case("service", "metadata.owner", "me", "metadata.owner", "unknown field"),
    Case("service", "status", {}, "status", "unknown field"),
    Case("service", "spec.ports[0].port", "80", "spec.ports[0].port", "expected an integer"),
    Case("service", "spec.ports[0].port", True, "spec.ports[0].port", "got a boolean"),
    Case("service", "spec.ports[0].port", 0, "spec.ports[0].port", "between 1 and 65535"),
    Case("service", "spec.ports[0].port", 65536, "spec.ports[0].port", "between 1 and 65535"),
    Case("service", "spec.ports[0].targetPort", 0, "spec.ports[0].targetPort", "between 1"),
    Case("service", "spec.ports[0].targetPort", "80", "spec.ports[0].targetPort", "port name"),
    Case("service", "spec.ports[0].protocol", "HTTP", "spec.ports[0].protocol", "one of TCP"),
    Case("service", "spec.ports", DELETE, "spec.ports", "missing required field"),
    Case("service", "spec.ports", [], "spec.ports", "must not be empty"),
    Case("service", "spec", DELETE, "spec", "missing required field"),
    Case("service", "spec", [], "spec", "expected a map, got a list"),
    Case("service", "metadata.name", "Shop", "metadata.name", "DNS-1035", "Service default/Shop"),
    Case(
        "service", "metadata.namespace", "a_b", "metadata.namespace", "DNS-1123", "Service a_b/shop"
    ),
    Case("service", "metadata.name", DELETE, "metadata.name", "missing", "Service (document 1)"),
    Case("service", "metadata.labels", {"app": 1}, 'metadata.labels["app"]', "expected a string"),
    Case("service", "apiVersion", DELETE, "apiVersion", "missing required field"),
    Case("service", "apiVersion", "v2", "apiVersion", "Service needs 'v1'"),
    Case("service", "kind", DELETE, "kind", "missing required field", "object default/shop"),
    Case("service", "kind", "Servise", "kind", "unknown kind", "Servise default/shop"),
    Case(
        "service",
        "spec.ports",
        [{"name": "http", "port": 80}, {"name": "http", "port": 81}],
        "spec.ports[1].name",
        "duplicate port name",
    ),
    Case(
        "service",
        "spec.ports",
        [{"name": "http", "port": 80}, {"port": 81}],
        "spec.ports[1].name",
        "required when a Service has several ports",
    ),
    Case("slice", "metadata.labels", DELETE, SERVICE_NAME_FIELD, "missing required label"),
    Case("slice", "addressType", DELETE, "addressType", "missing required field"),
    Case("slice", "addressType", "IPv5", "addressType", "one of IPv4, IPv6, FQDN"),
    Case("slice", "endpoints", DELETE, "endpoints", "missing required field"),
    Case("slice", "endpoints[0].addresses", [], "endpoints[0].addresses", "must not be empty"),
    Case("slice", "endpoints[0].addresses[0]", "10.0.0.256", "endpoints[0].addresses[0]", "IPv4"),
    Case("slice", "endpoints[0].addresses[0]", "::1", "endpoints[0].addresses[0]", "IPv4"),
    Case("slice", "endpoints[0].hostname", "a", "endpoints[0].hostname", "unknown field"),
    Case(
        "slice",
        "endpoints[0].conditions",
        {"redy": True},
        "endpoints[0].conditions.redy",
        "unknown",
    ),
    Case(
        "slice",
        "endpoints[0].conditions",
        {"ready": "yes"},
        "endpoints[0].conditions.ready",
        "expected a boolean",
    ),
    Case("slice", "ports[0].port", 70000, "ports[0].port", "between 1 and 65535"),
    Case("export", "spec", {}, "spec", "unknown field"),
    Case("gateway", "spec.gatewayClassName", DELETE, "spec.gatewayClassName", "missing"),
    Case("gateway", "spec.listeners", [], "spec.listeners", "must not be empty"),
    Case(
        "gateway", "spec.listeners[0].protocol", "SCTP", "spec.listeners[0].protocol", "HTTP, HTTPS"
    ),
    Case("gateway", "spec.listeners[0].port", 0, "spec.listeners[0].port", "between 1 and 65535"),
    Case("gateway", "spec.listeners[0].hostname", "A_b", "spec.listeners[0].hostname", "hostname"),
    Case("route", "spec.hostnames", ["*.Shop"], "spec.hostnames[0]", "is not a hostname"),
    Case(
        "route", "spec.parentRefs[0].kind", "Service", "spec.parentRefs[0].kind", "only 'Gateway'"
    ),
    Case("route", "spec.rules[0].sessionPersistence", {}, "spec.rules[0].sessionPersistence", "un"),
    Case(
        "route",
        "spec.rules[0].backendRefs[0].port",
        DELETE,
        "spec.rules[0].backendRefs[0].port",
        "missing required field",
    ),
    Case(
        "route",
        "spec.rules[0].backendRefs[0].kind",
        "not a kind",
        "spec.rules[0].backendRefs[0].kind",
        "'not a kind' is not a kind name",
    ),
    Case(
        "route",
        "spec.rules[0].backendRefs[0].weight",
        -1,
        "spec.rules[0].backendRefs[0].weight",
        "between 0 and",
    ),
    Case(
        "route",
        "spec.rules[0].matches",
        [{"path": {"type": "Regex", "value": "/.*"}}],
        "spec.rules[0].matches[0].path.type",
        "must be one of Exact, PathPrefix, RegularExpression",
    ),
    Case(
        "route",
        "spec.rules[0].matches",
        [{"path": {"value": "shop"}}],
        "spec.rules[0].matches[0].path.value",
        "must start with '/'",
    ),
    Case(
        "route",
        "spec.rules[0].matches",
        [{"headers": [{"type": "Prefix", "name": "x-canary", "value": "1"}]}],
        "spec.rules[0].matches[0].headers[0].type",
        "must be one of Exact, RegularExpression",
    ),
    Case("fleet", "spec.members[0].name", "Zone_A", "spec.members[0].name", "DNS-1123 label"),
    Case("fleet", "spec.members", [MEMBER, MEMBER], "spec.members[1].name", "duplicate member"),
    Case("fleet", "spec.members[0].weight", -1, "spec.members[0].weight", "between 0 and"),
    Case("fleet", "spec.members[0].endpointMode", "host", "spec.members[0].endpointMode", "pod"),
    Case("fleet", "spec.members[0].region", DELETE, "spec.members[0].region", "missing"),
    Case("fleet", "spec.members[0].source", DELETE, "spec.members[0].source", "missing"),
    Case("fleet", "spec.members", DELETE, "spec.members", "missing required field"),
    Case("fleet", "spec.exportAll", "yes", "spec.exportAll", "expected a boolean"),
    Case("fleet", "spec.ipFamily", "IPv5", "spec.ipFamily", "must be one of IPv4, IPv6"),
    Case("fleet", "spec.members[0].drain", "yes", "spec.members[0].drain", "expected a boolean"),
    Case("fleet", "spec.members[0].wieght", 2, "spec.members[0].wieght", "did you mean weight?"),
    Case(
        "service",
        "kind",
        "Servise",
        "kind",
        "unknown kind 'Servise'; did you mean Service?",
        obj="Servise default/shop",
    ),
    Case(
        "fleet",
        "spec.members[0].source.kubeconfig",
        "~/.kube/config",
        "spec.members[0].source",
        "needs exactly one of manifests or kubeconfig or secret; got 2",
    ),
    Case(
        "fleet",
        "spec.members[0].source.context",
        "east",
        "spec.members[0].source.context",
        "only with kubeconfig",
    ),
    Case(
        "fleet",
        "spec.source",
        {"manifests": "members/zone-a"},
        "spec.members[0].source.manifests",
        "same directory as spec.source",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.base}:{c.path}={c.value!r}")
def test_a_bad_document_is_reported_with_file_object_and_field(case: Case) -> None:
    document, place, obj = BASES[case.base]
    problems = problems_of(text_of(edited(document, case.path, case.value)), place)
    assert [(p.file, p.obj, p.field) for p in problems] == [(FILE, case.obj or obj, case.field)]
    assert case.message in problems[0].message


def test_yaml_that_does_not_parse_is_reported_on_the_file_with_its_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: shop\nspec: {}\n"
    (problem,) = problems_of(text, Place.MEMBER)
    assert (problem.file, problem.obj, problem.field) == (FILE, "", "")
    assert re.search(r"line \d+", problem.message)


def test_a_key_given_twice_is_reported_with_its_line() -> None:
    text = "apiVersion: v1\nkind: Service\napiVersion: v1\n"
    (problem,) = problems_of(text, Place.MEMBER)
    assert "line 3" in problem.message
    assert "duplicate key 'apiVersion'" in problem.message


def test_a_document_that_is_not_a_mapping_is_reported_by_position() -> None:
    text = text_of(SERVICE) + "---\n- just a list\n"
    (problem,) = problems_of(text, Place.MEMBER)
    assert (problem.obj, problem.field) == ("document 2", "")


def test_a_kind_out_of_place_is_reported() -> None:
    (problem,) = problems_of(text_of(GATEWAY), Place.MEMBER)
    assert (problem.obj, problem.field) == ("Gateway default/demo", "kind")
    assert "does not belong in a member directory" in problem.message


def test_a_fleet_file_without_a_fleet_is_reported() -> None:
    (problem,) = problems_of(text_of(GATEWAY), Place.FLEET)
    assert (problem.file, problem.obj) == (FILE, "")
    assert "no Fleet document" in problem.message


def test_a_second_fleet_in_a_fleet_file_is_reported() -> None:
    second = edited(FLEET, "metadata.name", "other")
    (problem,) = problems_of(text_of(FLEET, second), Place.FLEET)
    assert (problem.obj, problem.field) == ("Fleet other", "kind")


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    bad_service = edited(SERVICE, "spec.ports[0].port", 0)
    bad_slice = edited(SLICE, "addressType", DELETE)
    problems = problems_of(text_of(bad_service, bad_slice), Place.MEMBER)
    assert [(p.obj, p.field) for p in problems] == [
        ("Service default/shop", "spec.ports[0].port"),
        ("EndpointSlice default/shop-1", "addressType"),
    ]


# --- Several files ---------------------------------------------------------------------------


def fleet_files(
    members: Mapping[str, Mapping[str, FileContents]],
    fleet_level: Mapping[str, FileContents] | None = None,
    *,
    export_all: bool = False,
) -> FleetFiles:
    names = list(members) or ["zone-a"]
    fleet = edited(FLEET, "spec.members", [dict(MEMBER, name=name) for name in names])
    fleet["spec"]["exportAll"] = export_all
    contents = parse(fleet, place=Place.FLEET)
    assert contents.fleet is not None
    return FleetFiles("/fleet/fleet.yaml", contents.fleet, fleet_level or {}, members)


def test_an_object_defined_in_two_files_of_a_member_is_reported_on_the_later_file() -> None:
    files = fleet_files({"zone-a": {"/a.yaml": parse(SERVICE), "/b.yaml": parse(SERVICE)}})
    loaded, problems = assemble(files)
    assert [(p.file, p.obj, p.field) for p in problems] == [
        ("/b.yaml", "Service default/shop", "metadata.name")
    ]
    assert "/a.yaml" in problems[0].message
    assert loaded.origins[origin_key("Service default/shop", "zone-a")] == "/a.yaml"


def test_the_same_service_in_two_members_is_no_duplicate() -> None:
    files = fleet_files(
        {"zone-a": {"/a.yaml": parse(SERVICE)}, "zone-b": {"/b.yaml": parse(SERVICE)}}
    )
    _, problems = assemble(files)
    assert problems == []


def test_an_endpoint_slice_whose_service_the_member_lacks_is_reported() -> None:
    files = fleet_files(
        {"zone-a": {"/a.yaml": parse(SERVICE)}, "zone-b": {"/b.yaml": parse(SLICE)}}
    )
    _, problems = assemble(files)
    assert [(p.file, p.obj, p.field) for p in problems] == [
        ("/b.yaml", "EndpointSlice default/shop-1", SERVICE_NAME_FIELD)
    ]
    assert "zone-b" in problems[0].message


def test_a_slice_may_find_its_service_in_another_file_of_the_member() -> None:
    files = fleet_files({"zone-a": {"/a.yaml": parse(SLICE), "/b.yaml": parse(SERVICE)}})
    _, problems = assemble(files)
    assert problems == []


def test_a_route_defined_in_the_fleet_file_and_a_routes_file_is_reported() -> None:
    route = parse(ROUTE, place=Place.ROUTES)
    fleet_level = {"/fleet/fleet.yaml": route, "/fleet/routes/r.yaml": route}
    _, problems = assemble(fleet_files({}, fleet_level))
    assert [(p.file, p.obj) for p in problems] == [
        ("/fleet/routes/r.yaml", "HTTPRoute default/shop")
    ]


def test_the_order_of_files_and_documents_does_not_change_the_state() -> None:
    other = edited(SERVICE, "metadata.name", "cart")
    forward = fleet_files({"zone-a": {"/a.yaml": parse(SERVICE), "/b.yaml": parse(other)}})
    backward = fleet_files({"zone-a": {"/b.yaml": parse(other), "/a.yaml": parse(SERVICE)}})
    state, _ = assemble(forward)
    assert state.state == assemble(backward)[0].state
    assert [s.name for s in state.state.members[0].services] == ["cart", "shop"]


def test_members_are_sorted_by_name() -> None:
    files = fleet_files({"zone-b": {}, "zone-a": {}})
    loaded, _ = assemble(files)
    assert [m.member.name for m in loaded.state.members] == ["zone-a", "zone-b"]


# --- References ------------------------------------------------------------------------------


def loaded_fleet(
    route: Mapping[str, Any], *, export: bool = True, export_all: bool = False
) -> LoadedFleet:
    member_files = {"/m.yaml": parse(SERVICE, SLICE, *([EXPORT] if export else []))}
    fleet_level = {"/r.yaml": parse(GATEWAY, route, place=Place.ROUTES)}
    files = fleet_files({"zone-a": member_files}, fleet_level, export_all=export_all)
    loaded, problems = assemble(files)
    assert problems == []
    return loaded


def reference_fields(loaded: LoadedFleet) -> list[tuple[str, str, str, str]]:
    return [
        (p.file, p.obj, p.field, p.message)
        for p in reference_problems(loaded.state, loaded.origins)
    ]


def test_routes_to_defined_exported_services_have_no_reference_problems() -> None:
    assert reference_fields(loaded_fleet(ROUTE)) == []


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        (
            "spec.rules[0].backendRefs[0].name",
            "cart",
            "spec.rules[0].backendRefs[0]",
            "Service default/cart is not defined by any member",
        ),
        (
            "spec.rules[0].backendRefs[0].port",
            8080,
            "spec.rules[0].backendRefs[0]",
            "Service default/shop has no port 8080 in any member (it has 80)",
        ),
        (
            "spec.rules[0].backendRefs[0].namespace",
            "prod",
            "spec.rules[0].backendRefs[0]",
            "no ReferenceGrant in namespace prod lets HTTPRoutes of default refer to Service shop"
            " (its requests are answered 500)",
        ),
        (
            "spec.rules[0].backendRefs[0].kind",
            "Pod",
            "spec.rules[0].backendRefs[0]",
            "backendRef kind Pod is not supported (its requests are answered 500)",
        ),
        (
            "spec.parentRefs[0].name",
            "other",
            "spec.parentRefs[0]",
            "Gateway default/other does not exist",
        ),
        (
            "spec.parentRefs[0].sectionName",
            "https",
            "spec.parentRefs[0]",
            "Gateway default/demo has no listener 'https'; did you mean http?",
        ),
        (
            "spec.parentRefs[0].port",
            443,
            "spec.parentRefs[0]",
            "Gateway default/demo has no listener on port 443",
        ),
    ],
)
def test_a_dangling_reference_is_reported_with_the_route_file(
    path: str, value: object, field: str, message: str
) -> None:
    loaded = loaded_fleet(edited(ROUTE, path, value))
    assert reference_fields(loaded) == [("/r.yaml", "HTTPRoute default/shop", field, message)]


def test_a_backend_no_member_exports_is_reported() -> None:
    loaded = loaded_fleet(ROUTE, export=False)
    (problem,) = reference_fields(loaded)
    assert problem[2:] == (
        "spec.rules[0].backendRefs[0]",
        "Service default/shop is not exported by any member (add a ServiceExport)",
    )


def test_export_all_exports_every_service() -> None:
    assert reference_fields(loaded_fleet(ROUTE, export=False, export_all=True)) == []


def test_the_fleets_address_family_reaches_the_fleet_state() -> None:
    fleet = edited(FLEET, "spec.ipFamily", "IPv6")
    contents = parse(fleet, place=Place.FLEET)
    assert contents.fleet is not None
    assert contents.fleet.ip_family == "IPv6"
    loaded, _ = assemble(FleetFiles("/fleet/fleet.yaml", contents.fleet, {}, {"zone-a": {}}))
    assert loaded.state.ip_family == "IPv6"
