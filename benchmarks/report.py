"""Figures as tables: one section per measure, then every target met or missed.

Measures hand back `Section`s and know nothing of rich; this module knows nothing of how the
figures were obtained. The raw figures also go to `.bench/results.json` (git-ignored), so that
BENCHMARKS.md can be written from the very numbers a run printed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent.parent / ".bench" / "results.json"
# The smoke test's toy run must not overwrite a real run's figures.
QUICK_RESULTS = RESULTS.with_name("results-quick.json")


def rank(values: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile: always a measured value, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


LATENCY_COLUMNS = ("run", "stream p50", "stream p99", "last ACK p50", "last ACK p99")


def latency_rows(
    runs: Sequence[tuple[str, Sequence[float], Sequence[float]]],
) -> tuple[list[tuple[str, ...]], dict[str, float]]:
    """One `LATENCY_COLUMNS` row per named run (its per-stream ACK latencies and its per-change
    last ACKs), and each run's stream p99, for the measures that compare a run with a
    misbehaving client against one without."""
    rows: list[tuple[str, ...]] = []
    p99 = {}
    for name, acks, last in runs:
        p99[name] = rank(acks, 0.99)
        rows.append(
            (name, ms(rank(acks, 0.50)), ms(p99[name]), ms(rank(last, 0.50)), ms(rank(last, 0.99)))
        )
    return rows, p99


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str  # what was promised, in words
    figure: str  # what was measured, in words
    met: bool


@dataclass(frozen=True, slots=True)
class Section:
    measure: str  # the CLI selector that produces it
    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    notes: tuple[str, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


def table(section: Section) -> Table:
    out = Table(title=section.title, title_justify="left")
    for i, header in enumerate(section.columns):
        out.add_column(header, justify="left" if i == 0 else "right")
    for row in section.rows:
        out.add_row(*row)
    return out


def verdicts(sections: Sequence[Section]) -> Table:
    out = Table(title="Targets", title_justify="left")
    for header in ("measure", "target", "measured", "verdict"):
        out.add_column(header)
    for section in sections:
        for v in section.verdicts:
            out.add_row(section.measure, v.target, v.figure, "met" if v.met else "MISSED")
    return out


def render(sections: Sequence[Section], console: Console, *, command: str, results: Path) -> None:
    for section in sections:
        console.print(table(section))
        for note in section.notes:
            console.print(f"  {note}")
        console.print()
    if any(s.verdicts for s in sections):
        console.print(verdicts(sections))
    results.parent.mkdir(exist_ok=True)
    results.write_text(
        json.dumps({"command": command, "sections": [asdict(s) for s in sections]}, indent=1)
    )
