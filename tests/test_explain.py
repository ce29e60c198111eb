"""`xdsfleet explain`: the route a request takes, and each member's share now, per tier, and
when members fail or are drained (what a real Envoy does: tests/test_envoy_explain.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from xdsfleet.cli import app
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.explain import INVALID_SHARE, After, Request, Scenario, explain

FULL = Path(__file__).parent.parent / "examples" / "full" / "fleet.yaml"
EDGE = NodeProfile(gateway="default/edge", region="eu-west", zone="eu-west-1a")
A = frozenset({"zone-a"})
runner = CliRunner()


def explain_at_edge(*options: str) -> Result:
    """`xdsfleet explain` of a request for shop.example.com at the full example's edge Gateway,
    from eu-west, with `options`."""
    args = ["explain", "--fleet", str(FULL), "--gateway", "default/edge", "--region", "eu-west"]
    return runner.invoke(app, [*args, "--host", "shop.example.com", *options])


@pytest.fixture(scope="module")
def state() -> FleetState:
    return load_fleet(FULL).state


def test_a_request_is_matched_like_envoy_does_and_shares_follow_the_weights(
    state: FleetState,
) -> None:
    found = explain(state, EDGE, Request("shop.example.com:10080", "/"))

    assert found is not None
    assert found.route == "HTTPRoute default/shop rules[4].matches[0]"
    [cluster] = found.clusters
    shares = {loc.member: loc.shares for loc in cluster.localities}
    assert shares["zone-a"] == pytest.approx((0.8, 0.0, 0.0))
    assert shares["zone-b"] == pytest.approx((0.2, 0.0, 0.0))
    assert shares["idc"] == pytest.approx((0.0, 1.0, 0.0))
    assert shares["far"] == pytest.approx((0.0, 0.0, 1.0))


def test_a_canary_header_explains_the_pinned_cluster(state: FleetState) -> None:
    found = explain(state, EDGE, Request("shop.example.com", "/", {"X-Canary": "true"}))

    assert found is not None
    [cluster] = found.clusters
    assert cluster.cluster == "default/shop:80@zone-b"
    first = cluster.localities[0]
    assert (first.member, first.tier) == ("zone-b", 0)


def test_a_weighted_rule_splits_the_route_between_clusters(state: FleetState) -> None:
    found = explain(state, EDGE, Request("shop.example.com", "/api/orders?x=1"))

    assert found is not None
    assert [(c.cluster, c.fraction) for c in found.clusters] == [
        ("default/shop:80", 0.9),
        ("default/checkout:8080", 0.1),
    ]


def test_the_share_of_a_backend_that_does_not_resolve_is_answered_500(state: FleetState) -> None:
    [shop] = [r for r in state.http_routes if r.name == "shop"]
    # The weighted rule's second backend becomes a kind no gateway sends to.
    rules = tuple(
        replace(rule, backend_refs=(refs[0], replace(refs[1], kind="Pod")))
        if len(refs := rule.backend_refs) == 2
        else rule
        for rule in shop.rules
    )
    broken = replace(state, http_routes=(replace(shop, rules=rules),))

    found = explain(broken, EDGE, Request("shop.example.com", "/api/orders"))

    assert found is not None
    shop_share, invalid = found.clusters
    assert (shop_share.cluster, shop_share.fraction) == ("default/shop:80", 0.9)
    assert (invalid.fraction, invalid.localities, invalid.warnings) == (0.1, (), (INVALID_SHARE,))


def test_a_redirect_and_a_miss(state: FleetState) -> None:
    redirect = explain(state, EDGE, Request("shop.example.com", "/catalogue/hats"))
    assert redirect is not None
    assert redirect.action == "redirect"
    assert explain(state, EDGE, Request("nowhere.example.org", "/")) is None


def test_the_command_prints_the_route_and_a_table_per_cluster() -> None:
    result = explain_at_edge("--path", "/", "-H", "x-canary=true")

    assert result.exit_code == 0, result.output
    assert "HTTPRoute default/shop rules[0].matches[0]" in result.output
    assert "default/shop:80@zone-b" in result.output
    assert "if tier 0 fails" in result.output


def test_the_command_fails_when_nothing_matches() -> None:
    args = ["explain", "--fleet", str(FULL), "--gateway", "default/edge", "--host", "x.org"]
    assert runner.invoke(app, args).exit_code == 1


def test_a_header_must_be_name_equals_value() -> None:
    args = ["explain", "--fleet", str(FULL), "--host", "a", "-H", "broken"]
    assert runner.invoke(app, args).exit_code == 2


def test_a_failed_member_spills_to_the_next_tier_as_envoy_computes_it(state: FleetState) -> None:
    found = explain(state, EDGE, Request("shop.example.com"), scenario=Scenario(failed=A))

    assert found is not None
    [cluster] = found.clusters
    after = {loc.member: loc.after.share for loc in cluster.localities if loc.after is not None}
    # zone-b's 2 of the tier's 5 endpoints x 1.4 = 56 %: the rest spills to idc (tier 1).
    assert after == pytest.approx({"zone-a": 0.0, "zone-b": 0.56, "idc": 0.44, "far": 0.0})
    assert any(
        "44% of default/shop:80's requests spill into tier 1 (idc" in w for w in cluster.warnings
    )
    assert any("region on-prem" in w for w in cluster.warnings)


def test_draining_the_rest_of_a_tier_sends_everything_to_the_next(state: FleetState) -> None:
    scenario = Scenario(failed=A, drained=frozenset({"zone-b"}))
    found = explain(state, EDGE, Request("shop.example.com"), scenario=scenario)

    assert found is not None
    [cluster] = found.clusters
    rows = {loc.member: loc for loc in cluster.localities}
    assert rows["zone-b"].after == After(tier=None, healthy=0, share=0.0)
    assert rows["idc"].after == After(tier=1, healthy=2, share=1.0)
    assert any("100% of default/shop:80's requests spill" in w for w in cluster.warnings)


def test_a_member_drained_by_the_fleet_shows_as_drained(state: FleetState) -> None:
    drained = replace(
        state,
        members=tuple(
            replace(m, member=replace(m.member, drain=m.member.name == "zone-b"))
            for m in state.members
        ),
    )
    found = explain(drained, EDGE, Request("shop.example.com"))

    assert found is not None
    [cluster] = found.clusters
    rows = {loc.member: loc for loc in cluster.localities}
    assert rows["zone-b"].drained
    assert rows["zone-a"].shares[0] == pytest.approx(1.0)


def test_without_a_what_if_a_healthy_fleet_warns_of_nothing(state: FleetState) -> None:
    found = explain(state, EDGE, Request("shop.example.com"))
    assert found is not None
    assert all(not cluster.warnings for cluster in found.clusters)


def test_the_command_shows_a_what_if_column_and_its_warnings() -> None:
    result = explain_at_edge("--fail", "zone-a", "--drain", "zone-b")

    assert result.exit_code == 0, result.output
    assert "if fail zone-a, drain zone-b" in result.output
    assert "drained" in result.output
    assert "warning" in result.output


def test_an_unknown_member_is_refused_with_a_suggestion() -> None:
    args = ["explain", "--fleet", str(FULL), "--host", "shop.example.com", "--fail", "zone-z"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    # Whatever the terminal's width: the message may wrap inside rich's error box.
    assert "did you mean zone-b?" in " ".join(result.output.replace("│", "").split())


def test_drain_takes_a_comma_separated_list_as_fail_does() -> None:
    result = explain_at_edge("--drain", "zone-a,zone-b")

    assert result.exit_code == 0, result.output
    assert "drain zone-a, drain zone-b" in result.output
