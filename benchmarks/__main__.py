"""`python -m benchmarks`: measure convergence for each client count, ours beside the floor.

Options: `--quick` (20 clients, 3 changes: the smoke test), `--clients N [N ...]`,
`--changes K`. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console

from benchmarks import fleet, report, run
from xdsfleet import logs

DEFAULT_CLIENTS = [100, 1000]
DEFAULT_CHANGES = 50
QUICK_CLIENTS = [20]
QUICK_CHANGES = 3


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 clients, 3 changes")
    parser.add_argument("--clients", type=int, nargs="+", help="client counts to measure")
    parser.add_argument("--changes", type=int, help="endpoint changes per client count")
    args = parser.parse_args()
    args.clients = args.clients or (QUICK_CLIENTS if args.quick else DEFAULT_CLIENTS)
    args.changes = args.changes or (QUICK_CHANGES if args.quick else DEFAULT_CHANGES)
    return args


async def _bench(clients: list[int], changes: int) -> list[report.Row]:
    plan = fleet.plan(changes)
    progress = Console(stderr=True)
    rows = []
    for count in clients:
        progress.print(f"N={count:,}: {changes} changes, server and floor in turns")
        server, floor = await run.compare(plan, count)
        rows.append(report.Row(count, report.Figures.of(server), report.Figures.of(floor)))
    return rows


def main() -> None:
    args = _arguments()
    # Stream open/close events at info level would flood the output; warnings still show.
    logs.configure(fmt="console", level="warning")
    try:
        rows = asyncio.run(_bench(args.clients, args.changes))
    except run.BenchError as err:
        sys.exit(f"benchmark failed: {err}")
    console = Console()
    console.print(report.table(rows, changes=args.changes))
    console.print("\n".join(report.NOTES))


if __name__ == "__main__":
    main()
