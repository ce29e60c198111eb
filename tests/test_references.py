"""What `validate` finds across documents: dangling policy targets and members, conflicting
policies and routes, missing certificates, and node ports nodePort members need.

Each case edits one document of a copy of examples/full (which has no problem) and expects
exactly one problem, naming the file, the object and the field."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from test_manifests import DELETE, edited

from xdsfleet.sources.files import validate_fleet

FULL = Path(__file__).parent.parent / "examples" / "full"
POLICIES = "routes/policies.yaml"
ROUTES = "routes/shop.yaml"


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    root = tmp_path / "full"
    shutil.copytree(FULL, root)
    return root


def documents(root: Path, file: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((root / file).read_text()))


def rewrite(root: Path, file: str, name: str, path: str, value: object) -> None:
    """Set `path` of the document named `name` (or `KIND/NAME`) in `file`."""
    kind, _, name = name.rpartition("/")
    docs = [
        edited(doc, path, value)
        if doc["metadata"]["name"] == name and kind in ("", doc["kind"])
        else doc
        for doc in documents(root, file)
    ]
    (root / file).write_text(yaml.safe_dump_all(docs, sort_keys=False))


def append(root: Path, file: str, document: dict[str, Any]) -> None:
    (root / file).write_text(yaml.safe_dump_all([*documents(root, file), document]))


def problems(root: Path) -> list[tuple[str, str, str, str]]:
    return [
        (str(Path(p.file).relative_to(root.resolve())), p.obj, p.field, p.message)
        for p in validate_fleet(root / "fleet.yaml")
    ]


def test_the_full_example_has_no_problem(fleet: Path) -> None:
    assert problems(fleet) == []


class Case(NamedTuple):
    file: str
    name: str
    path: str
    value: object
    obj: str
    field: str
    message: str


CASES = [
    Case(
        POLICIES,
        "shop",
        "spec.targetRefs[0].name",
        "nope",
        "TrafficPolicy default/shop",
        "spec.targetRefs[0]",
        "Service default/nope is not defined by any member",
    ),
    Case(
        POLICIES,
        "checkout",
        "spec.targetRefs[0].sectionName",
        "grpc",
        "TrafficPolicy default/checkout",
        "spec.targetRefs[0]",
        "Service default/checkout has no port named 'grpc'",
    ),
    Case(
        POLICIES,
        "shop-canary",
        "spec.targetRefs[0].sectionName",
        "beta",
        "TrafficPolicy default/shop-canary",
        "spec.targetRefs[0]",
        "HTTPRoute default/shop has no rule 'beta'",
    ),
    Case(
        POLICIES,
        "shop-canary",
        "spec.targetRefs[0].kind",
        "GRPCRoute",
        "TrafficPolicy default/shop-canary",
        "spec.targetRefs[0]",
        "GRPCRoute default/shop does not exist",
    ),
    Case(
        POLICIES,
        "edge-http3",
        "spec.targetRefs[0].sectionName",
        "ftp",
        "TrafficPolicy default/edge-http3",
        "spec.targetRefs[0]",
        "Gateway default/edge has no listener 'ftp'",
    ),
    Case(
        POLICIES,
        "edge-http3",
        "spec.targetRefs[0].sectionName",
        "http",
        "TrafficPolicy default/edge-http3",
        "spec.http3",
        "HTTP/3 needs HTTPS, and listener http of Gateway edge is HTTP",
    ),
    Case(
        POLICIES,
        "sidecars",
        "spec.targetRefs[0].name",
        "other",
        "TrafficPolicy default/sidecars",
        "spec.targetRefs[0]",
        "the Fleet is named 'full'",
    ),
    Case(
        POLICIES,
        "shop",
        "spec.members[0].name",
        "mars",
        "TrafficPolicy default/shop",
        "spec.members[0].name",
        "member mars is not in the Fleet",
    ),
    Case(
        POLICIES,
        "shop",
        "spec.failover.tiers[2].members[0]",
        "mars",
        "TrafficPolicy default/shop",
        "spec.failover.tiers[2].members[0]",
        "member mars is not in the Fleet",
    ),
    Case(
        POLICIES,
        "shop-canary",
        "spec.pin.members[0]",
        "mars",
        "TrafficPolicy default/shop-canary",
        "spec.pin.members[0]",
        "member mars is not in the Fleet",
    ),
    Case(
        POLICIES,
        "sidecars",
        "spec.sidecar.services[0].name",
        "nope",
        "TrafficPolicy default/sidecars",
        "spec.sidecar.services[0]",
        "Service default/nope is not exported",
    ),
    Case(
        POLICIES,
        "cart",
        "spec.members",
        [{"name": m, "drain": True} for m in ("zone-a", "zone-b", "idc")],
        "TrafficPolicy default/cart",
        "spec.members",
        "no member exporting cart would get traffic (all drained or 0)",
    ),
    Case(
        "routes/gateway.yaml",
        "edge",
        "spec.listeners[1].tls.certificateRefs[0].name",
        "gone",
        "Gateway default/edge",
        "spec.listeners[1].tls.certificateRefs[0]",
        "Secret default/gone does not exist (the listener is not served)",
    ),
    Case(
        "routes/gateway.yaml",
        "edge",
        "spec.listeners[1].port",
        10080,
        "Gateway default/edge",
        "spec.listeners[1].protocol",
        "port 10080 serves HTTP (listener http): this HTTPS listener is not served"
        " (ProtocolConflict)",
    ),
    Case(
        ROUTES,
        "shop",
        "spec.rules[1].filters[2].requestMirror.backendRef.name",
        "nope",
        "HTTPRoute default/shop",
        "spec.rules[1].filters.requestMirror[0]",
        "Service default/nope is not defined by any member",
    ),
    Case(
        ROUTES,
        "cart",
        "spec.rules[0].backendRefs[0].port",
        8080,
        "GRPCRoute default/cart",
        "spec.rules[0].backendRefs[0]",
        "Service default/cart has no port 8080 in any member (it has 50051)",
    ),
    Case(
        ROUTES,
        "shop",
        "spec.rules[1].backendRefs[0].name",
        "shopp",
        "HTTPRoute default/shop",
        "spec.rules[1].backendRefs[0]",
        "Service default/shopp is not defined by any member; did you mean shop?",
    ),
    Case(
        ROUTES,
        "shop",
        "spec.parentRefs[0].sectionName",
        "htps",
        "HTTPRoute default/shop",
        "spec.parentRefs[0]",
        "Gateway default/edge has no listener 'htps'; did you mean https?",
    ),
    Case(
        "members/idc/services.yaml",
        "Service/shop",
        "spec.ports[0].nodePort",
        DELETE,
        "Service default/shop",
        "spec.ports[0].nodePort",
        "member idc is in nodePort mode: this port needs one",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.name}:{c.path}={c.value!r}")
def test_a_dangling_or_impossible_reference_names_file_object_and_field(
    fleet: Path, case: Case
) -> None:
    rewrite(fleet, case.file, case.name, case.path, case.value)
    assert problems(fleet) == [(case.file, case.obj, case.field, case.message)]


def test_two_policies_setting_one_field_for_one_target_name_the_one_applied(
    fleet: Path,
) -> None:
    [shop] = [d for d in documents(fleet, POLICIES) if d["metadata"]["name"] == "shop"]
    append(fleet, POLICIES, edited(shop, "metadata.name", "shop-too"))
    found = problems(fleet)
    fields = sorted(field for _, obj, field, _ in found if obj == "TrafficPolicy default/shop-too")
    assert fields == sorted(f"spec.{key}" for key in shop["spec"] if key != "targetRefs")
    assert all("TrafficPolicy default/shop applies" in message for *_, message in found)


def test_a_rule_repeating_an_earlier_match_for_the_same_host_is_reported(fleet: Path) -> None:
    [shop] = [d for d in documents(fleet, ROUTES) if d["metadata"]["name"] == "shop"]
    copy = edited(shop, "metadata.name", "shop2")
    copy["spec"]["rules"] = [shop["spec"]["rules"][1]]
    append(fleet, ROUTES, copy)
    [(file, obj, field, message)] = problems(fleet)
    assert (file, obj, field) == (ROUTES, "HTTPRoute default/shop2", "spec.rules[0].matches[0]")
    assert message.startswith("HTTPRoute default/shop rule 1 has the same match")


def test_a_node_port_member_without_a_ready_node_is_reported(fleet: Path) -> None:
    file = "members/idc/services.yaml"
    for name in ("idc-node-1", "idc-node-2"):
        rewrite(fleet, file, name, "status.conditions[0].status", "False")
    assert problems(fleet) == [
        (
            "fleet.yaml",
            "Fleet full",
            "spec.members",
            "member idc is in nodePort mode but has no ready Node",
        )
    ]
