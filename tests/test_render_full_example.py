"""`xdsfleet render` of examples/full shows the failover machinery a gateway gets (issue 3, 14):
outlier detection, a retry budget, retries on other hosts and priorities, priorities and
locality weights. tests/test_envoy_validate.py has Envoy check the same resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from xdsfleet.cache import typeurls
from xdsfleet.cli import app
from xdsfleet.translate.actions import PREVIOUS_HOSTS, PREVIOUS_PRIORITIES

FULL = Path(__file__).parent.parent / "examples" / "full" / "fleet.yaml"


def rendered() -> dict[tuple[str, str], Any]:
    args = ["render", "--fleet", str(FULL), "--role", "gateway"]
    args += ["--gateway", "default/edge", "--region", "eu-west", "--zone", "eu-west-1a"]
    result = CliRunner().invoke(app, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    return {(r["typeUrl"], r["name"]): r["resource"] for r in json.loads(result.output)}


def test_the_full_example_renders_failover_for_a_gateway() -> None:
    resources = rendered()

    shop = resources[(typeurls.CLUSTER, "default/shop:80")]
    assert shop["outlierDetection"]["consecutiveGatewayFailure"] == 3
    assert shop["circuitBreakers"]["thresholds"][0]["retryBudget"]["budgetPercent"]["value"] == 25
    assignment = resources[(typeurls.ENDPOINT, "default/shop:80")]
    assert {block.get("priority", 0) for block in assignment["endpoints"]} == {0, 1, 2}
    assert all(block["loadBalancingWeight"] >= 1 for block in assignment["endpoints"])
    assert assignment["policy"]["overprovisioningFactor"] == 140
    routes = resources[(typeurls.ROUTE, "default/edge:10080")]["virtualHosts"][0]["routes"]
    retry = next(r for r in routes if "route" in r)["route"]["retryPolicy"]
    assert [p["name"] for p in retry["retryHostPredicate"]] == [PREVIOUS_HOSTS]
    assert retry["retryPriority"]["name"] == PREVIOUS_PRIORITIES
    assert (typeurls.SECRET, "default/example-tls") in resources
    assert (typeurls.LISTENER, "default/edge:10443/h3") in resources


def summary(*extra: str) -> list[str]:
    args = ["render", "--fleet", str(FULL), "--gateway", "default/edge", "--region", "eu-west"]
    result = CliRunner().invoke(app, [*args, "-o", "summary", *extra])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_private_keys_are_redacted_unless_asked_for() -> None:
    args = ["render", "--fleet", str(FULL), "--gateway", "default/edge", "--type", "sds"]
    redacted = CliRunner().invoke(app, args).stdout
    shown = CliRunner().invoke(app, [*args, "--show-secrets"]).stdout

    assert "PRIVATE KEY" not in redacted
    assert "<redacted: render --show-secrets prints it>" in redacted
    assert "BEGIN CERTIFICATE" in redacted  # certificates are public
    assert "PRIVATE KEY" in shown


def test_the_summary_is_one_line_per_resource() -> None:
    lines = summary()
    assert len(lines) == len(rendered_for_edge())
    [eds] = [line for line in lines if line.startswith("eds  default/shop:80  ")]
    assert eds.endswith("9 endpoints in 4 localities, 3 tiers")


def test_type_and_name_filters_narrow_the_output() -> None:
    assert [line.split()[:2] for line in summary("--type", "cds", "--name", "default/shop:*")] == [
        ["cds", "default/shop:80"],
        ["cds", "default/shop:80@zone-b"],
    ]
    assert {line.split()[0] for line in summary("-t", "lds", "-t", "rds")} == {"lds", "rds"}


def rendered_for_edge() -> list[Any]:
    args = ["render", "--fleet", str(FULL), "--gateway", "default/edge", "--region", "eu-west"]
    return list(json.loads(CliRunner().invoke(app, [*args, "-o", "json"]).stdout))
