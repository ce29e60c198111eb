"""Local stand-ins for a fleet's moving parts, for the demo and the integration tests.

Backends answer on loopback addresses (127.0.0.0/8 is all local on Linux, so each member's pods
get addresses of their own); Envoy and the xdsfleet server run as real processes (the classes
live with the drill, `xdsfleet.tools.drill.processes`, which needs them too). Everything started
here is stopped by its owner; nothing here is used by `serve`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from xdsfleet.tools.drill.processes import (
    Envoy,
    Response,
    Server,
    envoy_binary,
    free_port,
    get,
    request,
    wait_for,
)

__all__ = [
    "Backend",
    "Envoy",
    "Response",
    "Server",
    "envoy_binary",
    "free_port",
    "get",
    "request",
    "wait_for",
]


class Backend:
    """An HTTP server standing in for one pod: answers every request with who it is (`member`,
    `pod`) and what it received (`method`, `path`, `host`, `headers`, names lowercased), with
    `status` (a sick pod answers 503). `received` keeps the paths of the requests so far."""

    def __init__(self, *, member: str, address: str, port: int, status: int = 200) -> None:
        self.member = member
        self.address = address
        self.port = port
        self.status = status
        self.requests = 0
        self.received: list[str] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                backend.requests += 1
                backend.received.append(self.path)
                answer = {
                    "member": backend.member,
                    "pod": backend.address,
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host", ""),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
                body = json.dumps(answer).encode()
                self.send_response(backend.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the demo prints its own summary

        self._server = ThreadingHTTPServer((address, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"backend-{address}", daemon=True
        )

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
