"""Cold start from Kubernetes: 50 member API servers holding the fleet, to the first snapshot.

The members of the generated fleet are served by emulated API servers (`tests/kube_host.py`, a
process of their own, every list paged with `limit`/`continue`); the Fleet file and the routes
are files. A fresh interpreter then runs what `serve` runs before it serves: the file source,
the aggregator's member watchers (the official `kubernetes` client, pages of 500, decoded and
parsed partly in worker processes: `sources/kube/decoding.py`), until every member has been
listed once (`Aggregator.wait_ready`, what `/readyz` waits for), with the collector paused as
`serve` has it then, and start-up frozen as `serve` freezes it; the first publish for the
twelve active profiles. The floor is the same lists fetched by plain HTTP with one thread per
list and decoded, nothing parsed: what the emulators alone cost on this machine.

Run `python -m benchmarks.measures.kubestart FLEET_FILE [floor]` to time a fleet by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import proc, run
from benchmarks.fleet import FULL_SCALE, Shape
from benchmarks.report import Section, Verdict

TARGET_SECONDS = 5.0
CHILD_SECONDS = 600
PAGE = 500  # objects per page: KubeSettings.list_page_size


@dataclass(frozen=True, slots=True)
class Options:
    shape: Shape = FULL_SCALE


@dataclass(frozen=True, slots=True)
class Emulated:
    """Member API servers holding a generated fleet (`tests/kube_host.py`)."""

    fleet: Path  # the Fleet file naming them (and the routes, as files)
    pid: int  # of the process serving them all
    seconds: float  # seeding them took


@contextlib.contextmanager
def emulated_members(shape: Shape) -> Iterator[Emulated]:
    """The members of the fleet of `shape`, each served by an emulated API server, in a process
    of their own, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="xdsfleet-bench-kube-") as root:
        host = subprocess.Popen(
            [*run.load_prefix(), sys.executable, "tests/kube_host.py"]
            + [str(n) for n in (shape.members, shape.services, shape.endpoints)]
            + [root],
            cwd=run.ROOT,
            env={**os.environ, "PYTHONPATH": str(run.ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert host.stdout is not None
            line = host.stdout.readline()
            if not line:
                raise run.BenchError(f"the emulated API servers did not start ({host.wait()})")
            seeded = json.loads(line)
            yield Emulated(Path(seeded["fleet"]), host.pid, seeded["seconds"])
        finally:
            if host.stdin is not None:
                host.stdin.close()
            host.wait(timeout=60)
            if host.stdout is not None:
                host.stdout.close()


def measure(options: Options) -> Section:
    shape = options.shape
    with emulated_members(shape) as members:
        floor = _run_child(members.fleet, "floor", members.pid)
        ours = _run_child(members.fleet, "serve", members.pid)
    if ours["endpoints"] != shape.endpoints:
        raise run.BenchError(f"listed {ours['endpoints']} endpoints, served {shape.endpoints}")
    total = ours["ready"] + ours["freeze"] + ours["publish"]
    rows = [
        (
            "every member listed once (what /readyz waits for)",
            f"{ours['ready']:.2f} ({ours['ready_cpu']:.2f})",
            f"{floor['ready']:.2f} ({floor['ready_cpu']:.2f})",
        ),
        ("… the decode workers' CPU", f"{ours['workers_cpu']:.2f}", "—"),
        ("… the API servers' CPU meanwhile", f"{ours['host_cpu']:.2f}", f"{floor['host_cpu']:.2f}"),
        ("collect and freeze (as serve does)", f"{ours['freeze']:.2f}", "—"),
        ("first publish, 12 profiles", f"{ours['publish']:.2f} ({ours['publish_cpu']:.2f})", "—"),
        ("total", f"{total:.2f}", f"{floor['ready']:.2f}"),
        ("lists (pages)", f"{ours['lists']:,.0f}", f"{floor['lists']:,} ({floor['pages']:,})"),
        ("peak RSS, MiB", f"{ours['hwm_mib']:,.0f}", f"{floor['hwm_mib']:,.0f}"),
    ]
    return Section(
        measure="kubestart",
        title=(
            f"Cold start from {shape.members} emulated API servers, s (CPU): fleet "
            f"{shape.describe()}"
        ),
        columns=("step", "xdsfleet", "floor: plain HTTP + JSON"),
        rows=rows,
        notes=(
            f"Seeding the emulators (not part of cold start) took {members.seconds:.1f} s.",
            f"Every list paged by {PAGE} (limit/continue; pages counted for the floor only).",
            "The floor fetches the same pages, one thread per list, and decodes them: what",
            "the emulators alone cost here.",
        ),
        verdicts=(
            Verdict(
                f"E={shape.endpoints:,}: cold start from {shape.members} API servers "
                f"<= {TARGET_SECONDS:g} s",
                f"{total:.1f} s (floor {floor['ready']:.1f} s)",
                total <= TARGET_SECONDS,
            ),
        ),
        data={"ours": ours | {"total": total}, "floor": floor, "total": total},
    )


def _run_child(path: Path, mode: str, host: int) -> dict[str, float]:
    return run.child_figures(
        "benchmarks.measures.kubestart",
        str(path),
        mode,
        str(host),
        what=f"cold start from Kubernetes ({mode})",
        timeout=CHILD_SECONDS,
    )


async def _serve_start(path: Path, host: int) -> dict[str, float]:
    """What `serve` does up to its first complete state, then the first publish."""
    from xdsfleet.pipeline.aggregate import Aggregator, cluster_access
    from xdsfleet.sources.files import FileSource, collector_paused
    from xdsfleet.sources.kube.settings import KubeSettings
    from xdsfleet.telemetry import metrics

    def crashed(error: BaseException) -> None:
        raise error

    wall, cpu, host_cpu = time.perf_counter(), time.process_time(), proc.cpu_seconds(host)
    aggregator = Aggregator(
        on_state=lambda _: None, on_crash=crashed, settings=KubeSettings(), namespace="bench"
    )
    source = FileSource(path)

    def on_files(state: Any) -> None:
        aggregator.set_base(state, fleet_cluster=cluster_access(source.fleet_spec))

    files = asyncio.create_task(source.run(on_files))
    try:
        with collector_paused():  # as serve does until its first state
            state = await aggregator.wait_ready(member_seconds=CHILD_SECONDS)
            gc.freeze()  # as serve does
        ready, ready_cpu = time.perf_counter() - wall, time.process_time() - cpu
        host_cpu = proc.cpu_seconds(host) - host_cpu
        unsettled = [r.name for r in aggregator.reports() if not r.settled]
        if unsettled:
            raise RuntimeError(f"members not listed: {unsettled}")
        freeze, publish, publish_cpu, _ = run.first_snapshots(state)
    finally:
        source.stop()
        files.cancel()
        await asyncio.gather(files, return_exceptions=True)
        await aggregator.stop()
    # The decode workers ended with the aggregator (it waits for them).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    lists = sum(
        sample.value
        for family in metrics.KUBE_LISTS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    return {
        "ready": ready,
        "ready_cpu": ready_cpu,
        "workers_cpu": children.ru_utime + children.ru_stime,
        "host_cpu": host_cpu,
        "freeze": freeze,
        "publish": publish,
        "publish_cpu": publish_cpu,
        "endpoints": sum(len(s.endpoints) for m in state.members for s in m.endpoint_slices),
        "lists": lists,
        "hwm_mib": proc.memory_kib()["VmHWM"] / 1024,
    }


def _floor(path: Path, host: int) -> dict[str, float]:
    """Every page of every member list by plain HTTP, decoded and nothing more."""
    import urllib3
    import yaml

    from xdsfleet.sources.kube import resources

    fleet = yaml.safe_load(path.read_text())
    targets = []
    for member in fleet["spec"]["members"]:
        config = yaml.safe_load(Path(member["source"]["kubeconfig"]).read_text())
        server = config["clusters"][0]["cluster"]["server"]
        token = config["users"][0]["user"]["token"]
        for kind in (resources.SERVICES, resources.ENDPOINT_SLICES, resources.SERVICE_EXPORTS):
            targets.append((server, token, kind.path()))
    pool = urllib3.PoolManager(maxsize=4)
    pages = 0

    def fetch(target: tuple[str, str, str]) -> int:
        nonlocal pages
        server, token, resource = target
        headers = {"Authorization": f"Bearer {token}"}
        fields = {"limit": str(PAGE), "resourceVersion": "0"}
        items = 0
        while True:
            answer = pool.request("GET", server + resource, fields=fields, headers=headers)
            pages += 1
            page = json.loads(answer.data)
            items += len(page["items"])
            token_ = page["metadata"].get("continue")
            if not token_:
                return items
            fields = {"limit": str(PAGE), "continue": token_}

    wall, cpu, host_cpu = time.perf_counter(), time.process_time(), proc.cpu_seconds(host)
    with ThreadPoolExecutor(len(targets)) as threads:
        items = sum(threads.map(fetch, targets))
    return {
        "ready": time.perf_counter() - wall,
        "ready_cpu": time.process_time() - cpu,
        "host_cpu": proc.cpu_seconds(host) - host_cpu,
        "items": items,
        "lists": len(targets),
        "pages": pages,
        "hwm_mib": proc.memory_kib()["VmHWM"] / 1024,
    }


if __name__ == "__main__":
    from xdsfleet.telemetry import logs

    logs.configure(fmt="console", level="warning")
    fleet_path, mode = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "serve"
    host_pid = int(sys.argv[3]) if len(sys.argv) > 3 else os.getpid()
    if mode == "floor":
        print(json.dumps(_floor(fleet_path, host_pid)))
    else:
        print(json.dumps(asyncio.run(_serve_start(fleet_path, host_pid))))
