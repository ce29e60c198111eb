"""Members on one machine: each a network namespace of its own (a veth link to the host, its
pods' addresses inside), or, where namespaces cannot be made, a range of loopback addresses.

Faults hit every pod of a member at once: `kill` (SIGKILL: connections refused), `hang`
(SIGSTOP: connections accepted, never answered), `cut` (inside the member's namespace, a
blackhole route to the host: packets dropped, so connects time out rather than being refused),
and `restore` undoes whichever was done. Only addresses and namespaces made here are touched;
`close` removes them all.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self


class Mode(StrEnum):
    NAMESPACES = "network namespaces"
    LOOPBACK = "loopback addresses"


class Fault(StrEnum):
    KILL = "kill"
    HANG = "hang"
    CUT = "cut"


class Unsupported(RuntimeError):
    """A fault this machine cannot inject (a cut without network namespaces)."""


@dataclass
class _Site:
    name: str
    index: int
    namespace: str | None
    addresses: list[str] = field(default_factory=list)
    listen: list[tuple[str, int]] = field(default_factory=list)
    delay_ms: int = 0
    process: subprocess.Popen[bytes] | None = None
    fault: Fault | None = None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Topology:
    """Members and their backends on this machine. Use as a context manager."""

    def __init__(self, *, namespaces: bool = True) -> None:
        # Unique per topology (several may live in one process): names of namespaces and links.
        self._tag = secrets.token_hex(3)[:5]
        self._sites: dict[str, _Site] = {}
        self.mode = Mode.LOOPBACK
        self.why_loopback = "namespaces not asked for"
        if namespaces:
            self.why_loopback = self._probe_namespaces()
            if not self.why_loopback:
                self.mode = Mode.NAMESPACES
        self._prefix = self._pick_prefix()

    # --- setup ---------------------------------------------------------------------------

    def _probe_namespaces(self) -> str:
        """Empty when namespaces work here; else why not."""
        probe = f"xdsf{self._tag}-probe"
        try:
            _ip("netns", "add", probe)
            _ip("netns", "del", probe)
        except FileNotFoundError:
            return "no `ip` command"
        except subprocess.CalledProcessError as err:
            return f"`ip netns add` failed: {err.stderr.decode().strip()}"
        return ""

    def _pick_prefix(self) -> str:
        """A /16 nobody on this machine uses: 10.X. with namespaces, 127.X. on loopback."""
        taken = ""
        if self.mode is Mode.NAMESPACES:
            taken = subprocess.run(
                ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True
            ).stdout
            taken += subprocess.run(
                ["ip", "-4", "route"], capture_output=True, text=True, check=True
            ).stdout
        first = "10" if self.mode is Mode.NAMESPACES else "127"
        choices = list(range(100, 250))
        random.shuffle(choices)
        for second in choices:
            if f"{first}.{second}." not in taken:
                return f"{first}.{second}"
        raise RuntimeError("no free address range for the drill's members")

    def add_member(self, name: str, pods: int, *, delay_ms: int = 0) -> list[str]:
        """Make room for a member with `pods` addresses; returns them."""
        if pods > 250:
            raise ValueError(f"member {name}: at most 250 endpoint addresses, not {pods}")
        index = len(self._sites) + 1
        if index > 250:
            raise ValueError("at most 250 members")
        namespace = f"xdsf{self._tag}-{index}" if self.mode is Mode.NAMESPACES else None
        site = _Site(name, index, namespace, delay_ms=delay_ms)
        base = f"{self._prefix}.{index}"
        site.addresses = [f"{base}.{k}" for k in range(2, pods + 2)]
        self._sites[name] = site
        if namespace is not None:
            self._make_namespace(site, base)
        return list(site.addresses)

    def _make_namespace(self, site: _Site, base: str) -> None:
        assert site.namespace is not None
        host_if, member_if = f"xf{self._tag}h{site.index}", f"xf{self._tag}m{site.index}"
        _ip("netns", "add", site.namespace)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", member_if)
        _ip("link", "set", member_if, "netns", site.namespace)
        _ip("addr", "add", f"{base}.1/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for address in site.addresses:
            _ip("-n", site.namespace, "addr", "add", f"{address}/24", "dev", member_if)
        _ip("-n", site.namespace, "link", "set", member_if, "up")
        _ip("-n", site.namespace, "link", "set", "lo", "up")

    def _host_address(self, site: _Site) -> str:
        return f"{self._prefix}.{site.index}.1"

    @property
    def members(self) -> list[str]:
        return list(self._sites)

    def faulted(self) -> list[str]:
        """The members under a fault now."""
        return [name for name, site in self._sites.items() if site.fault is not None]

    def addresses(self, member: str) -> list[str]:
        return list(self._sites[member].addresses)

    # --- backends ------------------------------------------------------------------------

    def start(self, member: str, listen: list[tuple[str, int]]) -> None:
        """Start the member's pods: one process answering on every (address, port)."""
        site = self._sites[member]
        site.listen = list(listen)
        self._spawn(site)

    def _spawn(self, site: _Site) -> None:
        argv = [sys.executable, "-m", "xdsfleet.tools.drill.backends", "--member", site.name]
        argv += ["--delay-ms", str(site.delay_ms)]
        for host, port in site.listen:
            argv += ["--listen", f"{host}:{port}"]
        if site.namespace is not None:
            argv = ["ip", "netns", "exec", site.namespace, *argv]
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        assert process.stdout is not None
        assert process.stderr is not None
        with process.stdout, process.stderr:
            if process.stdout.readline().strip() != b"ready":
                process.wait()
                error = process.stderr.read().decode()
                raise RuntimeError(
                    f"backends of member {site.name} did not start:\n{error[-2000:]}"
                )
        site.process = process

    def _signal(self, site: _Site, sig: signal.Signals) -> None:
        if site.process is not None and site.process.poll() is None:
            os.killpg(site.process.pid, sig)

    # --- faults --------------------------------------------------------------------------

    def inject(self, member: str, fault: Fault) -> None:
        site = self._sites[member]
        if site.fault is not None:
            raise RuntimeError(f"member {member} is already faulted ({site.fault})")
        if fault is Fault.KILL:
            self._signal(site, signal.SIGKILL)
            if site.process is not None:
                site.process.wait()
        elif fault is Fault.HANG:
            self._signal(site, signal.SIGSTOP)
        else:
            if site.namespace is None:
                raise Unsupported(
                    f"cutting member {member} off needs network namespaces ({self.why_loopback})"
                )
            route = ("route", "add", "blackhole", f"{self._host_address(site)}/32")
            _ip("-n", site.namespace, *route)
        site.fault = fault

    def restore(self, member: str) -> None:
        site = self._sites[member]
        fault, site.fault = site.fault, None
        if fault is Fault.KILL:
            self._spawn(site)
        elif fault is Fault.HANG:
            self._signal(site, signal.SIGCONT)
        elif fault is Fault.CUT:
            assert site.namespace is not None
            route = ("route", "del", "blackhole", f"{self._host_address(site)}/32")
            _ip("-n", site.namespace, *route)

    # --- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        for site in self._sites.values():
            process, site.process = site.process, None
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # a stopped process dies of it too
                process.wait()
            if site.namespace is not None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    _ip("netns", "del", site.namespace)  # takes the veth pair with it
        self._sites.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
