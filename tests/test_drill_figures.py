"""The drill's figures from recorded requests: what counts as failed, the disruption window,
p99 while the fault lasted, and when traffic came back."""

from __future__ import annotations

import pytest

from xdsfleet.tools.drill.figures import answering, figures
from xdsfleet.tools.drill.load import Sample


def ok(start: float, member: str, latency: float = 0.01) -> Sample:
    return Sample(start, latency, 200, member)


def test_a_clean_failover_has_no_window_and_reports_when_traffic_came_back() -> None:
    samples = [ok(0.0, "a"), ok(0.5, "b"), ok(1.0, "a"), ok(1.5, "a"), ok(2.5, "b")]
    found = figures(samples, fault_at=0.9, restore_at=2.0, members=["b"])

    assert (found.requests, found.failed, found.window_s) == (5, 0, 0.0)
    assert found.returned_s == pytest.approx(0.51)
    assert found.answered_by == {"a": 3, "b": 2}


def test_the_window_ends_with_the_last_request_that_failed_or_was_slow() -> None:
    samples = [
        ok(0.0, "a"),
        Sample(1.0, 0.2, 503, ""),  # failed, ends at 1.2
        ok(1.1, "a", latency=1.5),  # slow, ends at 2.6
        ok(1.2, "a"),
    ]
    found = figures(samples, fault_at=1.0, restore_at=None, members=["b"])

    assert found.failed == 1
    assert found.window_s == pytest.approx(1.6)
    assert found.returned_s is None


def test_p99_counts_only_requests_started_while_the_fault_lasted() -> None:
    before = [ok(0.01 * i, "a", latency=2.0) for i in range(50)]
    during = [ok(1.0 + 0.01 * i, "a", latency=0.1) for i in range(100)]
    after = [ok(3.0 + 0.01 * i, "a", latency=3.0) for i in range(50)]
    found = figures(before + during + after, fault_at=1.0, restore_at=2.0, members=["b"])

    assert found.p99_ms == pytest.approx(100)


def test_answering_lists_members_by_request_start() -> None:
    samples = [ok(0.0, "a"), ok(1.0, "b"), Sample(1.5, 0.1, 0, ""), ok(2.0, "c")]
    assert answering(samples, 0.5) == {"b", "c"}
    assert answering(samples, 0.0, 1.0) == {"a"}
