"""A profile whose snapshot cannot be built is never served an empty one; a node naming a
gateway the fleet lacks is told apart from one that simply has nothing to serve."""

from __future__ import annotations

from typing import Any

import pytest
from states import AT_GATEWAY, EAST, NS, fleet, running
from structlog.testing import capture_logs

from xdsfleet.cache.cache import NoSnapshot
from xdsfleet.cache.typeurls import LISTENER
from xdsfleet.model.node import NodeProfile
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.translate.snapshot import DestinationTable

STATE = fleet(running(EAST, "10.0.0.1"))


def test_a_first_build_that_fails_gives_no_snapshot_then_the_next_good_one_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(*args: Any) -> Any:
        raise RuntimeError("translation bug")

    monkeypatch.setattr(DestinationTable, "plan", failing)
    publisher = Publisher(STATE)
    stop = publisher.cache.watch(AT_GATEWAY, lambda: None)
    with capture_logs() as logs, pytest.raises(NoSnapshot):
        publisher.cache.get(AT_GATEWAY)
    assert [e["event"] for e in logs] == ["snapshot_build_failed"]
    # Fixed (or the input changed): the next publish builds it, and it is served.
    monkeypatch.undo()
    publisher.publish(fleet(running(EAST, "10.0.0.2")))
    assert publisher.cache.get(AT_GATEWAY).of(LISTENER)
    stop()


def test_only_a_gateway_the_fleet_lacks_is_a_node_problem() -> None:
    publisher = Publisher(STATE)
    assert publisher.node_problem(AT_GATEWAY) is None
    assert publisher.node_problem(NodeProfile()) is None
    missing = NodeProfile(gateway=f"{NS}/nope")
    assert publisher.node_problem(missing) == (
        f"gateway {NS}/nope is not in the fleet: its listeners are empty"
    )
