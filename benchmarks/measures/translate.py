"""Translation + encode CPU per single endpoint change, against the size of the fleet.

`Publisher.publish` with one endpoint changed (a churn event: a flap or a scale step), for the
twelve active profiles of the six-locality fleet, CPU time of the publishing thread. Two series:
services grow with the fleet (100 endpoints each: the shape of a growing fleet), and a fixed
catalogue of 1,000 services whose endpoints grow. Both should stay flat: one endpoint changed is
one assignment per distinct locality view to rebuild, whatever the size of the rest.

The floor is that irreducible work, done alone: decode and re-encode the changed assignment of
each distinct view (six here: a sidecar and a gateway in one place see the same priorities).
Any translation has to build messages of that size and serialize them at least once.

Then a member is lost and restored, three times (three members): the loss changes every
assignment of every view, the restore brings back what was there before (issue 10: publishing
the loss took ~10x the restore).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.endpoint.v3 import endpoint_pb2

from benchmarks import plots, run
from benchmarks.churn import Churn
from benchmarks.fleet import NAMESPACE, PORT, Fleet, Shape, profiles, service_name
from benchmarks.report import Section, Verdict, ms, rank
from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import encode
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.translate.names import cluster_name

TARGET_SECONDS = 0.001  # issue 10
TARGET_ENDPOINTS = 100_000
MEMBERS = 50
ENDPOINTS_PER_SERVICE = 100
FIXED_SERVICES = 1_000
LOST_MEMBERS = (3, 7, 11)
PLOT = run.ROOT / "docs" / "bench-translate.png"


@dataclass(frozen=True, slots=True)
class Options:
    sizes: Sequence[int] = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
    fixed_sizes: Sequence[int] = (1_000, 10_000, 100_000)
    changes: int = 20
    plot: bool = True


@dataclass(frozen=True, slots=True)
class Point:
    shape: Shape
    cpu: list[float]  # per change, seconds
    wall: list[float]
    floor: list[float]
    first: float  # the first publish of every profile, seconds of CPU
    lost: list[float]  # publishing a member lost, seconds of CPU
    restored: list[float]  # publishing it restored


def grown(endpoints: int) -> Shape:
    return Shape(MEMBERS, max(1, endpoints // ENDPOINTS_PER_SERVICE), endpoints)


def fixed(endpoints: int) -> Shape:
    return Shape(MEMBERS, FIXED_SERVICES, endpoints)


def measure_shape(shape: Shape, changes: int) -> Point:
    fleet = Fleet(shape)
    churn = Churn(fleet)
    publisher = Publisher(fleet.state())
    started = time.thread_time()
    for profile in profiles():
        # What the first stream of each profile does: watch it and get its snapshot.
        publisher.cache.watch(profile, lambda: None)
        publisher.cache.get(profile)
    first = time.thread_time() - started
    gc.collect()
    gc.freeze()  # as `xdsfleet serve` does after start-up
    cpu, wall, floor = [], [], []
    try:
        for _ in range(changes):
            event = churn.event()
            state = fleet.state()
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            publisher.publish(state)
            cpu.append(time.thread_time() - cpu0)
            wall.append(time.perf_counter() - wall0)
            floor.append(_floor(publisher, service_name(event.service)))
        lost: list[float] = []
        restored: list[float] = []
        for member in LOST_MEMBERS:
            for change, times in ((fleet.lose, lost), (fleet.restore, restored)):
                change(member % shape.members)
                state = fleet.state()
                cpu0 = time.thread_time()
                publisher.publish(state)
                times.append(time.thread_time() - cpu0)
    finally:
        gc.unfreeze()
    return Point(shape, cpu, wall, floor, first, lost, restored)


def _floor(publisher: Publisher, service: str) -> float:
    """The irreducible work of the change just published, in CPU seconds."""
    name = cluster_name(NAMESPACE, service, PORT)
    bodies = {
        id(res): res.body
        for profile in publisher.cache.profiles()
        if (res := publisher.cache.get(profile).of(typeurls.ENDPOINT).get(name)) is not None
    }
    started = time.thread_time()
    for body in bodies.values():
        encode(typeurls.ENDPOINT, name, endpoint_pb2.ClusterLoadAssignment.FromString(body))
    return time.thread_time() - started


def measure(options: Options) -> Section:
    series = {"grown": [measure_shape(grown(e), options.changes) for e in options.sizes]}
    reuse = {p.shape: p for p in series["grown"]}
    series["fixed"] = [
        reuse.get(fixed(e)) or measure_shape(fixed(e), options.changes) for e in options.fixed_sizes
    ]
    rows = []
    for name, points in series.items():
        for p in points:
            rows.append(
                (
                    name,
                    p.shape.describe(),
                    ms(rank(p.cpu, 0.5)),
                    ms(rank(p.cpu, 0.9)),
                    ms(rank(p.wall, 0.5)),
                    ms(rank(p.floor, 0.5)),
                    f"{rank(p.cpu, 0.5) / rank(p.floor, 0.5):,.0f}x",
                    f"{p.first:,.2f}",
                    ms(rank(p.lost, 0.5)),
                    ms(rank(p.restored, 0.5)),
                )
            )
    verdicts = []
    at_target = [p for p in series["grown"] if p.shape.endpoints == TARGET_ENDPOINTS]
    if at_target:
        median = rank(at_target[0].cpu, 0.5)
        verdicts.append(
            Verdict(
                f"E=100,000: <= {ms(TARGET_SECONDS)} ms translation + encode per endpoint change",
                f"{ms(median)} ms CPU (median of {options.changes})",
                median <= TARGET_SECONDS,
            )
        )
    if options.plot and len(options.sizes) > 1:
        plots.translate(
            {
                "xdsfleet, S = E/100": _median_points(series["grown"], "cpu"),
                "xdsfleet, S = 1,000": _median_points(series["fixed"], "cpu"),
                "floor: re-encode changed assignments": _median_points(series["grown"], "floor"),
            },
            TARGET_SECONDS * 1000,
            PLOT,
        )
    return Section(
        measure="translate",
        title=(
            f"Translation + encode per endpoint change, 12 profiles, ms ({options.changes} changes)"
        ),
        columns=(
            "series",
            "fleet",
            "CPU p50",
            "CPU p90",
            "wall p50",
            "floor p50",
            "x floor",
            "first publish, s",
            "member lost p50",
            "restored p50",
        ),
        rows=rows,
        notes=(
            "CPU: thread time of Publisher.publish with one endpoint changed (a churn event).",
            "floor: decode + encode the changed assignment of each distinct locality view.",
            "first publish: every profile's first snapshot (what the first streams wait for).",
            f"member lost / restored: CPU of the publish, members {LOST_MEMBERS} in turn.",
        ),
        verdicts=tuple(verdicts),
        data={
            name: [
                {
                    "endpoints": p.shape.endpoints,
                    "services": p.shape.services,
                    "cpu_p50": rank(p.cpu, 0.5),
                    "floor_p50": rank(p.floor, 0.5),
                    "first": p.first,
                    "lost_p50": rank(p.lost, 0.5),
                    "restored_p50": rank(p.restored, 0.5),
                }
                for p in points
            ]
            for name, points in series.items()
        },
    )


def _median_points(points: Sequence[Point], what: str) -> list[tuple[int, float]]:
    return [(p.shape.endpoints, rank(getattr(p, what), 0.5)) for p in points]
