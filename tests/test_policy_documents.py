"""TrafficPolicy documents: what a valid policy becomes, and how each mistake is named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from test_manifests import DELETE, FILE, edited, problems_of, text_of

from xdsfleet.documents.manifests import Place, parse_file
from xdsfleet.model.policy import (
    Balancer,
    ConsistentHash,
    Cookie,
    Failover,
    HashAlgorithm,
    HealthCheckType,
    Level,
    MemberPolicy,
    PolicyTarget,
    RetryBudget,
    TargetKind,
)

SERVICE_POLICY: dict[str, Any] = {
    "apiVersion": "xdsfleet.io/v1alpha1",
    "kind": "TrafficPolicy",
    "metadata": {"name": "shop", "namespace": "default"},
    "spec": {
        "targetRefs": [{"group": "", "kind": "Service", "name": "shop"}],
        "members": [{"name": "zone-a", "weight": 80}, {"name": "idc", "drain": True}],
        "failover": {
            "tiers": [{"members": ["zone-a", "zone-b"]}, {"members": ["idc"]}],
            "overprovisioningFactor": 150,
            "panicThreshold": 20,
        },
        "loadBalancer": {"type": "LeastRequest", "slowStart": {"window": "30s"}},
        "outlierDetection": {"consecutiveGatewayErrors": 2, "baseEjectionTime": "1m"},
        "healthCheck": {"type": "HTTP", "path": "/healthz", "interval": "2s"},
        "retry": {"attempts": 3, "perTryTimeout": "500ms", "budget": {"percent": 30}},
        "connectionPool": {"maxRequests": 100},
    },
}
ROUTE_POLICY: dict[str, Any] = {
    "apiVersion": "xdsfleet.io/v1alpha1",
    "kind": "TrafficPolicy",
    "metadata": {"name": "canary", "namespace": "default"},
    "spec": {
        "targetRefs": [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "name": "shop",
                "sectionName": "canary",
            }
        ],
        "pin": {"members": ["zone-b"]},
    },
}


FLEET_POLICY: dict[str, Any] = {
    "apiVersion": "xdsfleet.io/v1alpha1",
    "kind": "TrafficPolicy",
    "metadata": {"name": "sidecars", "namespace": "default"},
    "spec": {
        "targetRefs": [{"group": "xdsfleet.io", "kind": "Fleet", "name": "demo"}],
        "sidecar": {"services": [{"name": "shop"}]},
    },
}
FLEET_TARGET_ONLY: dict[str, Any] = {
    **FLEET_POLICY,
    "spec": {"targetRefs": FLEET_POLICY["spec"]["targetRefs"]},
}
# A service policy that balances by hash: no loadBalancer.
HASHED = {
    **SERVICE_POLICY,
    "spec": {k: v for k, v in SERVICE_POLICY["spec"].items() if k != "loadBalancer"},
}


def policy_of(document: dict[str, Any]) -> Any:
    [policy] = parse_file(text_of(document), FILE, Place.ROUTES).policies
    return policy


def test_a_service_policy_becomes_its_model() -> None:
    policy = policy_of(SERVICE_POLICY)

    assert policy.level is Level.SERVICE
    assert policy.targets == (PolicyTarget(TargetKind.SERVICE, "shop"),)
    spec = policy.spec
    assert spec.members == (MemberPolicy("zone-a", weight=80), MemberPolicy("idc", drain=True))
    assert spec.failover == Failover((("zone-a", "zone-b"), ("idc",)), 150, 20)
    assert spec.load_balancer.type is Balancer.LEAST_REQUEST
    assert spec.load_balancer.slow_start.window_ms == 30_000
    assert spec.outlier_detection.base_ejection_time_ms == 60_000
    assert spec.health_check.type is HealthCheckType.HTTP
    assert spec.retry.per_try_timeout_ms == 500
    assert spec.retry.budget == RetryBudget(30)
    assert spec.connection_pool.max_requests == 100


def test_a_route_policy_pins_members() -> None:
    policy = policy_of(ROUTE_POLICY)

    assert policy.level is Level.ROUTE
    assert policy.targets == (PolicyTarget(TargetKind.HTTP_ROUTE, "shop", "canary"),)
    assert policy.spec.pin.members == ("zone-b",)


def test_a_fleet_policy_drains_members_everywhere() -> None:
    document = edited(FLEET_TARGET_ONLY, "spec.members", [{"name": "zone-a", "drain": True}])
    policy = policy_of(document)

    assert policy.level is Level.FLEET
    assert policy.spec.members == (MemberPolicy("zone-a", drain=True),)


def test_durations_add_up_their_parts() -> None:
    document = edited(SERVICE_POLICY, "spec.retry.perTryTimeout", "1m30s250ms")
    assert policy_of(document).spec.retry.per_try_timeout_ms == 90_250


def test_defaults_of_failover_can_be_turned_off() -> None:
    # docs/failover.md: non-idempotent routes turn off the per-try timeout or hedging, and a
    # service turns off the gateways' default probe.
    document = edited(SERVICE_POLICY, "spec.retry", {"perTryTimeout": "0s", "hedge": False})
    document = edited(document, "spec.healthCheck", {"enabled": False})
    spec = policy_of(document).spec
    assert (spec.retry.per_try_timeout_ms, spec.retry.hedge) == (0, False)
    assert not spec.health_check.enabled


def test_a_consistent_hash_takes_one_key_and_an_algorithm() -> None:
    session = {"consistentHash": {"cookie": {"name": "sid", "ttl": "1h"}, "algorithm": "Maglev"}}
    document = edited(HASHED, "spec.sessionPersistence", session)

    hashed = policy_of(document).spec.session_persistence.consistent_hash

    assert hashed == ConsistentHash(cookie=Cookie("sid", 3_600_000), algorithm=HashAlgorithm.MAGLEV)


def test_header_names_to_hash_on_are_lowercased() -> None:
    document = edited(HASHED, "spec.sessionPersistence", {"consistentHash": {"header": "X-User"}})
    assert policy_of(document).spec.session_persistence.consistent_hash.header == "x-user"


# --- Bad policies: each names file, object and field -----------------------------------------


class Case(NamedTuple):
    base: dict[str, Any]
    path: str
    value: object
    field: str
    message: str


S, R = SERVICE_POLICY, ROUTE_POLICY
CASES = [
    Case(S, "spec.targetRefs", DELETE, "spec.targetRefs", "missing required field"),
    Case(S, "spec.targetRefs", [], "spec.targetRefs", "must not be empty"),
    Case(S, "spec.targetRefs[0].kind", "Pod", "spec.targetRefs[0].kind", "must be one of"),
    Case(S, "spec.targetRefs[0].group", "apps", "spec.targetRefs[0].group", "needs group ''"),
    Case(S, "spec.targetRefs[0].name", "Shop", "spec.targetRefs[0].name", "DNS-1035"),
    Case(
        S,
        "spec.targetRefs",
        [{"kind": "Service", "name": "a"}, {"kind": "Service", "name": "a"}],
        "spec.targetRefs[1]",
        "duplicate target",
    ),
    Case(
        S,
        "spec.targetRefs",
        [
            {"kind": "Service", "name": "a"},
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "a"},
        ],
        "spec.targetRefs[1].kind",
        "all targets of a policy must be a Service or ServiceImport",
    ),
    Case(
        FLEET_POLICY,
        "spec.targetRefs[0].sectionName",
        "x",
        "spec.targetRefs[0].sectionName",
        "a Fleet has no sections",
    ),
    Case(
        FLEET_POLICY,
        "spec.sidecar.services",
        [{"name": "shop"}, {"name": "shop", "namespace": "default"}],
        "spec.sidecar.services[1].name",
        "duplicate service default/shop",
    ),
    Case(S, "spec.pin", {"members": ["a"]}, "spec.pin", "not for a policy that targets a Service"),
    Case(R, "spec.members", [{"name": "a"}], "spec.members", "not for a policy that targets an"),
    Case(R, "spec.retry", {"budget": {"percent": 5}}, "spec.retry.budget", "only in a policy"),
    Case(R, "spec.pin.members", ["a", "a"], "spec.pin.members[1]", "duplicate member"),
    Case(R, "spec.pin.members", [], "spec.pin.members", "must not be empty"),
    Case(S, "spec.weights", {}, "spec.weights", "unknown field"),
    Case(S, "spec.members[0].weight", 10_001, "spec.members[0].weight", "between 0 and 10000"),
    Case(S, "spec.members[0].name", "Zone_A", "spec.members[0].name", "DNS-1123 label"),
    Case(
        S,
        "spec.members",
        [{"name": "a"}, {"name": "a", "drain": True}],
        "spec.members[1].name",
        "duplicate member a",
    ),
    Case(
        S,
        "spec.failover.tiers",
        [{"members": ["a"]}, {"members": ["b", "a"]}],
        "spec.failover.tiers[1].members[1]",
        "member a is already in tier 0",
    ),
    Case(S, "spec.failover.tiers[0].members", [], "spec.failover.tiers[0].members", "not be empty"),
    Case(S, "spec.failover.tiers", [], "spec.failover.tiers", "must not be empty"),
    Case(
        S,
        "spec.failover.overprovisioningFactor",
        99,
        "spec.failover.overprovisioningFactor",
        "between 100 and 1000",
    ),
    Case(
        S, "spec.failover.panicThreshold", 101, "spec.failover.panicThreshold", "between 0 and 100"
    ),
    Case(S, "spec.loadBalancer.type", "Fastest", "spec.loadBalancer.type", "must be one of"),
    Case(
        S,
        "spec.loadBalancer",
        {"type": "Random", "slowStart": {"window": "10s"}},
        "spec.loadBalancer.slowStart",
        "needs type RoundRobin or LeastRequest",
    ),
    Case(
        S,
        "spec.loadBalancer.slowStart",
        {"aggression": 2},
        "spec.loadBalancer.slowStart.window",
        "missing required field",
    ),
    Case(
        S,
        "spec.loadBalancer.slowStart.window",
        "30",
        "spec.loadBalancer.slowStart.window",
        "is not a duration",
    ),
    Case(
        S,
        "spec.loadBalancer.slowStart.window",
        "0s",
        "spec.loadBalancer.slowStart.window",
        "longer than 0s",
    ),
    Case(
        S,
        "spec.outlierDetection.maxEjectionPercent",
        150,
        "spec.outlierDetection.maxEjectionPercent",
        "between 0 and 100",
    ),
    Case(S, "spec.healthCheck.type", DELETE, "spec.healthCheck.type", "missing required field"),
    Case(S, "spec.healthCheck.path", DELETE, "spec.healthCheck.path", "type HTTP"),
    Case(
        S,
        "spec.healthCheck",
        {"enabled": False, "type": "TCP"},
        "spec.healthCheck.type",
        "not with enabled: false",
    ),
    Case(
        S,
        "spec.healthCheck.grpcService",
        "shop.Cart",
        "spec.healthCheck.grpcService",
        "only for type GRPC",
    ),
    Case(S, "spec.retry.retryOn", ["sometimes"], "spec.retry.retryOn[0]", "unknown condition"),
    Case(S, "spec.retry.codes", [200], "spec.retry.codes[0]", "between 400 and 599"),
    Case(S, "spec.retry.attempts", 11, "spec.retry.attempts", "between 0 and 10"),
    Case(
        S,
        "spec.retry.backoff",
        {"base": "1s", "max": "10ms"},
        "spec.retry.backoff.max",
        "not be shorter than base",
    ),
    Case(S, "spec.retry.budget", {}, "spec.retry.budget.percent", "missing required field"),
    Case(
        S,
        "spec.sessionPersistence",
        {"consistentHash": {"header": "x-user"}},
        "spec.loadBalancer",
        "does not go with sessionPersistence.consistentHash",
    ),
    Case(
        HASHED,
        "spec.sessionPersistence",
        {"consistentHash": {"header": "x-user", "sourceIP": True}},
        "spec.sessionPersistence.consistentHash",
        "needs exactly one of header, cookie, sourceIP",
    ),
    Case(
        HASHED,
        "spec.sessionPersistence",
        {"cookie": {"name": "bad name"}},
        "spec.sessionPersistence.cookie.name",
        "not a valid cookie name",
    ),
    Case(
        S,
        "spec.connectionPool.maxConnections",
        0,
        "spec.connectionPool.maxConnections",
        "between 1 and",
    ),
    Case(
        {**S, "spec": {"targetRefs": S["spec"]["targetRefs"]}},
        "spec.targetRefs[0].name",
        "shop",
        "spec",
        "sets nothing",
    ),
    # A setting of the wrong level is reported once: not as "sets nothing" on top.
    Case(
        FLEET_TARGET_ONLY,
        "spec.failover",
        {"tiers": [{"members": ["a"]}]},
        "spec.failover",
        "not for a policy that targets the Fleet",
    ),
    Case(
        FLEET_TARGET_ONLY,
        "spec.members",
        [{"name": "a", "weight": 5}],
        "spec.members[0].weight",
        "not for a policy that targets the Fleet",
    ),
    Case(S, "spec.members[0].drian", True, "spec.members[0].drian", "did you mean drain?"),
    Case(
        S, "spec.targetRefs[0].kind", "Servce", "spec.targetRefs[0].kind", "did you mean Service?"
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.path}={c.value!r}")
def test_a_bad_policy_is_reported_with_file_object_and_field(case: Case) -> None:
    document = edited(case.base, case.path, case.value)
    problems = problems_of(text_of(document), Place.ROUTES)
    label = f"TrafficPolicy default/{case.base['metadata']['name']}"
    assert [(p.file, p.obj, p.field) for p in problems] == [(FILE, label, case.field)]
    assert case.message in problems[0].message


def test_a_policy_does_not_belong_in_a_member_directory() -> None:
    [problem] = problems_of(text_of(SERVICE_POLICY), Place.MEMBER)
    assert problem.field == "kind"
    assert "does not belong in a member directory" in problem.message


DOCUMENTED = re.findall(
    r"```yaml\n(.*?)```", (Path(__file__).parent.parent / "docs" / "policy.md").read_text(), re.S
)


@pytest.mark.parametrize("example", DOCUMENTED, ids=lambda text: text.split("name: ")[1].split()[0])
def test_every_example_in_the_policy_documentation_parses(example: str) -> None:
    parse_file(example, "docs/policy.md", Place.ROUTES)
