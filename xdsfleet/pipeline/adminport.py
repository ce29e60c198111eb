"""The admin gRPC port: health (what a kubelet gRPC probe asks), reflection, and the admin API.

The admin API tells who holds what, so it is served only behind mTLS (the xDS port's
certificates and client CA), a bearer token (`--admin-token-file`), or on a loopback address;
otherwise it is left out and `serve` says so at start. Health and reflection stay open: they
tell nothing about the fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health
from grpc_reflection.v1alpha import reflection

from xdsfleet.admin import service as admin
from xdsfleet.admin.v1 import admin_pb2
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.model.node import NodeProfile
from xdsfleet.pipeline.security import is_loopback
from xdsfleet.pipeline.supervisor import Refused
from xdsfleet.server import ads as ads_server
from xdsfleet.server import tls
from xdsfleet.server.ads import AdsService

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str
    port: int
    tls: tls.TlsFiles | None = None
    token_file: Path | None = None


def read_token(path: Path) -> str:
    """The bearer token in `path` (one line); refuses the start if there is none."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise Refused(f"--admin-token-file {path}: {error.strerror}") from None
    if not token or "\n" in token:
        raise Refused(f"--admin-token-file {path}: expected one line holding the token")
    return token


async def start(
    settings: AdminSettings,
    ads: AdsService,
    *,
    snapshot_of: Callable[[NodeProfile], Snapshot],
    members: Callable[[], Sequence[admin.MemberView]],
) -> tuple[grpc.aio.Server, health.HealthServicer, int]:
    """Start the admin port; returns the server, its health servicer and the port bound."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = [
        ads_server.SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    token = read_token(settings.token_file) if settings.token_file else None
    mutual = settings.tls is not None and settings.tls.mutual
    if mutual or token is not None or is_loopback(settings.host):
        api = admin.AdminService(ads, snapshot_of=snapshot_of, members=members, token=token)
        server.add_generic_rpc_handlers((api.handler(),))
        names.append(admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name)
        log.info("admin_api", guard="mtls" if mutual else "token" if token else "loopback")
    else:
        log.warning(
            "admin_api_disabled",
            reason="the admin API needs mTLS (--client-ca), --admin-token-file, or a loopback "
            "address; health and reflection are served",
        )
    reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    try:
        if settings.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials(settings.tls))
    except tls.TlsError as error:
        raise Refused(f"--tls-cert/--tls-key/--client-ca: {error}") from None
    except (RuntimeError, OSError) as error:
        raise Refused(f"cannot listen on {address} (admin port): {error}") from None
    await server.start()
    return server, checker, port
