"""What the status writer and the debug pages say about the fleet's Kubernetes members."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemberReport:
    """A Kubernetes member as `/debug/members` (and the Fleet resource's status) shows it."""

    name: str
    source: str
    stale: bool
    settled: bool
    problem: str
    failures: dict[str, str]
    services: int
    endpoints: int
    stale_since: float | None = None  # Unix seconds: since when it has been stale

    @property
    def message(self) -> str:
        """Why it is stale, in one line."""
        reasons = [self.problem] if self.problem else []
        reasons += [f"{resource}: {error}" for resource, error in sorted(self.failures.items())]
        return "; ".join(reasons)
