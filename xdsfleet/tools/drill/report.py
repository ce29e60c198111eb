"""The figures of one or more faults as a rich table, the same in `xdsfleet drill`, `make
bench-dr` and `make demo`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.table import Table

from xdsfleet.tools.drill.figures import SLOW_S, Figures


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    fault: str
    figures: Figures


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def table(rows: Iterable[Row], *, title: str = "Failover") -> Table:
    built = Table(title=title, title_justify="left")
    for column in ("scenario", "fault"):
        built.add_column(column)
    for column in ("requests", "failed", "disruption", "p99 during", "back after", "answered by"):
        built.add_column(column, justify="left" if column == "answered by" else "right")
    for row in rows:
        f = row.figures
        failed = f"[red]{f.failed}[/red]" if f.failed else "0"
        shares = ", ".join(f"{m} {n}" for m, n in sorted(f.answered_by.items()))
        built.add_row(
            row.scenario,
            row.fault,
            str(f.requests),
            failed,
            seconds(f.window_s),
            f"{f.p99_ms:.0f} ms",
            seconds(f.returned_s),
            shares,
        )
    built.caption = (
        f"disruption: from the fault to the end of the last request that failed or took over "
        f"{SLOW_S:g} s; p99 during: requests started while the fault lasted; back after: from "
        "the restore to the first answer by a faulted member"
    )
    return built
