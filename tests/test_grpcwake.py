"""The gRPC poller's reader is found and wrapped (pipeline/grpcwake.py), and gRPC works through
the wrapper: if a grpcio upgrade renames what it relies on, this says so instead of the fix
silently not being there."""

from __future__ import annotations

from typing import Any

import grpc

from xdsfleet.pipeline import grpcwake

METHOD = "/test.Echo/Call"


async def _echo(request: bytes, _: Any) -> bytes:
    return request


async def test_the_poller_reader_is_wrapped_and_calls_still_complete() -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Call": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert grpcwake.install()
        assert grpcwake.install()  # already wrapped: found, not wrapped twice
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(METHOD)
            for i in range(20):
                assert await call(b"ping %d" % i) == b"ping %d" % i
    finally:
        await server.stop(0)
