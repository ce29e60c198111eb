"""Cold start: from the fleet's files on disk to the first snapshot of every active profile.

The generated fleet is written as manifests to a temporary directory; then a fresh interpreter
(translation memos start empty, as in a restarted server) times `load_fleet` (new files parsed
in worker processes, as `serve` does), the collector freeze `serve` makes before it serves, the
first publish for the twelve active profiles, and the framing of one stream's first responses.
Interpreter start-up and imports are left out: they do not grow with the fleet.

Run `python -m benchmarks.measures.coldstart FLEET_FILE [PARSE_CACHE_DIR]` to time a fleet on
disk by hand.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import fleet as generated
from benchmarks import manifests, proc, run
from benchmarks.fleet import FULL_SCALE, Shape
from benchmarks.report import Section, Verdict

TARGET_SECONDS = 3.0
CHILD_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Options:
    shape: Shape = FULL_SCALE


def measure(options: Options) -> Section:
    with tempfile.TemporaryDirectory(prefix="xdsfleet-bench-") as root:
        started = time.perf_counter()
        path = manifests.write(generated.Fleet(options.shape), Path(root) / "fleet")
        written = time.perf_counter() - started
        size = sum(f.stat().st_size for f in Path(root).rglob("*.yaml"))
        cache = Path(root) / "parse-cache"
        # First with an empty parse cache (every file parsed; the cache filled), then as a
        # restart finds the files: unchanged.
        cold = _run_child(path, cache)
        warm = _run_child(path, cache)
    for figures in (cold, warm):
        if figures["endpoints"] != options.shape.endpoints:
            raise run.BenchError(
                f"loaded {figures['endpoints']} endpoints, wrote {options.shape.endpoints}"
            )
    totals = [f["load"] + f["freeze"] + f["publish"] + f["frame"] for f in (cold, warm)]
    rows = [
        (
            "load_fleet (read, parse, validate, assemble)",
            *(f"{f['load']:.2f} ({f['load_cpu']:.2f})" for f in (cold, warm)),
        ),
        ("… CPU of the parse workers", *(f"{f['workers_cpu']:.2f}" for f in (cold, warm))),
        ("collect and freeze (as serve does)", *(f"{f['freeze']:.2f}" for f in (cold, warm))),
        (
            "first publish, 12 profiles (translate, encode)",
            *(f"{f['publish']:.2f} ({f['publish_cpu']:.2f})" for f in (cold, warm)),
        ),
        ("frame one stream's first responses", *(f"{f['frame']:.3f}" for f in (cold, warm))),
        ("total", *(f"{t:.2f}" for t in totals)),
        ("peak RSS, MiB", *(f"{f['hwm_mib']:,.0f}" for f in (cold, warm))),
    ]
    return Section(
        measure="coldstart",
        title=(
            f"Cold start, s (CPU): fleet {options.shape.describe()} from {size / 2**20:,.0f} MiB "
            "of YAML"
        ),
        columns=("step", "files new", "files unchanged"),
        rows=rows,
        notes=(
            f"Writing the manifests (not part of cold start) took {written:.1f} s.",
            "files unchanged: a restart with the parse cache (`serve --parse-cache DIR`) the",
            "first run filled.",
        ),
        verdicts=(
            Verdict(
                f"E={options.shape.endpoints:,}: cold start from unchanged files "
                f"<= {TARGET_SECONDS:g} s",
                f"{totals[1]:.1f} s ({totals[0]:.1f} s parsing every file)",
                totals[1] <= TARGET_SECONDS,
            ),
        ),
        data={"new": cold | {"total": totals[0]}, "unchanged": warm | {"total": totals[1]}}
        | {"total": totals[1], "yaml_bytes": size},
    )


def _run_child(path: Path, cache: Path) -> dict[str, float]:
    return run.child_figures(
        "benchmarks.measures.coldstart",
        str(path),
        str(cache),
        what="cold start",
        timeout=CHILD_SECONDS,
    )


def _children_cpu() -> float:
    """CPU seconds of the parse workers that ended (`load_fleet` waits for them)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _child(path: Path, cache: Path | None) -> dict[str, float]:
    """The timing itself, in the fresh interpreter."""
    from xdsfleet.cache import typeurls, wire
    from xdsfleet.sources.files import ParseCache, load_fleet

    wall, cpu, workers = time.perf_counter(), time.process_time(), _children_cpu()
    state = load_fleet(path, ParseCache(cache) if cache is not None else None).state
    load, load_cpu = time.perf_counter() - wall, time.process_time() - cpu
    workers = _children_cpu() - workers
    freeze, publish, publish_cpu, publisher = run.first_snapshots(state)
    wall = time.perf_counter()
    snapshot = publisher.cache.get(generated.profiles()[0])
    for type_url in typeurls.ORDER:
        resources = snapshot.of(type_url)
        wire.sotw_response(
            version_info=snapshot.versions.get(type_url, ""),
            type_url=type_url,
            nonce="1",
            entries=[r.sotw_entry for r in resources.values()],
        )
    frame = time.perf_counter() - wall
    endpoints = sum(len(s.endpoints) for m in state.members for s in m.endpoint_slices)
    return {
        "load": load,
        "load_cpu": load_cpu,
        "workers_cpu": workers,
        "publish": publish,
        "publish_cpu": publish_cpu,
        "frame": frame,
        "freeze": freeze,
        "endpoints": endpoints,
        "hwm_mib": proc.memory_kib()["VmHWM"] / 1024,
    }


if __name__ == "__main__":
    from xdsfleet.telemetry import logs

    logs.configure(fmt="console", level="warning")
    print(json.dumps(_child(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)))
