"""A node without locality, where tiers follow topology, has every member in its first tier, a
far region included (issue 14: 22 % of traffic went to the DR region). `bootstrap` says so when
it writes such a node, and `serve` when such a node connects."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from states import AT_GATEWAY, EAST, FAR, NS, fleet, policy, running
from structlog.testing import capture_logs
from typer.testing import CliRunner

from xdsfleet.cli import app
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile
from xdsfleet.model.policy import Failover, TrafficPolicy
from xdsfleet.pipeline.publisher import Publisher

NOWHERE = NodeProfile(gateway=f"{NS}/gw")


def two_regions(*policies: TrafficPolicy) -> FleetState:
    return fleet(running(EAST, "10.0.0.1"), running(FAR, "10.2.0.1"), policies=policies)


def warnings_for(profile: NodeProfile, state: FleetState) -> list[MutableMapping[str, Any]]:
    publisher = Publisher(state)
    with capture_logs() as logs:
        publisher.cache.get(profile)
    return [e for e in logs if e["event"] == "node_without_locality"]


def test_serve_warns_when_a_node_without_locality_shares_a_tier_across_regions() -> None:
    [event] = warnings_for(NOWHERE, two_regions())
    assert event["log_level"] == "warning"
    assert event["regions"] == ["r1", "r2"]
    assert event["profile"] == "gateway ns/gw"


def test_explicit_tiers_or_a_located_node_need_no_warning() -> None:
    tiers = policy("tiers", failover=Failover(tiers=(("east",), ("far",))))
    assert warnings_for(NOWHERE, two_regions(tiers)) == []
    assert warnings_for(AT_GATEWAY, two_regions()) == []


def test_bootstrap_warns_on_stderr_and_keeps_stdout_a_bootstrap() -> None:
    result = CliRunner().invoke(app, ["bootstrap", "--gateway", "default/demo"])
    assert result.exit_code == 0
    assert "has no locality" in result.stderr
    assert result.stdout.startswith("node:")

    located = CliRunner().invoke(app, ["bootstrap", "--gateway", "default/demo", "--zone", "z"])
    assert located.stderr == ""
