"""Local stand-ins for a fleet's moving parts, for the demo and the integration tests.

Backends answer on loopback addresses (127.0.0.0/8 is all local on Linux, so each member's pods
get addresses of their own); Envoy and the xdsfleet server run as real processes (the classes
live with the drill, `xdsfleet.tools.drill.processes`, which needs them too). Everything started
here is stopped by its owner; nothing here is used by `serve`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

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


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up (a gateway timing a slow answer out) is not an error to print."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Backend:
    """An HTTP server standing in for one pod: answers every request (any method) with who it
    is (`member`, `pod`) and what it received (`method`, `path`, `host`, `headers`, names
    lowercased), with `status` (a sick pod answers 503). `received` keeps the paths of the
    requests so far."""

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
                # A body is read and dropped, so the connection stays usable.
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # As the upstream echo server: `?delay=1s` (or 500ms) answers that much later,
                # a slow backend for timeout cases.
                delay = parse_qs(urlsplit(self.path).query).get("delay", [""])[0]
                if delay:
                    time.sleep(_seconds(delay))
                backend.requests += 1
                backend.received.append(self.path)
                answer = {
                    "member": backend.member,
                    "pod": backend.address,
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("Host", ""),
                    # Repeated headers joined with commas, as the upstream echo server does.
                    "headers": {
                        k.lower(): ",".join(self.headers.get_all(k) or []) for k in self.headers
                    },
                }
                body = json.dumps(answer).encode()
                self.send_response(backend.status)
                # As the upstream Gateway API echo server: `X-Echo-Set-Header: name:value,...`
                # asks for response headers (ResponseHeaderModifier cases).
                for pair in filter(None, self.headers.get("X-Echo-Set-Header", "").split(",")):
                    name, _, value = pair.partition(":")
                    self.send_header(name.strip(), value.strip())
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            # Every method answers alike (method matching, CORS preflights reaching a pod).
            do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the demo prints its own summary

        self._server = _QuietServer((address, port), Handler)
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


def _seconds(duration: str) -> float:
    """A Go-style duration of one unit: `1s`, `500ms`."""
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration.rstrip("s"))
