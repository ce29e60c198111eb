"""`xdsfleet explain`: the route a request takes, and each member's share now and per tier."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xdsfleet.cli import app
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.explain import Request, explain

FULL = Path(__file__).parent.parent / "examples" / "full" / "fleet.yaml"
EDGE = NodeProfile(gateway="default/edge", region="eu-west", zone="eu-west-1a")
runner = CliRunner()


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


def test_a_redirect_and_a_miss(state: FleetState) -> None:
    redirect = explain(state, EDGE, Request("shop.example.com", "/catalogue/hats"))
    assert redirect is not None
    assert redirect.action == "redirect"
    assert explain(state, EDGE, Request("nowhere.example.org", "/")) is None


def test_the_command_prints_the_route_and_a_table_per_cluster() -> None:
    args = ["explain", "--fleet", str(FULL), "--gateway", "default/edge", "--region", "eu-west"]
    args += ["--host", "shop.example.com", "--path", "/", "-H", "x-canary=true"]
    result = runner.invoke(app, args)

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
