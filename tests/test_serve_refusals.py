"""Every reason `serve` refuses to start exits non-zero with one clear line, and the process's
stderr stays a JSON stream whatever fails: library logs, asyncio callbacks, threads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.local import free_port

SECRET = "s3cr3t-t0ken-never-logged"


def serve(*args: str, timeout: float = 60) -> tuple[int, list[dict[str, Any]]]:
    """Run `xdsfleet serve` on free ports (unless `args` give some); its exit code and the
    JSON events it wrote (every stderr line must be one)."""
    ports = {"--xds-port": free_port(), "--metrics-port": free_port(), "--admin-port": free_port()}
    argv = [sys.executable, "-m", "xdsfleet", "serve", "--address", "127.0.0.1"]
    for flag, port in ports.items():
        if flag not in args:
            argv += [flag, str(port)]
    done = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)
    return done.returncode, [json.loads(line) for line in done.stderr.splitlines() if line]


def refusal(events: list[dict[str, Any]]) -> str:
    [refused] = [e for e in events if e["event"] == "start_refused"]
    assert refused["level"] == "error"
    return str(refused["error"])


@pytest.mark.parametrize(("flag", "name"), [("--xds-port", "xDS"), ("--metrics-port", "metrics")])
def test_a_port_in_use_refuses_the_start(flag: str, name: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, events = serve(flag, str(port))
    assert code == 1
    assert f"127.0.0.1:{port} ({name} port)" in refusal(events)


def test_a_fleet_resource_with_a_missing_kubeconfig_refuses_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.kubeconfig"
    code, events = serve("--fleet-resource", "prod", "--kubeconfig", str(missing))
    assert code == 1
    assert "--fleet-resource" in refusal(events)
    assert str(missing) in refusal(events)


def test_an_unreadable_kubeconfig_is_refused_without_quoting_it(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "broken.kubeconfig"
    kubeconfig.write_text(f"users:\n- name: admin\n  user: {{token: {SECRET}\n")
    code, events = serve("--fleet-resource", "prod", "--kubeconfig", str(kubeconfig))
    assert code == 1
    assert "not valid YAML" in refusal(events)
    assert SECRET not in json.dumps(events)


def test_stderr_stays_json_whatever_fails_and_tracebacks_hold_no_locals() -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, threading
        from xdsfleet.telemetry import logs

        logs.configure(fmt="json", level="info")
        logging.getLogger("grpc._cython").warning("a library speaks: %s", "plain text?")

        def broken():
            private_key = "SECRET"  # a local of the failing frame: never logged
            raise ValueError("in a callback")

        async def main():
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(logs.asyncio_exception_handler)
            loop.call_soon(broken)
            await asyncio.sleep(0.01)

        asyncio.run(main())
        thread = threading.Thread(target=broken, name="worker")
        thread.start()
        thread.join()
        raise SystemError("uncaught")
        """
    )
    script = script.replace("SECRET", SECRET)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stderr.splitlines() if line]
    by_name = {e["event"]: e for e in events}
    assert by_name["a library speaks: plain text?"]["logger"] == "grpc._cython"
    assert by_name["asyncio_error"]["exception"][0]["exc_value"] == "in a callback"
    assert by_name["thread_failed"]["thread"] == "worker"
    assert by_name["uncaught_exception"]["exception"][0]["exc_type"] == "SystemError"
    assert SECRET not in done.stderr  # tracebacks carry no local variables


def test_unusable_tls_files_refuse_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "server.pem"
    code, events = serve("--tls-cert", str(missing), "--tls-key", str(tmp_path / "server.key"))
    assert code == 1
    assert str(missing) in refusal(events)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("-----BEGIN PRIVATE KEY-----\n" + SECRET + "\n-----END PRIVATE KEY-----\n")
    code, events = serve("--tls-cert", str(cert), "--tls-key", str(key))
    assert code == 1
    assert str(cert) in refusal(events)
    assert SECRET not in json.dumps(events)
