"""The gRPC server that carries ADS, with options chosen for Envoy clients."""

from __future__ import annotations

import grpc

from xdsfleet.server.ads import AdsService
from xdsfleet.server.tls import TlsFiles, server_credentials

MIB = 1024 * 1024

# Why each option:
OPTIONS = [
    # Two servers must never silently share a port (tests pick free ports; replicas that should
    # share one run behind a Service instead).
    ("grpc.so_reuseport", 0),
    # Envoy pings on its own schedule (bootstrap `connection_keepalive`); accept pings every
    # 10 s even on an idle stream instead of answering GOAWAY "too_many_pings".
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Our own keepalive finds dead clients behind NATs and load balancers.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Rule 25: full-state CDS/LDS of a large fleet outgrows gRPC's 4 MiB default. Envoy's own
    # receive limit is unbounded; requests stay small, so only the send side is raised.
    ("grpc.max_send_message_length", 128 * MIB),
    ("grpc.max_receive_message_length", 16 * MIB),
    # After a control-plane restart every Envoy reconnects at once; gRPC's default queue of
    # 1,000 pending stream opens cancels the rest (seen with 2,000 clients in `make bench`).
    ("grpc.server.max_pending_requests", 10_000),
]


async def start(
    ads: AdsService, *, port: int, host: str = "0.0.0.0", tls: TlsFiles | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start serving ADS, over TLS if `tls` (mTLS with its client CA); returns the server and
    the port bound (useful with port 0). Raises TlsError for unusable TLS files and
    RuntimeError for a port it cannot bind."""
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((ads.handler(),))
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(tls))
    await server.start()
    return server, bound
