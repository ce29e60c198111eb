"""Envoy's priority and locality arithmetic (`tools/loads.py`), checked against the examples of
Envoy's architecture overview ("Priority levels", "Panic threshold") and against the rules
themselves over a grid of healths."""

from __future__ import annotations

import itertools

import pytest

from xdsfleet.tools.loads import Locality, loads


def two_tiers(p0_healthy: int, p1_healthy: int = 100) -> list[Locality]:
    """Two priorities of 100 hosts each, with that many healthy."""
    return [Locality(0, 1, 100, p0_healthy), Locality(1, 1, 100, p1_healthy)]


@pytest.mark.parametrize(
    ("healthy", "to_p0"),
    # "Priority levels": P=1 fully healthy; P=0's health x 1.4, capped at 100.
    [(100, 100), (72, 100), (71, 99), (50, 70), (25, 35), (0, 0)],
)
def test_the_first_tier_keeps_its_health_times_the_overprovisioning_factor(
    healthy: int, to_p0: int
) -> None:
    found = loads(two_tiers(healthy))
    assert found.priority_load == (to_p0, 100 - to_p0)
    assert found.panic == (False, False)


@pytest.mark.parametrize(
    ("p0", "p1", "load", "panic"),
    [
        # "Panic threshold": once both tiers together fall below 100 %, loads are normalized
        # and a tier under the threshold (50 %) is in panic.
        (72, 72, (100, 0), (False, False)),
        (71, 71, (99, 1), (False, False)),
        # (The overview's table says 50/50 here; Envoy's code: 70 + 84 >= 100, so 70/30.)
        (50, 60, (70, 30), (False, False)),
        (25, 25, (50, 50), (True, True)),
        # The overview's table says 7/93; Envoy's code gives the rounding remainder to the
        # first tier with health (7 x 100 / 98 = 7, 91 x 100 / 98 = 92, 1 left).
        (5, 65, (8, 92), (True, False)),
    ],
)
def test_below_total_health_loads_are_normalized_and_sick_tiers_panic(
    p0: int, p1: int, load: tuple[int, int], panic: tuple[bool, bool]
) -> None:
    found = loads(two_tiers(p0, p1))
    assert (found.priority_load, found.panic) == (load, panic)


def test_a_tier_in_panic_spreads_over_all_its_hosts_whatever_their_health() -> None:
    # P0: 5 % healthy, in panic: its 8 % goes to both localities by host count, sick or not.
    found = loads(
        [Locality(0, 1000, 50, 5), Locality(0, 1, 50, 0), Locality(1, 1, 100, 65)],
    )
    assert found.shares == pytest.approx((0.04, 0.04, 0.92))


def test_when_every_tier_panics_load_follows_the_host_counts() -> None:
    found = loads([Locality(0, 1, 3, 0), Locality(1, 1, 1, 0)])
    assert found.priority_load == (75, 25)
    assert found.panic == (True, True)
    assert found.shares == pytest.approx((0.75, 0.25))


def test_with_panic_disabled_and_nothing_healthy_nothing_is_served() -> None:
    found = loads([Locality(0, 1, 3, 0)], panic_threshold=0)
    assert not found.served


def test_localities_share_a_tier_by_weight_times_their_overprovisioned_health() -> None:
    # Equal weights; 2 of 4 healthy x 1.4 = 70 % of a full locality.
    found = loads([Locality(0, 10, 4, 4), Locality(0, 10, 4, 2)])
    assert found.shares == pytest.approx((1 / 1.7, 0.7 / 1.7))


def test_a_configured_overprovisioning_factor_applies_to_tiers_and_localities() -> None:
    found = loads(two_tiers(80), overprovisioning=100)
    assert found.priority_load == (80, 20)


def test_draining_hosts_are_excluded_from_health() -> None:
    # 2 healthy of 2 counted (the third drains): the tier is whole.
    found = loads([Locality(0, 1, 3, 2, excluded=1), Locality(1, 1, 1, 1)])
    assert found.priority_load == (100, 0)


def test_without_locality_weighting_healthy_hosts_share_a_tier_evenly() -> None:
    found = loads([Locality(0, 100, 2, 2), Locality(0, 1, 2, 2)], locality_weighted=False)
    assert found.shares == pytest.approx((0.5, 0.5))


def test_every_request_goes_somewhere_exactly_once_and_never_to_a_failed_host() -> None:
    # Every health of two tiers of 4 hosts and one of 2, under several factors and thresholds.
    for p0, p1, p2, factor, threshold in itertools.product(
        range(5), range(5), range(3), (100, 140, 200), (0, 50, 100)
    ):
        found = [Locality(0, 3, 4, p0), Locality(1, 2, 4, p1), Locality(2, 1, 2, p2)]
        result = loads(found, overprovisioning=factor, panic_threshold=threshold)
        assert sum(result.priority_load) == 100
        if result.served:
            assert sum(result.shares) == pytest.approx(1.0)
        else:
            assert (p0, p1, p2, threshold) == (0, 0, 0, 0)
        for loc, share in zip(found, result.shares, strict=True):
            if loc.healthy == 0 and not result.panic[loc.priority]:
                assert share == 0
