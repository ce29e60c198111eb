"""Convergence: one endpoint change -> the last subscribed stream's ACK, ours beside the floor.

For each client count, our server and the floor each get their own client process (the same mix
of SotW and Delta, sidecars and gateways over six localities) and take the plan's changes in
turns. Convergence of a change is its last ACK; the per-stream ACK latencies are reported too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from benchmarks import plan, plots, report, run, targets
from benchmarks.report import Section, Verdict, ms, rank

TARGET_RATIO = 1.3  # issue 10: steady-state convergence <= 1.3x the floor
TARGET_CLIENTS = 1_000
PLOT = run.ROOT / "docs" / "bench-convergence.png"


def _ours(servers: Sequence[targets.Target]) -> targets.Ours:
    ours = servers[0]
    assert isinstance(ours, targets.Ours)
    return ours


@dataclass(frozen=True, slots=True)
class Options:
    clients: Sequence[int] = (100, 1_000, 2_000)
    changes: int = 30
    plot: bool = True


@dataclass(frozen=True, slots=True)
class Figures:
    """One path at one client count, in seconds."""

    last_p50: float
    last_p99: float
    ack_p50: float
    ack_p99: float
    cpu: float
    cores: float  # CPU over the time to converge, summed over the changes

    @classmethod
    def of(cls, measured: run.Measurement) -> Figures:
        return cls(
            last_p50=rank(measured.last, 0.50),
            last_p99=rank(measured.last, 0.99),
            ack_p50=rank(measured.acks, 0.50),
            ack_p99=rank(measured.acks, 0.99),
            cpu=report.mean(measured.cpu),
            cores=sum(measured.cpu) / max(sum(measured.last), 1e-9),
        )


async def measure(options: Options) -> Section:
    changes = plan.plan(options.changes)
    rows: list[tuple[str, ...]] = []
    figures: dict[int, tuple[Figures, Figures]] = {}
    loop_lags: list[float] = []
    for count in options.clients:
        ours, floor = await run.paired(
            [targets.ours(changes), targets.floor(changes)],
            [run.Clients(count), run.Clients(count)],
            options.changes,
            starting=lambda servers: _ours(servers).serving.lag.reset(),
            inspect=lambda servers: loop_lags.append(_ours(servers).serving.lag.largest),
        )
        pair = figures[count] = (Figures.of(ours), Figures.of(floor))
        ratio = pair[0].last_p50 / pair[1].last_p50
        for name, f, note, lag in (
            ("xdsfleet", pair[0], f"{ratio:.2f}x", ms(loop_lags[-1])),
            ("floor", pair[1], "", "(same loop)"),
        ):
            rows.append(
                (
                    f"{count:,}",
                    name,
                    ms(f.last_p50),
                    ms(f.last_p99),
                    ms(f.ack_p50),
                    ms(f.ack_p99),
                    ms(f.cpu),
                    f"{f.cores:.2f}",
                    lag,
                    note,
                )
            )
    verdicts = []
    if TARGET_CLIENTS in figures:
        ours_f, floor_f = figures[TARGET_CLIENTS]
        ratio = ours_f.last_p50 / floor_f.last_p50
        verdicts.append(
            Verdict(
                f"N=1,000, one endpoint change: convergence p50 <= {TARGET_RATIO}x floor",
                f"{ms(ours_f.last_p50)} ms vs floor {ms(floor_f.last_p50)} ms = {ratio:.2f}x",
                ratio <= TARGET_RATIO,
            )
        )
    if options.plot and len(figures) > 1:
        plots.convergence(figures, PLOT)
    shape = changes.shape.describe()
    return Section(
        measure="convergence",
        title=f"Convergence, ms: one endpoint change ({options.changes} per N; fleet {shape})",
        columns=(
            "N",
            "path",
            "last ACK p50",
            "last ACK p99",
            "stream p50",
            "stream p99",
            "server CPU/change",
            "cores",
            "loop lag max",
            "p50 / floor",
        ),
        rows=rows,
        notes=(
            "last ACK: per change, the time until the last subscribed stream ACKed it.",
            "stream: every stream's ACK latency, over all streams and changes.",
            "server CPU: this process's CPU time per change (all threads), until it read every",
            "ACK. xdsfleet is driven at Publisher.publish (translation of 12 profiles included),",
            "without the coalescing delay. floor: bare grpc.aio writing the same bytes.",
            "cores: that CPU over the time to the last ACK. loop lag: the largest event-loop lag",
            "over the changes (both servers share the process's loop, as the measure pairs them).",
            run.setting(),
        ),
        verdicts=tuple(verdicts),
        data={
            "placement": run.placement(),
            **{
                str(n): {"xdsfleet": asdict(a), "floor": asdict(b), "loop_lag_max": lag}
                for (n, (a, b)), lag in zip(figures.items(), loop_lags, strict=True)
            },
        },
    )
