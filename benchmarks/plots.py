"""PNG plots for docs/: figures drawn from what the measures return, nothing measured here.

matplotlib is imported lazily and with the Agg backend, so that measures which do not plot
never pay for it and no display is ever needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class _Convergence(Protocol):
    @property
    def last_p50(self) -> float: ...
    @property
    def last_p99(self) -> float: ...


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def convergence(figures: Mapping[int, tuple[_Convergence, _Convergence]], path: Path) -> None:
    """Last-ACK p50 and p99 against the number of streams, ours and the floor."""
    plt = _pyplot()
    counts = sorted(figures)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for index, (name, color) in enumerate(
        (("xdsfleet", "tab:blue"), ("floor (bare gRPC)", "tab:gray"))
    ):
        for quantile, style in (("last_p50", "-o"), ("last_p99", "--^")):
            values = [getattr(figures[n][index], quantile) * 1000 for n in counts]
            label = f"{name} {quantile.removeprefix('last_')}"
            ax.plot(counts, values, style, color=color, label=label)
    ax.set_xlabel("connected streams (N)")
    ax.set_ylabel("change -> last stream ACKed (ms)")
    ax.set_title("Convergence of one endpoint change")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def translate(
    series: Mapping[str, Sequence[tuple[int, float]]], target_ms: float, path: Path
) -> None:
    """CPU per single endpoint change against the fleet's endpoints, log-log, with the target."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, points), marker in zip(series.items(), "osd^v", strict=False):
        xs = [e for e, _ in points]
        ax.plot(xs, [seconds * 1000 for _, seconds in points], f"-{marker}", label=name)
    ax.axhline(target_ms, color="tab:red", linestyle=":", label=f"target {target_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("endpoints in the fleet (E)")
    ax.set_ylabel("CPU per endpoint change (ms)")
    ax.set_title("Translation + encode for 12 profiles, one endpoint changed")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
