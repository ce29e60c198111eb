"""Which policies apply where: targets, sections, namespaces, and merging by specificity."""

from __future__ import annotations

from states import policy

from xdsfleet.model.policy import (
    Failover,
    Http3,
    MemberPolicy,
    PolicyIndex,
    PolicyTarget,
    Retry,
    SidecarScope,
    TargetKind,
)

WEB = PolicyTarget(TargetKind.SERVICE, "web")
WEB_HTTP = PolicyTarget(TargetKind.SERVICE, "web", "http")
RETRY = Retry(attempts=3)
DRAIN = (MemberPolicy("east", drain=True),)


def test_a_policy_applies_to_every_port_of_its_service_in_its_namespace() -> None:
    index = PolicyIndex([policy("p", WEB, retry=RETRY)])

    assert index.service("ns", "web", "http").retry == RETRY
    assert index.service("ns", "web", "").retry == RETRY
    assert index.service("other", "web", "http").retry is None
    assert index.service("ns", "api", "http").retry is None


def test_a_service_import_and_a_service_are_the_same_target() -> None:
    imported = PolicyTarget(TargetKind.SERVICE_IMPORT, "web")
    assert (
        PolicyIndex([policy("p", imported, retry=RETRY)]).service("ns", "web", "x").retry == RETRY
    )


def test_a_port_policy_overrides_the_service_policy_field_by_field() -> None:
    index = PolicyIndex(
        [
            policy("a-service", WEB, retry=Retry(attempts=1), members=DRAIN),
            policy("b-port", WEB_HTTP, retry=RETRY),
        ]
    )

    http = index.service("ns", "web", "http")
    assert (http.retry, http.members) == (RETRY, DRAIN)
    assert index.service("ns", "web", "admin").retry == Retry(attempts=1)
    assert index.conflicts() == []


def test_between_equal_targets_the_first_by_name_wins_and_the_other_is_a_conflict() -> None:
    first = policy("a", WEB, retry=RETRY)
    second = policy("b", WEB, retry=Retry(attempts=9), failover=Failover(panic_threshold=1))
    index = PolicyIndex([second, first])

    spec = index.service("ns", "web", "http")
    assert spec.retry == RETRY
    assert spec.failover == Failover(panic_threshold=1)
    [conflict] = index.conflicts()
    assert (conflict.loser, conflict.winner, conflict.field) == (second, first, "retry")


def test_a_rule_policy_applies_to_its_rule_and_a_route_policy_to_every_rule() -> None:
    rule = policy("r", PolicyTarget(TargetKind.HTTP_ROUTE, "web", "canary"), retry=RETRY)
    whole = policy("w", PolicyTarget(TargetKind.HTTP_ROUTE, "web"), retry=Retry(attempts=1))
    index = PolicyIndex([rule, whole])

    assert index.rule(TargetKind.HTTP_ROUTE, "ns", "web", "canary").retry == RETRY
    assert index.rule(TargetKind.HTTP_ROUTE, "ns", "web", None).retry == Retry(attempts=1)
    assert index.rule(TargetKind.GRPC_ROUTE, "ns", "web", "canary").retry is None


def test_listener_and_fleet_policies() -> None:
    index = PolicyIndex(
        [
            policy("h3", PolicyTarget(TargetKind.GATEWAY, "gw"), http3=Http3()),
            policy("s", PolicyTarget(TargetKind.FLEET, "f"), sidecar=SidecarScope((("ns", "a"),))),
        ]
    )

    assert index.listener("ns", "gw", "https").http3 == Http3()
    assert index.fleet("f").sidecar == SidecarScope((("ns", "a"),))
    assert index.fleet("other").sidecar is None
