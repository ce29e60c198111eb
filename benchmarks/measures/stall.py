"""A stalled client: one stream that never reads, among a thousand that do.

Two copies of our server take the same changes in turns: one with N - 1 streams, one with the
same N - 1 plus one stream that subscribes to everything and never reads. The figure is how much
the stalled stream moves the others' p99 (xds-protocol rule 23: a slow client must not stall the
update path). The two servers share the translation memos; taking turns in alternating order
gives each the cheaper second translation half of the time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks import plan, run, targets
from benchmarks.report import LATENCY_COLUMNS, Section, Verdict, latency_rows, ms
from benchmarks.targets import Target

TARGET_SHIFT = 0.20


@dataclass(frozen=True, slots=True)
class Options:
    clients: int = 1_000
    changes: int = 30
    # How long the stalled stream's writer must have waited before the first change: a second
    # is no write under way, it is flow control holding it.
    blocked_seconds: float = 1.0


@dataclass(slots=True)
class _Blocked:
    """How long the stalled stream has been stalled: its writer waiting on flow control, or
    (since xds-protocol rule 26) every response it was sent left unanswered, after which nothing
    more is written to it. The measurement only starts once it has been for `enough` seconds,
    and it should still be at the end."""

    enough: float
    seconds: float | None = None
    how: str = ""
    silent_since: float | None = None

    def ready(self, servers: Sequence[Target]) -> bool:
        self.inspect(servers)
        return self.seconds is not None and self.seconds >= self.enough

    def inspect(self, servers: Sequence[Target]) -> None:
        with_stall = servers[1]
        assert isinstance(with_stall, targets.Ours)
        now = time.monotonic()  # the loop's clock: asyncio uses time.monotonic
        streams = list(with_stall.serving.ads.streams.values())
        waits = [now - i.writing_since for i in streams if i.writing_since is not None]
        if waits:
            self.seconds, self.how = max(waits), "blocked on flow control"
            return
        silent = any(
            statuses and all(s.responses and not s.acks and not s.nacks for s in statuses)
            for statuses in (list(i.machine.status().values()) for i in streams)
        )
        if not silent:
            self.seconds = self.silent_since = None
            return
        self.silent_since = self.silent_since or now
        self.seconds, self.how = now - self.silent_since, "sent its responses, answering none"


async def measure(options: Options) -> Section:
    changes = plan.plan(options.changes)
    others = options.clients - 1
    blocked = _Blocked(options.blocked_seconds)
    without, with_stall = await run.paired(
        [targets.ours(changes), targets.ours(changes)],
        [
            run.Clients(others),
            run.Clients(others, stalled=1, services=changes.shape.services),
        ],
        options.changes,
        ready=blocked.ready,
        inspect=blocked.inspect,
    )
    rows, p99 = latency_rows(
        [
            ("without", without.acks, without.last),
            ("with one stalled", with_stall.acks, with_stall.last),
        ]
    )
    shift = p99["with one stalled"] / p99["without"] - 1
    return Section(
        measure="stall",
        title=f"One stalled stream among {options.clients:,}: the other {others:,} streams, ms",
        columns=LATENCY_COLUMNS,
        rows=rows,
        notes=(
            f"The stalled stream was {blocked.how or 'stalled'} before the first change, and at"
            f" the end had been for {blocked.seconds or 0:.1f} s.",
            "Both runs are our server, in turns, with the same changes.",
        ),
        verdicts=(
            Verdict(
                f"a stalled client moves the others' p99 by < {TARGET_SHIFT:.0%}",
                f"p99 {ms(p99['without'])} -> {ms(p99['with one stalled'])} ms ({shift:+.0%})",
                abs(shift) < TARGET_SHIFT,
            ),
        ),
        data={"p99_without": p99["without"], "p99_with": p99["with one stalled"], "shift": shift},
    )
