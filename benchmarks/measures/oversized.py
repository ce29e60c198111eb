"""An oversized client: one client whose EDS requests name 100,000 clusters that do not exist,
again every 1.4 s, among a thousand that behave.

Answering such a request (placeholder assignments, rule 15) once took the loop about a second,
during which every other stream waited; the server now refuses it (`RESOURCE_EXHAUSTED`,
`server/ads.py` `Limits`) before it costs anything. Two copies of our server take the same
changes in turns, one with the oversized client and one without; the figure is how much it moves
the others' p99.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks import plan, run, targets
from benchmarks.report import LATENCY_COLUMNS, Section, Verdict, latency_rows, ms

TARGET_SHIFT = 0.20


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = 1_000
    changes: int = 30


async def measure(options: Options) -> Section:
    changes = plan.plan(options.changes)
    others = options.clients - 1
    without, with_oversized = await run.paired(
        [targets.ours(changes), targets.ours(changes)],
        [run.Clients(others), run.Clients(others, oversized=1)],
        options.changes,
    )
    rows, p99 = latency_rows(
        [
            ("without", without.acks, without.last),
            ("with one oversized", with_oversized.acks, with_oversized.last),
        ]
    )
    shift = p99["with one oversized"] / p99["without"] - 1
    return Section(
        measure="oversized",
        title=(f"One oversized client among {options.clients:,}: the other {others:,} streams, ms"),
        columns=LATENCY_COLUMNS,
        rows=rows,
        notes=(
            "The oversized client asks for 100,000 unknown clusters on a new stream every 1.4 s.",
            "Both runs are our server, in turns, with the same changes.",
        ),
        verdicts=(
            Verdict(
                f"an oversized client moves the others' p99 by < {TARGET_SHIFT:.0%}",
                f"p99 {ms(p99['without'])} -> {ms(p99['with one oversized'])} ms ({shift:+.0%})",
                abs(shift) < TARGET_SHIFT,
            ),
        ),
        data={"p99_without": p99["without"], "p99_with": p99["with one oversized"], "shift": shift},
    )
