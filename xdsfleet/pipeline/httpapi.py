"""The plaintext HTTP side channel: what kubelet probes, Prometheus scrapes and an SRE curls.

It is the first thing `serve` starts: `/healthz` says the process is alive, and must answer
through a long start (loading a big fleet, listing every member), or a liveness probe would kill
a replica that is only slow to start; `/readyz` answers 503 with what the start still waits
for until a complete fleet state is being served (and again while stopping);
`/metrics` is Prometheus text; `/debug/clients` lists every connected client with, per type,
what it was sent, what it accepted and why it last refused; `/debug/members` lists the
Kubernetes members: how each is reached, whether it is stale and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from xdsfleet.cache import typeurls
from xdsfleet.server.ads import AdsService
from xdsfleet.server.nodes import clip


def clients(ads: AdsService) -> list[dict[str, Any]]:
    """Every stream: those serving a node, then those still waiting for their first request."""
    serving: list[dict[str, Any]] = [
        {
            "stream": info.stream_id,
            "protocol": info.protocol,
            "node": clip(info.node_id),
            "cluster": clip(info.node_cluster),
            "peer": clip(info.peer),
            "identity": clip(info.identity) if info.identity else None,
            "profile": info.profile.describe(),
            "problem": info.problem,
            "types": {
                typeurls.SHORT_NAMES[t]: s.summary() for t, s in info.machine.status().items()
            },
        }
        for info in ads.streams.values()
    ]
    waiting = [
        {
            "stream": w.stream_id,
            "protocol": w.protocol,
            "peer": clip(w.peer),
            "waitingSeconds": round(time.time() - w.started, 1),
            "problem": "no first request yet (it names the node)",
        }
        for w in ads.waiting.values()
    ]
    return serving + waiting


def app(
    ads: Callable[[], AdsService | None],
    not_ready: Callable[[], str | None],
    members: Callable[[], list[dict[str, Any]]] = list,
) -> web.Application:
    """`ads`: the ADS service once it exists (no clients before); `not_ready`: why the replica
    must not be sent traffic, None when it may."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        if reason is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def debug_clients(_: web.Request) -> web.Response:
        service = ads()
        return web.json_response(clients(service) if service is not None else [])

    async def debug_members(_: web.Request) -> web.Response:
        return web.json_response(members())

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/debug/clients", debug_clients)
    application.router.add_get("/debug/members", debug_members)
    return application


async def start(application: web.Application, *, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=False).start()
    return runner
