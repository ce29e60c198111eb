"""Figures from convergence samples, and the table `make bench` prints."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from rich.table import Table

from benchmarks.run import Measurement

# Our serving path may cost at most this much more than gRPC alone, at the median.
TARGET_RATIO = 1.5


@dataclass(frozen=True, slots=True)
class Figures:
    """One path at one client count, in seconds: convergence over every client and change, and
    the server's mean CPU time per change."""

    p50: float
    p99: float
    max: float
    cpu: float

    @classmethod
    def of(cls, measurement: Measurement) -> Figures:
        ordered = sorted(measurement.convergence)
        return cls(
            p50=_rank(ordered, 0.50),
            p99=_rank(ordered, 0.99),
            max=ordered[-1],
            cpu=statistics.fmean(measurement.cpu),
        )


def _rank(ordered: list[float], quantile: float) -> float:
    """Nearest-rank percentile: always a measured value, never an interpolation."""
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Row:
    clients: int
    server: Figures
    floor: Figures

    @property
    def ratio(self) -> float:
        return self.server.p50 / self.floor.p50


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


NOTES = (
    "p50, p99: over every client and change. max: the last ACK of any change.",
    "server CPU: the serving process's CPU time per change, until it read every ACK.",
    "server: xdsfleet driven at Publisher.publish, without the Store's coalescing",
    "delay (the serving path only). floor: bare gRPC writing the same response bytes.",
    f"Target: server p50 <= {TARGET_RATIO}x floor p50.",
)


def table(rows: list[Row], *, changes: int) -> Table:
    out = Table(title=f"Endpoint change -> ACK by every client, ms ({changes} changes per N)")
    for header in ("N", "path", "p50", "p99", "max", "server CPU", "p50 / floor p50"):
        out.add_column(header, justify="left" if header == "path" else "right")
    for row in rows:
        verdict = "ok" if row.ratio <= TARGET_RATIO else f"over {TARGET_RATIO}x"
        for name, figures, ratio in (
            ("server", row.server, f"{row.ratio:.2f}x {verdict}"),
            ("floor", row.floor, ""),
        ):
            out.add_row(
                f"{row.clients:,}",
                name,
                _ms(figures.p50),
                _ms(figures.p99),
                _ms(figures.max),
                _ms(figures.cpu),
                ratio,
            )
        out.add_section()
    return out
