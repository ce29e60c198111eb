"""`python -m benchmarks [MEASURE ...]`: run measures, print their tables and the targets.

Measures: convergence, translate, coldstart, kubestart, kubeloss, rss, churn, stall, oversized,
or `all`. Without one, the default set runs (all but oversized, kubestart and kubeloss: what
fits in about ten minutes on a 2-core machine; see BENCHMARKS.md for the figure each command
produced). `--quick` runs every measure at toy sizes: the smoke test. Sizes can be overridden:
`--clients` (convergence: a list; kubeloss: its streams), `--endpoints` (the fleet of
coldstart, kubestart, rss and churn: 50 members, E/100 services), `--changes`, `--seconds`
(churn). `--no-member-loss` varies the churn measure. `--nice N` runs the load generators (the
client processes of convergence, rss, churn, stall and oversized, churn's event generator, the
emulated API servers and the outside probe of kubestart and kubeloss) at niceness N, as if on
other hosts; the default 0 leaves them the server's equals. `--cpus LIST` (e.g. `--cpus 0`)
places the measured servers, ours and the floor alike, on those CPUs and the load generators
on the others. Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace

from rich.console import Console

from benchmarks import report, run
from benchmarks.fleet import Shape
from benchmarks.measures import (
    churn,
    coldstart,
    convergence,
    kubeloss,
    kubestart,
    oversized,
    rss,
    stall,
    translate,
)
from xdsfleet.telemetry import logs

MEASURES = (
    "convergence",
    "translate",
    "coldstart",
    "kubestart",
    "kubeloss",
    "rss",
    "churn",
    "stall",
    "oversized",
)
# Not kubestart, kubeloss (50 and 20 API servers, a real `serve`) nor oversized.
DEFAULT = ("convergence", "translate", "coldstart", "rss", "churn", "stall")
QUICK_SHAPE = Shape(members=6, services=10, endpoints=120)
MEMBERS = 50
ENDPOINTS_PER_SERVICE = 100


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "measures", nargs="*", metavar="MEASURE", help=f"{', '.join(MEASURES)} or all"
    )
    parser.add_argument("--quick", action="store_true", help="every measure at toy sizes")
    parser.add_argument("--clients", type=int, nargs="+", help="stream counts")
    parser.add_argument(
        "--endpoints", type=int, help="E of the coldstart, kubestart, rss and churn fleets"
    )
    parser.add_argument("--changes", type=int, help="changes per convergence/stall/translate run")
    parser.add_argument("--seconds", type=float, help="churn: length of the measured window")
    parser.add_argument(
        "--no-member-loss", action="store_true", help="churn: no member lost and restored"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="niceness of the load generators (clients, churn events); default 0",
    )
    parser.add_argument(
        "--cpus",
        type=_cpus,
        metavar="LIST",
        help="CPUs of the measured servers (e.g. 0 or 0,1); the load generators get the rest",
    )
    args = parser.parse_args()
    unknown = set(args.measures) - {*MEASURES, "all"}
    if unknown:
        parser.error(f"unknown measure(s): {', '.join(sorted(unknown))}")
    chosen = args.measures or (["all"] if args.quick else list(DEFAULT))
    args.measures = list(MEASURES) if "all" in chosen else list(dict.fromkeys(chosen))
    return args


def _cpus(text: str) -> frozenset[int]:
    try:
        return frozenset(int(cpu) for cpu in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU numbers: {text!r}") from None


def _shape(endpoints: int) -> Shape:
    return Shape(MEMBERS, max(1, endpoints // ENDPOINTS_PER_SERVICE), endpoints)


def _runners(args: argparse.Namespace) -> dict[str, Callable[[], Awaitable[report.Section]]]:
    """Each measure's options: the defaults, `--quick`'s toy sizes, then explicit overrides."""
    conv, trans, cold = convergence.Options(), translate.Options(), coldstart.Options()
    mem, sustained, stalled = rss.Options(), churn.Options(), stall.Options()
    hostile, kube = oversized.Options(), kubestart.Options()
    probe = kubeloss.Options()
    if args.quick:
        conv = convergence.Options(clients=(24,), changes=3, plot=False)
        trans = translate.Options(sizes=(1_000,), fixed_sizes=(), changes=3, plot=False)
        cold = coldstart.Options(shape=QUICK_SHAPE)
        mem = rss.Options(clients=24, shape=QUICK_SHAPE)
        sustained = churn.Options(
            clients=24, shape=QUICK_SHAPE, seconds=1, warmup=0.2, per_minute=6
        )
        stalled = stall.Options(clients=24, changes=3, blocked_seconds=0.2)
        hostile = oversized.Options(clients=24, changes=3)
        kube = kubestart.Options(shape=QUICK_SHAPE)
        probe = kubeloss.Options(shape=QUICK_SHAPE, streams=24)
    if args.clients:
        conv = replace(conv, clients=tuple(args.clients))
        mem = replace(mem, clients=args.clients[-1])
        sustained = replace(sustained, clients=args.clients[-1])
        stalled = replace(stalled, clients=args.clients[-1])
        hostile = replace(hostile, clients=args.clients[-1])
        probe = replace(probe, streams=args.clients[-1])
    if args.endpoints:
        shape = _shape(args.endpoints)
        cold, mem, sustained, kube = (
            replace(cold, shape=shape),
            replace(mem, shape=shape),
            replace(sustained, shape=shape),
            replace(kube, shape=shape),
        )
    if args.changes:
        conv, trans = replace(conv, changes=args.changes), replace(trans, changes=args.changes)
        stalled = replace(stalled, changes=args.changes)
        hostile = replace(hostile, changes=args.changes)
    if args.seconds:
        sustained = replace(sustained, seconds=args.seconds)
    if args.no_member_loss:
        sustained = replace(sustained, lose_member=False)

    async def synchronous(fn: Callable[[], report.Section]) -> report.Section:
        return fn()

    return {
        "convergence": lambda: convergence.measure(conv),
        "translate": lambda: synchronous(lambda: translate.measure(trans)),
        "coldstart": lambda: synchronous(lambda: coldstart.measure(cold)),
        "kubestart": lambda: synchronous(lambda: kubestart.measure(kube)),
        "kubeloss": lambda: synchronous(lambda: kubeloss.measure(probe)),
        "rss": lambda: rss.measure(mem),
        "churn": lambda: churn.measure(sustained),
        "stall": lambda: stall.measure(stalled),
        "oversized": lambda: oversized.measure(hostile),
    }


async def _bench(args: argparse.Namespace, progress: Console) -> list[report.Section]:
    runners = _runners(args)
    sections = []
    for name in args.measures:
        progress.print(f"[bold]{name}[/bold] ...")
        sections.append(await runners[name]())
    return sections


def main() -> None:
    args = _arguments()
    run.NICE = args.nice
    try:
        if args.cpus is not None:
            # Before any thread of gRPC's starts: they inherit it.
            run.place(args.cpus)
    except run.BenchError as err:
        sys.exit(f"benchmark failed: {err}")
    # Stream open/close events at info level would flood the output; warnings still show.
    logs.configure(fmt="console", level="warning")
    try:
        sections = asyncio.run(_bench(args, Console(stderr=True)))
    except run.BenchError as err:
        sys.exit(f"benchmark failed: {err}")
    command = " ".join(["python -m benchmarks", *sys.argv[1:]])
    results = report.QUICK_RESULTS if args.quick else report.RESULTS
    report.render(sections, Console(width=120), command=command, results=results)


if __name__ == "__main__":
    main()
