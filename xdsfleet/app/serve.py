"""`xdsfleet serve`: run the sources, the publisher and the servers until told to stop.

Every long-lived task is named and guarded: one that ends unexpectedly is logged at once and
stops the process, which a Deployment then restarts, instead of serving a config that silently
stopped following its sources. Signals only set a flag; shutdown gives streams a grace period.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health
from grpc_reflection.v1alpha import reflection

from xdsfleet.app import http
from xdsfleet.app.publisher import Publisher
from xdsfleet.app.store import Store
from xdsfleet.model.fleet import FleetState
from xdsfleet.server import listen
from xdsfleet.server.ads import SERVICE, AdsService
from xdsfleet.sources.files import FileSource

log = structlog.get_logger(__name__)

GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    fleet: Path
    xds_port: int = 18000
    metrics_port: int = 9102
    admin_port: int = 18001
    host: str = "0.0.0.0"


class Stopped(Exception):
    """A guarded task ended while the server was meant to keep running."""


def _guard(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    def done(t: asyncio.Task[None]) -> None:
        if t.cancelled():
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


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT. Raises `InvalidInput` if the fleet cannot be loaded at
    all: with nothing good to fall back on, refusing to start is the clear error."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    first: asyncio.Future[FleetState] = loop.create_future()
    store: Store | None = None

    def on_state(state: FleetState) -> None:
        if store is not None:
            store.update(state)
        elif not first.done():
            first.set_result(state)

    source = FileSource(settings.fleet)
    source_task = asyncio.create_task(source.run(on_state), name="file-source")
    waiting: set[asyncio.Future[Any]] = {source_task, first}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        source_task.result()  # raises what stopped the source
        raise Stopped("the fleet source ended before loading anything")
    _guard(source_task, stop)

    publisher = Publisher(first.result())
    store = Store(publisher.publish, current=first.result())
    ads = AdsService(publisher.cache)
    xds, xds_port = await listen.start(ads, port=settings.xds_port, host=settings.host)
    admin, checker = await _start_admin(settings.admin_port, settings.host)
    runner = await http.start(
        http.app(ads, ready=lambda: not stop.is_set()),
        host=settings.host,
        port=settings.metrics_port,
    )
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    await checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        fleet=str(settings.fleet),
        xds_port=xds_port,
        metrics_port=settings.metrics_port,
        admin_port=settings.admin_port,
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping", grace_seconds=GRACE_SECONDS)
        await checker.enter_graceful_shutdown()
        source.stop()
        source_task.cancel()
        await asyncio.gather(source_task, return_exceptions=True)
        await asyncio.gather(xds.stop(GRACE_SECONDS), admin.stop(GRACE_SECONDS))
        await runner.cleanup()
