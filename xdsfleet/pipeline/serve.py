"""`xdsfleet serve`: run the sources, the publisher and the servers until told to stop.

Every long-lived task is named and guarded: one that ends unexpectedly is logged at once and
stops the process, which a Deployment then restarts, instead of serving a config that silently
stopped following its sources. Signals only set a flag; shutdown gives streams a grace period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health
from grpc_reflection.v1alpha import reflection

from xdsfleet.model.fleet import FleetState
from xdsfleet.pipeline import grpcwake, httpapi
from xdsfleet.pipeline.aggregate import Aggregator, cluster_access
from xdsfleet.pipeline.debounce import Debouncer
from xdsfleet.pipeline.fanout import FanOut
from xdsfleet.pipeline.looplag import LoopLag
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.pipeline.ramps import Ramper
from xdsfleet.pipeline.unresolved import UnresolvedReporter
from xdsfleet.server import listen
from xdsfleet.server.ads import SERVICE, AdsService
from xdsfleet.sources.files import FileSource, ParseCache
from xdsfleet.sources.kube.client import Access
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.status.writer import StatusWriter

log = structlog.get_logger(__name__)

GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    fleet: Path | None = None  # the Fleet file; without it, `fleet_resource` is required
    xds_port: int = 18000
    metrics_port: int = 9102
    admin_port: int = 18001
    host: str = "0.0.0.0"
    # The Fleet as a custom resource of the fleet cluster, reached through `kubeconfig` and
    # `context`, or the pod's service account when `kubeconfig` is None.
    fleet_resource: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    # The server's namespace in the fleet cluster: its member Secrets and its status Lease.
    namespace: str = "xdsfleet-system"
    kube: KubeSettings = field(default_factory=KubeSettings)
    # How long a first state waits for members to answer before it is served without them.
    member_startup_seconds: float = 30.0
    # How often the replica holding the status Lease renews it and writes what changed.
    status_seconds: float = 5.0
    # Where parsed fleet files are kept across restarts (sources.files.ParseCache); None: off.
    parse_cache: Path | None = None


class Stopped(Exception):
    """A guarded task ended while the server was meant to keep running."""


def _guard(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    def done(t: asyncio.Task[None]) -> None:
        if t.cancelled() or stop.is_set():
            return
        log.error("task_ended", task=t.get_name(), error=repr(t.exception()))
        stop.set()

    task.add_done_callback(done)


async def _start_admin(port: int, host: str) -> tuple[grpc.aio.Server, health.HealthServicer]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = (
        SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, checker


def _start_sources(
    settings: Settings, aggregator: Aggregator
) -> tuple[FileSource | None, list[asyncio.Task[None]]]:
    """Feed the aggregator its Fleet: a file source following the Fleet file (which may name
    a fleet cluster), or the Fleet resource of the fleet cluster."""
    if settings.fleet_resource is not None:
        access = Access(kubeconfig=settings.kubeconfig, context=settings.context)
        aggregator.use_fleet_resource(settings.fleet_resource, access)
        return None, []
    if settings.fleet is None:
        raise ValueError("serve needs a Fleet file or a Fleet resource")
    cache = ParseCache(settings.parse_cache) if settings.parse_cache is not None else None
    source = FileSource(settings.fleet, cache)

    def on_files(state: FleetState) -> None:
        aggregator.set_base(state, fleet_cluster=cluster_access(source.fleet_spec))

    return source, [asyncio.create_task(source.run(on_files), name="file-source")]


async def _stop_sources(
    source: FileSource | None, tasks: list[asyncio.Task[None]], aggregator: Aggregator
) -> None:
    if source is not None:
        source.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await aggregator.stop()


def _members(aggregator: Aggregator) -> list[dict[str, Any]]:
    return [dataclasses.asdict(report) for report in aggregator.reports()]


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT. Raises `InvalidInput` if the fleet cannot be loaded at
    all: with nothing good to fall back on, refusing to start is the clear error."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    ramper: Ramper | None = None

    def on_state(state: FleetState) -> None:
        if ramper is not None:
            ramper.update(state)

    def on_crash(_: BaseException) -> None:
        stop.set()  # a watch thread hit a bug; it logged it

    aggregator = Aggregator(
        on_state=on_state, on_crash=on_crash, settings=settings.kube, namespace=settings.namespace
    )
    source, tasks = _start_sources(settings, aggregator)
    first = asyncio.create_task(
        aggregator.wait_ready(member_seconds=settings.member_startup_seconds), name="first-state"
    )
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({first, stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not first.done():
                task.result()  # raises what stopped the source
                raise Stopped("the fleet source ended before loading anything")
    except BaseException:
        first.cancel()
        await _stop_sources(source, tasks, aggregator)
        raise
    finally:
        stopping.cancel()
    if not first.done():  # a signal, while the first state was still incomplete
        first.cancel()
        await _stop_sources(source, tasks, aggregator)
        return
    for task in tasks:
        _guard(task, stop)

    publisher = Publisher(first.result())
    unresolved = UnresolvedReporter(lambda: source.origins if source is not None else {})
    unresolved.check(first.result())

    async def published(state: FleetState) -> None:
        await publisher.publish_in_slices(state)
        unresolved.check(state)

    ads = AdsService(publisher.cache, problem_of=publisher.node_problem, prepare=publisher.prepare)
    fanout = FanOut(publisher.cache, ads.streams.values)
    debouncer = Debouncer(published, current=first.result(), settle=fanout.settle)
    # Sources -> ramps -> debouncer -> publisher.
    ramper = Ramper(debouncer.update, current=first.result())
    ramping = asyncio.create_task(ramper.run(), name="undrain-ramper")
    _guard(ramping, stop)
    watchdog = asyncio.create_task(ads.watchdog(), name="ads-watchdog")
    _guard(watchdog, stop)
    writer = StatusWriter(
        aggregator=aggregator,
        ads=ads,
        snapshot_of=publisher.cache.get,
        served=lambda: debouncer.current,
        namespace=settings.namespace,
        interval=settings.status_seconds,
    )
    status = asyncio.create_task(writer.run(), name="status-writer")
    _guard(status, stop)
    xds, xds_port = await listen.start(ads, port=settings.xds_port, host=settings.host)
    grpcwake.install()
    lag = asyncio.create_task(LoopLag().run(), name="loop-lag")
    _guard(lag, stop)
    converging = asyncio.create_task(fanout.run(), name="convergence")
    _guard(converging, stop)
    admin, checker = await _start_admin(settings.admin_port, settings.host)
    runner = await httpapi.start(
        httpapi.app(ads, ready=lambda: not stop.is_set(), members=lambda: _members(aggregator)),
        host=settings.host,
        port=settings.metrics_port,
    )
    # What start-up built lives as long as the process: keep it out of the collector's full
    # passes, which otherwise land inside a push to every stream (see BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    await checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        fleet=str(settings.fleet or f"resource {settings.fleet_resource}"),
        xds_port=xds_port,
        metrics_port=settings.metrics_port,
        admin_port=settings.admin_port,
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping", grace_seconds=GRACE_SECONDS)
        await checker.enter_graceful_shutdown()
        for task in (ramping, watchdog, status, lag, converging):
            task.cancel()
        await asyncio.gather(ramping, watchdog, status, lag, converging, return_exceptions=True)
        await debouncer.stop()
        await writer.stop()
        await _stop_sources(source, tasks, aggregator)
        await asyncio.gather(xds.stop(GRACE_SECONDS), admin.stop(GRACE_SECONDS))
        await runner.cleanup()
