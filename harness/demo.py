"""`make demo`: the built-in fleet under load through a real Envoy gateway, watched live while a
zone is killed, restored, hung and restored again.

Each member's pods are backends in a network namespace of their own (loopback addresses where
namespaces cannot be made), `xdsfleet serve` serves the built-in fleet with no TrafficPolicy, and
a load at a fixed rate goes through the gateway. The live view shows, over the last second, each
member's share, the success rate and p99; the summary shows the figures of each fault
(docs/failover.md). It needs no terminal input (without a terminal it prints the last view and
the summary), ends by itself, and exits non-zero if a request failed, if the shares before the
faults do not follow the replicas, or if the zone's traffic did not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from xdsfleet.sources.files import builtin_fleet_path
from xdsfleet.tools.drill.figures import answering, figures, percentile
from xdsfleet.tools.drill.load import Event, Mark, Sample, run_load
from xdsfleet.tools.drill.report import Row, table
from xdsfleet.tools.drill.rig import Rig
from xdsfleet.tools.drill.topology import Fault, Mode

GATEWAY = "default/demo"
HOST = "shop.example.com"
ZONE = "zone-b"
# Ready replicas: zone-a 2, zone-b 2, idc 1; a gateway with no locality shares by replicas.
EXPECTED = {"zone-a": 0.4, "zone-b": 0.4, "idc": 0.2}
# Shares are compared with this slack: a short window starts wherever the balancer stands.
TOLERANCE = 0.12
WINDOW_S = 1.0
# When things happen (s): a zone killed, restored, hung, restored; an ejection lasts 5 s, so
# each restore is followed by time for the traffic to come back.
KILL_AT, KILL_RESTORE_AT = 3.0, 6.0
HANG_AT, HANG_RESTORE_AT = 13.0, 16.0
SECONDS = 23.0

# Without a terminal (CI, a pipe) rich would assume 80 columns: too narrow for the summary.
console = Console(width=None if sys.stdout.isatty() else 140)


@dataclass(frozen=True)
class Phase:
    fault: Fault
    at: float
    restore_at: float


PHASES = (Phase(Fault.KILL, KILL_AT, KILL_RESTORE_AT), Phase(Fault.HANG, HANG_AT, HANG_RESTORE_AT))


def view(samples: Sequence[Sample], now: float, marks: Sequence[Mark], rate: float) -> Group:
    recent = [s for s in samples if s.start + s.latency >= now - WINDOW_S]
    ok = [s for s in recent if s.ok]
    shares = Counter(s.member for s in ok)
    members = Table(title=f"last {WINDOW_S:g} s at {now:5.1f} s", title_justify="left")
    members.add_column("member")
    members.add_column("share", justify="right")
    members.add_column("", min_width=30)
    for member in sorted(EXPECTED):
        share = shares[member] / len(ok) if ok else 0.0
        members.add_row(member, f"{share:4.0%}", "█" * round(share * 30))
    rate_ok = len(ok) / len(recent) if recent else 1.0
    p99 = percentile([s.latency for s in recent], 0.99) * 1000
    colour = "green" if rate_ok == 1 else "red"
    summary = Text.assemble(
        (f"success {rate_ok:.1%}", colour), f"   p99 {p99:.0f} ms   {rate:g} requests/s"
    )
    happened = Text(" · ".join(f"{m.at:.1f} s {m.label}" for m in marks if ":" not in m.label))
    return Group(members, summary, happened)


async def watch(rig: Rig, rate: float) -> tuple[list[Sample], list[Mark]]:
    target = rig.target(HOST)
    samples: list[Sample] = []
    events = []
    for phase in PHASES:
        events.append(
            Event(phase.at, f"{phase.fault} {ZONE}", partial(rig.inject, [ZONE], phase.fault))
        )
        events.append(Event(phase.restore_at, f"restore {ZONE}", partial(rig.restore, [ZONE])))
    marks: list[Mark] = []
    loop = asyncio.get_running_loop()
    began = loop.time()
    with Live(console=console, auto_refresh=False) as live:
        load = asyncio.ensure_future(
            run_load(target, rate=rate, seconds=SECONDS, events=events, on_sample=samples.append)
        )
        while not load.done():
            live.update(view(samples, loop.time() - began, marks, rate), refresh=True)
            await asyncio.wait([load], timeout=0.25)
        done, marks = load.result()
        live.update(view(done, SECONDS, marks, rate), refresh=True)
    return done, marks


def judge(samples: Sequence[Sample], marks: Sequence[Mark]) -> tuple[list[Row], list[str]]:
    faults = [m.at for m in marks if m.label in {f"{p.fault} {ZONE}" for p in PHASES}]
    restores = [m.at for m in marks if m.label == f"restore {ZONE}"]
    rows, problems = [], []
    before = [s for s in samples if s.ok and s.start < faults[0]]
    counts = Counter(s.member for s in before)
    for member, expected in EXPECTED.items():
        share = counts[member] / len(before) if before else 0.0
        if abs(share - expected) > TOLERANCE:
            problems.append(f"{member} took {share:.0%} before the faults, not ~{expected:.0%}")
    for index, phase in enumerate(PHASES):
        start, restore = faults[index], restores[index]
        end = faults[index + 1] if index + 1 < len(PHASES) else SECONDS
        window = [s for s in samples if start <= s.start < end]
        found = figures(window, fault_at=start, restore_at=restore, members=[ZONE])
        rows.append(Row(f"built-in fleet, {ZONE}", str(phase.fault), found))
        if found.failed:
            problems.append(f"{found.failed} requests failed during the {phase.fault} of {ZONE}")
        if ZONE not in answering(window, restore):
            problems.append(f"{ZONE} took no traffic back after the {phase.fault}")
    return rows, problems


def run(rate: float, namespaces: bool) -> bool:
    with Rig(builtin_fleet_path(), GATEWAY, namespaces=namespaces) as rig:
        where = str(rig.topology.mode)
        if rig.topology.mode is Mode.LOOPBACK:
            where += f" ({rig.topology.why_loopback})"
        console.print(
            f"xdsfleet serving the built-in fleet to an Envoy gateway; members in {where}. "
            f"{ZONE} is killed at {KILL_AT:g} s, restored at {KILL_RESTORE_AT:g} s, hung "
            f"(SIGSTOP) at {HANG_AT:g} s, restored at {HANG_RESTORE_AT:g} s."
        )
        rig.wait_serving(rig.target(HOST), EXPECTED)
        samples, marks = asyncio.run(watch(rig, rate))
    rows, problems = judge(samples, marks)
    console.print()
    console.print(table(rows, title="Summary"))
    for problem in problems:
        console.print(f"[red]✗[/red] {problem}")
    return not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__)
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument(
        "--loopback", action="store_true", help="members on loopback addresses, not namespaces"
    )
    args = parser.parse_args(argv)
    ok = run(args.rate, not args.loopback)
    console.print("[green]demo passed[/green]" if ok else "[red]demo failed[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
