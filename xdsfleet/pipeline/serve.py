"""`xdsfleet serve`: run the sources, the publisher and the servers until told to stop.

Every long-lived task is named and supervised (`pipeline/supervisor.py`): one that ends
unexpectedly is logged with its traceback and stops the process with a non-zero exit, which a
Deployment then restarts, instead of serving a config that silently stopped following its
sources. Signals only set a flag; shutdown gives streams a grace period. Every reason not to
start is one `Refused` line. The HTTP side channel starts before anything is loaded, so that
`/healthz` answers through a long start and `/readyz` says what the start waits for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health_pb2

from xdsfleet.model.fleet import FleetState
from xdsfleet.pipeline import adminport, chain, grpcwake, heap, httpapi
from xdsfleet.pipeline.adminport import AdminSettings
from xdsfleet.pipeline.aggregate import Aggregator, cluster_access
from xdsfleet.pipeline.loophold import HoldWatch
from xdsfleet.pipeline.looplag import LoopLag
from xdsfleet.pipeline.security import Security
from xdsfleet.pipeline.supervisor import Refused, Supervisor
from xdsfleet.server import listen, tls
from xdsfleet.server.admission import Admission
from xdsfleet.server.ads import SERVICE, AdsService
from xdsfleet.server.tls import TlsFiles
from xdsfleet.sources.files import FileSource, ParseCache, collector_paused
from xdsfleet.sources.kube.client import Access, AccessError, Cluster
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.status.writer import StatusWriter
from xdsfleet.telemetry import logs

log = structlog.get_logger(__name__)

# After SIGTERM: how long streams keep being served once every connection got its GOAWAY,
# before they are cancelled and their clients reconnect to another replica.
DRAIN_SECONDS = 5.0


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
    # TLS on the xDS port (mTLS with a client CA); without mTLS, TLS Secrets are served only
    # on loopback or with `insecure_secrets` (pipeline/security.py).
    tls: TlsFiles | None = None
    insecure_secrets: bool = False
    # A file holding the admin API's bearer token (pipeline/adminport.py).
    admin_token: Path | None = None
    drain_seconds: float = DRAIN_SECONDS
    # New ADS streams admitted per second after a burst (server/admission.py); 0: no limit.
    admit_rate: float = 500.0
    admit_burst: int = 200
    # Where parsed fleet files are kept across restarts (sources.files.ParseCache); None: off.
    parse_cache: Path | None = None

    @property
    def security(self) -> Security:
        mutual = self.tls is not None and self.tls.mutual
        return Security(self.tls is not None, mutual, self.host, self.insecure_secrets)


def _start_sources(
    settings: Settings, aggregator: Aggregator
) -> tuple[FileSource | None, list[asyncio.Task[None]]]:
    """Feed the aggregator its Fleet: a file source following the Fleet file (which may name
    a fleet cluster), or the Fleet resource of the fleet cluster."""
    if settings.fleet_resource is not None:
        access = Access(kubeconfig=settings.kubeconfig, context=settings.context)
        try:
            Cluster(access, settings.kube).close()  # reads the kubeconfig; no request yet
        except AccessError as error:
            raise Refused(f"--fleet-resource: cannot reach the fleet cluster: {error}") from None
        aggregator.use_fleet_resource(settings.fleet_resource, access)
        return None, []
    if settings.fleet is None:
        raise Refused("serve needs a Fleet file or a Fleet resource")
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
    all (with nothing good to fall back on, refusing to start is the clear error), `Refused`
    for any other reason not to start, and `Crashed` once stopped because a task died."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(logs.asyncio_exception_handler)
    if not heap.keep_freed():  # a member loss's megabyte responses reuse memory, not fresh pages
        # Not glibc: its allocator's defaults stay, and a member loss may fault in its
        # responses' pages afresh (pipeline/heap.py).
        log.info("heap_defaults_kept", reason="mallopt unavailable")
    if settings.tls is not None:
        try:
            tls.Reloading(settings.tls)  # the files are read again when the port opens
        except tls.TlsError as error:
            raise Refused(f"--tls-cert/--tls-key/--client-ca: {error}") from None
    if settings.admin_token is not None:
        adminport.read_token(settings.admin_token)  # read again when the port opens
    security = settings.security
    supervisor = Supervisor()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop.set)
    chains: list[chain.Chain] = []
    listeners: list[Callable[[FleetState], None]] = []  # more of what follows each state

    def on_state(state: FleetState) -> None:
        for built in chains:  # none yet: `chain.build` catches up from `aggregator.state`
            built.update(security.prepare(state))
        for listener in listeners:
            listener(state)

    def latest() -> FleetState | None:
        state = aggregator.state
        return security.prepare(state) if state is not None else None

    aggregator = Aggregator(
        on_state=on_state,
        on_crash=lambda error: supervisor.fail("kube-watch", error),
        settings=settings.kube,
        namespace=settings.namespace,
    )
    started = asyncio.Event()  # set once every server is up: /readyz 200

    def not_ready() -> str | None:
        if supervisor.stop.is_set():
            return "stopping"
        if started.is_set():
            return None
        return aggregator.awaiting() or "building the first snapshots"

    source, tasks = _start_sources(settings, aggregator)
    runner: web.AppRunner | None = None
    try:
        # The side channel first: /healthz answers through a long start (a liveness probe must
        # not kill a replica that is only slow), /readyz says what the start waits for.
        application = httpapi.app(
            lambda: chains[0].ads if chains else None,
            not_ready=not_ready,
            members=lambda: _members(aggregator),
        )
        runner = await _start_http(application, settings.host, settings.metrics_port)
        # What start-up builds lives on (and is frozen once serving): collector passes over it
        # while members are listed cost 40 % of their CPU at E = 100,000 (BENCHMARKS.md).
        with collector_paused():
            first = await _first_state(settings, supervisor, aggregator, tasks)
            # Out of every pass until the collector's first full one comes due: the
            # collector resumed with all of start-up in its youngest generation would walk it
            # all at the next allocation, and again as it ages (~1 s at E = 100,000, in the
            # first publish).
            gc.freeze()
        if first is not None:
            for task in tasks:
                supervisor.watch(task)
            security.announce(first)
            built = chain.build(
                security.prepare(first),
                latest=latest,
                origins=lambda: source.origins if source is not None else {},
                serving=lambda publisher: AdsService(
                    publisher.cache,
                    authorize=security.authorizer(lambda: aggregator.state),
                    admission=Admission(rate=settings.admit_rate, burst=settings.admit_burst),
                    problem_of=publisher.node_problem,
                    prepare=publisher.prepare,
                ),
            )
            chains.append(built)
            try:
                await _serve(settings, supervisor, aggregator, built, listeners, started)
            finally:
                await built.close()
    finally:
        await supervisor.close()
        await _stop_sources(source, tasks, aggregator)
        if runner is not None:
            await runner.cleanup()
    supervisor.raise_if_failed()


async def _first_state(
    settings: Settings,
    supervisor: Supervisor,
    aggregator: Aggregator,
    tasks: list[asyncio.Task[None]],
) -> FleetState | None:
    """The first complete state; None if told to stop before it was known."""
    first = asyncio.create_task(
        aggregator.wait_ready(member_seconds=settings.member_startup_seconds), name="first-state"
    )
    stopping = asyncio.create_task(supervisor.stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({first, stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not first.done():
                task.result()  # raises what stopped the source
                raise Refused("the fleet source ended before loading anything")
    finally:
        stopping.cancel()
        if not first.done():  # a signal, a crash or an error while it was still incomplete
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
    return None if first.cancelled() else first.result()


async def _serve(
    settings: Settings,
    supervisor: Supervisor,
    aggregator: Aggregator,
    built: chain.Chain,
    listeners: list[Callable[[FleetState], None]],
    started: asyncio.Event,
) -> None:
    """Start the servers and the agents around `built`, then set `started`; run until the
    supervisor stops."""
    supervisor.start(built.ramper.run(), name="undrain-ramper")
    cache = built.publisher.cache
    security = settings.security
    ads = built.ads
    listeners.append(security.revoker(ads, aggregator.state))
    supervisor.start(ads.watchdog(), name="ads-watchdog")
    writer = StatusWriter(
        aggregator=aggregator,
        ads=ads,
        snapshot_of=cache.get,
        served=lambda: built.debouncer.current,
        namespace=settings.namespace,
        interval=settings.status_seconds,
    )
    supervisor.start(writer.run(), name="status-writer")
    try:
        xds, xds_port = await listen.start(
            ads, port=settings.xds_port, host=settings.host, tls=settings.tls
        )
    except tls.TlsError as error:
        raise Refused(f"--tls-cert/--tls-key/--client-ca: {error}") from None
    except (RuntimeError, OSError) as error:
        where = f"{settings.host}:{settings.xds_port}"
        raise Refused(f"cannot listen on {where} (xDS port): {error}") from None
    grpcwake.install()
    supervisor.start(LoopLag(watch=HoldWatch()).run(), name="loop-lag")
    supervisor.start(built.fanout.run(), name="convergence")
    admin: grpc.aio.Server | None = None
    try:
        admin, checker, _ = await adminport.start(
            AdminSettings(settings.host, settings.admin_port, settings.tls, settings.admin_token),
            ads,
            snapshot_of=cache.get,
            members=aggregator.reports,
        )
        # What start-up built lives as long as the process: out of the collector's passes,
        # which from here on run on our terms (pipeline/collector.py).
        supervisor.start(built.fanout.collector.run(), name="collector")
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        await checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        started.set()
        log.info(
            "serving",
            fleet=str(settings.fleet or f"resource {settings.fleet_resource}"),
            xds_port=xds_port,
            xds_tls="mtls" if security.mutual else "tls" if security.tls else "plaintext",
            metrics_port=settings.metrics_port,
            admin_port=settings.admin_port,
        )
        await supervisor.stop.wait()
        # /readyz answers 503 from here on (the stop flag); health says NOT_SERVING.
        log.info("stopping", drain_seconds=settings.drain_seconds, streams=len(ads.streams))
        await checker.enter_graceful_shutdown()
    finally:
        await supervisor.close()
        await writer.stop()  # releases the status Lease now: another replica takes it over
        # Every connection gets a GOAWAY and no new stream is accepted; the streams open are
        # served for `drain_seconds` more, then cancelled, and their clients reconnect to
        # another replica, which serves the same versions (content hashes).
        grace = settings.drain_seconds
        await asyncio.gather(xds.stop(grace), *([admin.stop(grace)] if admin else []))
        log.info("stopped")


async def _start_http(application: web.Application, host: str, port: int) -> web.AppRunner:
    try:
        return await httpapi.start(application, host=host, port=port)
    except OSError as error:
        raise Refused(f"cannot listen on {host}:{port} (metrics port): {error}") from None
