"""The DNS baseline of `make bench-dr`: the same load and faults as the same-region scenario,
through an Envoy that finds the service by DNS, as a fleet without a control plane would.

- Two members (zone-a, zone-b, two pods each) in network namespaces, as in the scenarios.
- dnsmasq on a high loopback port answers `shop.dr.test` with every healthy pod address, TTL 30 s.
- A health checker, as DNS failover services run one: every 5 s an HTTP GET to each pod (2 s
  timeout); after 3 failures in a row the pod leaves the record, after 1 success it returns (the
  record is rewritten and dnsmasq reloaded at once).
- Envoy: one STRICT_DNS cluster that respects the TTL (re-resolving when it expires), with
  retries as a careful static configuration has them (connect-failure, refused-stream, 503; 2
  retries on other hosts), Envoy's default timeouts, no outlier detection, no health checks.

So the disruption is detection (up to interval times threshold: 15 s) plus the TTL (30 s),
measured.
dnsmasq comes from Debian (`make bench-dr` installs it when missing).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from xdsfleet.tools.drill.figures import figures
from xdsfleet.tools.drill.load import Event, Mark, Sample, Target
from xdsfleet.tools.drill.processes import Envoy, free_port, get, wait_for
from xdsfleet.tools.drill.report import Row
from xdsfleet.tools.drill.rig import asyncio_load
from xdsfleet.tools.drill.topology import Fault, Topology

NAME = "shop.dr.test"
PORT = 8080
TTL_S = 30
INTERVAL_S = 5.0
THRESHOLD = 3
PROBE_TIMEOUT_S = 2.0
# Long enough for detection and the TTL twice: after the fault, and after the restore.
SECONDS = 100.0
FAULT_AT = 3.0
RESTORE_AT = 55.0


def _answers(port: int) -> bool:
    """Whether a DNS server on 127.0.0.1:`port` answers an A query for NAME."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in NAME.split("."))
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            return sock.recv(512)[:2] == b"\x12\x34"
        except OSError:
            return False


class Dnsmasq:
    def __init__(self, hosts: Path, addresses: Sequence[str]) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.port = free_port()
        self.hosts = hosts
        self._write(addresses)
        argv = [binary, "--keep-in-foreground", f"--port={self.port}"]
        argv += ["--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts"]
        argv += [f"--addn-hosts={hosts}", f"--local-ttl={TTL_S}", "--no-negcache"]
        argv += ["--user=root", "--pid-file", "--log-facility=/dev/null"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Until it answers, a SIGHUP would kill it rather than reload it.
        wait_for(lambda: _answers(self.port), timeout=10, what="dnsmasq answers")

    def _write(self, addresses: Sequence[str]) -> None:
        self.hosts.write_text("".join(f"{a} {NAME}\n" for a in addresses))

    def publish(self, addresses: Sequence[str]) -> None:
        self._write(addresses)
        self._process.send_signal(signal.SIGHUP)  # re-reads --addn-hosts

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()


class HealthChecker:
    """Probes every pod; publishes the healthy ones when that set changes."""

    def __init__(self, addresses: Sequence[str], dns: Dnsmasq) -> None:
        self.addresses = list(addresses)
        self.dns = dns
        self.failures = dict.fromkeys(self.addresses, 0)
        self.healthy = set(self.addresses)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dns-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _probe(self, address: str, results: dict[str, bool]) -> None:
        status, _ = get(PORT, address=address, timeout=PROBE_TIMEOUT_S)
        results[address] = status == 200

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            results: dict[str, bool] = {}
            probes = [
                threading.Thread(target=self._probe, args=(a, results)) for a in self.addresses
            ]
            for probe in probes:
                probe.start()
            for probe in probes:
                probe.join()
            healthy = set(self.healthy)
            for address, ok in results.items():
                self.failures[address] = 0 if ok else self.failures[address] + 1
                if ok:
                    healthy.add(address)
                elif self.failures[address] >= THRESHOLD:
                    healthy.discard(address)
            if healthy != self.healthy and healthy:
                self.healthy = healthy
                self.dns.publish(sorted(healthy))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _bootstrap(listener: int, dns_port: int) -> dict[str, Any]:
    retry = {
        "retry_on": "connect-failure,refused-stream,retriable-status-codes",
        "retriable_status_codes": [503],
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
    }
    route = {"match": {"prefix": "/"}, "route": {"cluster": "shop", "retry_policy": retry}}
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "dns",
        "route_config": {"virtual_hosts": [{"name": "shop", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    resolver = {
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": [{"socket_address": {"address": "127.0.0.1", "port_value": dns_port}}],
            "dns_resolver_options": {"no_default_search_domain": True},
        },
    }
    endpoint = {"address": {"socket_address": {"address": NAME, "port_value": PORT}}}
    cluster = {
        "name": "shop",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "dns_lookup_family": "V4_ONLY",
        "respect_dns_ttl": True,
        "dns_refresh_rate": "5s",
        "typed_dns_resolver_config": resolver,
        "load_assignment": {
            "cluster_name": "shop",
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }
    listener_config: dict[str, Any] = {
        "name": "http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    listener_config["filter_chains"][0]["filters"][0]["typed_config"] = manager
    return {"static_resources": {"listeners": [listener_config], "clusters": [cluster]}}


@dataclass(frozen=True)
class Baseline:
    row: Row
    samples: list[Sample]
    marks: list[Mark]


def run_one(fault: Fault, rate: float, console: Console) -> Baseline:
    with tempfile.TemporaryDirectory(prefix="xdsfleet-dns-") as tmp, Topology() as topology:
        members = {m: topology.add_member(m, 2) for m in ("zone-a", "zone-b")}
        for member, addresses in members.items():
            topology.start(member, [(a, PORT) for a in addresses])
        pods = [a for addresses in members.values() for a in addresses]
        dns = Dnsmasq(Path(tmp) / "hosts", pods)
        checker = HealthChecker(pods, dns)
        checker.start()
        listener = free_port()
        try:
            with Envoy(_bootstrap(listener, dns.port)) as envoy:
                envoy.start()
                target = Target(listener, NAME)
                wait_for(lambda: get(listener, host=NAME)[0] == 200, timeout=30, what="DNS route")
                events = [
                    Event(FAULT_AT, "fault", lambda: topology.inject("zone-b", fault)),
                    Event(RESTORE_AT, "restore", lambda: topology.restore("zone-b")),
                ]
                console.print(f"  DNS baseline: {fault} ({SECONDS:g} s)")
                samples, marks = asyncio_load(target, rate=rate, seconds=SECONDS, events=events)
        finally:
            checker.stop()
            dns.stop()
    at = {m.label: m.at for m in marks}
    found = figures(samples, fault_at=at["fault"], restore_at=at["restore"], members=["zone-b"])
    setup = f"DNS failover (TTL {TTL_S} s, checks every {INTERVAL_S:g} s, {THRESHOLD} to fail)"
    return Baseline(Row(setup, str(fault), found), samples, marks)


def run_all(rate: float, console: Console) -> list[Baseline]:
    """Each fault once, SECONDS long: DNS needs longer than the scenarios' runs."""
    return [run_one(fault, rate, console) for fault in Fault]
