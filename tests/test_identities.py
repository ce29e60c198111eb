"""The Fleet's `spec.identities`: which node profiles a client identity may claim over mTLS, as
documented in docs/fleet.md ("Client identities"), and each mistake named by file, object and
field."""

from __future__ import annotations

import pytest
import yaml

from xdsfleet.documents.manifests import Place, parse_file
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.identity import IdentityRule, refusal
from xdsfleet.model.node import NodeProfile, Role

EDGE = "spiffe://prod.example/ns/infra/sa/edge"
RULES = (
    IdentityRule(EDGE, (Role.GATEWAY,), gateways=("infra/edge",), members=("zone-a",)),
    IdentityRule("spiffe://prod.example/ns/shop/*", (Role.SIDECAR, Role.PROXYLESS), members=("*",)),
    IdentityRule("ops-admin", (Role.GATEWAY,), gateways=("*",)),
)


@pytest.mark.parametrize(
    ("identity", "profile", "allowed"),
    [
        (EDGE, NodeProfile(gateway="infra/edge", member="zone-a"), True),
        (EDGE, NodeProfile(gateway="infra/edge"), True),  # naming no member needs none
        (EDGE, NodeProfile(gateway="infra/other"), False),
        (EDGE, NodeProfile(gateway="infra/edge", member="zone-b"), False),
        (EDGE, NodeProfile(role=Role.SIDECAR), False),
        ("spiffe://prod.example/ns/shop/sa/web", NodeProfile(role=Role.SIDECAR, member="x"), True),
        ("spiffe://prod.example/ns/shop/sa/web", NodeProfile(gateway="infra/edge"), False),
        ("spiffe://prod.example/ns/shopping/sa/web", NodeProfile(role=Role.SIDECAR), False),
        ("ops-admin", NodeProfile(gateway="anything/at-all"), True),
        ("ops-admin", NodeProfile(gateway="a/b", member="zone-a"), False),
        ("nobody", NodeProfile(role=Role.SIDECAR), False),
        (None, NodeProfile(role=Role.SIDECAR), False),
    ],
)
def test_an_identity_may_claim_only_what_a_rule_allows(
    identity: str | None, profile: NodeProfile, allowed: bool
) -> None:
    assert (refusal(RULES, identity, profile) is None) is allowed


def test_without_rules_every_identity_may_claim_every_profile() -> None:
    assert refusal((), None, NodeProfile(gateway="infra/edge")) is None


def parse(identities: object) -> list[IdentityRule]:
    member = {"name": "zone-a", "region": "r", "zone": "z", "source": {"manifests": "a"}}
    document = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": "prod"},
        "spec": {"members": [member], "identities": identities},
    }
    text = yaml.safe_dump(document)
    fleet = parse_file(text, "fleet.yaml", Place.FLEET, "/f").fleet
    assert fleet is not None
    return list(fleet.identities)


def test_a_valid_list_becomes_rules() -> None:
    rules = parse(
        [{"identity": EDGE, "roles": ["gateway"], "gateways": ["infra/edge"], "members": ["*"]}]
    )
    assert rules == [IdentityRule(EDGE, (Role.GATEWAY,), ("infra/edge",), ("*",))]


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ({"roles": ["gateway"]}, "spec.identities[0].identity", "missing required field"),
        ({"identity": "a*b", "roles": ["gateway"]}, "spec.identities[0].identity", "only end"),
        ({"identity": "x"}, "spec.identities[0].roles", "missing required field"),
        ({"identity": "x", "roles": ["admin"]}, "spec.identities[0].roles[0]", "must be one of"),
        (
            {"identity": "x", "roles": ["gateway"], "gateways": ["edge"]},
            "spec.identities[0].gateways[0]",
            "NAMESPACE/NAME",
        ),
        (
            {"identity": "x", "roles": ["sidecar"], "members": ["zone-z"]},
            "spec.identities[0].members[0]",
            "no member 'zone-z'",
        ),
        ({"identity": "x", "roles": ["sidecar"], "groups": []}, "spec.identities[0].groups", ""),
    ],
)
def test_each_mistake_names_file_object_and_field(
    entry: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as error:
        parse([entry])
    [problem] = error.value.problems
    assert (problem.file, problem.obj, problem.field) == ("fleet.yaml", "Fleet prod", field)
    assert message in problem.message
