"""What a fault did to the traffic, from the recorded requests: failures, the disruption window,
latency while it lasted, and how soon traffic came back. Pure: samples in, figures out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xdsfleet.tools.drill.load import Sample

# A request slower than this counts as disrupted, as a failed one does.
SLOW_S = 1.0


@dataclass(frozen=True, slots=True)
class Figures:
    requests: int
    failed: int
    # From the fault to the end of the last request that failed or took over SLOW_S; 0 if none.
    window_s: float
    # Latency of the requests started while the fault lasted (fault to restore, or to the end).
    p99_ms: float
    # From the restore to the first answer by a faulted member; None: not restored, or no answer.
    returned_s: float | None
    answered_by: dict[str, int]  # member -> requests answered, over the whole run


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def figures(
    samples: Iterable[Sample],
    *,
    fault_at: float,
    restore_at: float | None,
    members: Iterable[str],
) -> Figures:
    samples = list(samples)
    faulted = set(members)
    bad_ends = [
        s.start + s.latency
        for s in samples
        if (not s.ok or s.latency > SLOW_S) and s.start + s.latency >= fault_at
    ]
    window = max(bad_ends) - fault_at if bad_ends else 0.0
    end = restore_at if restore_at is not None else float("inf")
    during = [s.latency for s in samples if fault_at <= s.start < end]
    returned = None
    if restore_at is not None:
        back = [
            s.start + s.latency for s in samples if s.start >= restore_at and s.member in faulted
        ]
        returned = min(back) - restore_at if back else None
    return Figures(
        requests=len(samples),
        failed=sum(not s.ok for s in samples),
        window_s=window,
        p99_ms=percentile(during, 0.99) * 1000,
        returned_s=returned,
        answered_by=dict(Counter(s.member for s in samples if s.ok)),
    )


def answering(samples: Iterable[Sample], since: float, until: float = float("inf")) -> set[str]:
    """The members that answered requests started in [since, until)."""
    return {s.member for s in samples if s.ok and since <= s.start < until}
