"""`make demo`: the built-in fleet served to a real Envoy gateway, and a failover watched live.

Backends on loopback addresses stand in for each member's pods. The demo sends requests through
the gateway and prints which member answered what share: first from a gateway with no
locality (shares follow replicas), then from one in zone eu-west-1a (its own zone first), then
while that zone's pods and then the rest of its region go unready (traffic moves to the next
tier). It needs no terminal input, ends by itself and exits non-zero if a share is wrong.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from harness.local import Backend, Envoy, Server, get, wait_for
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.sources.files import builtin_fleet_path, load_fleet
from xdsfleet.tools.bootstrap import Target, envoy_bootstrap

GATEWAY = "default/demo"
HOST = "shop.example.com"
# Shares are compared with this slack: Envoy's weighted round robin is exact over long runs,
# but a short run starts wherever its scheduler happens to be.
TOLERANCE = 0.12

console = Console()


@dataclass(frozen=True)
class Step:
    title: str
    expected: dict[str, float]  # member -> share


@contextmanager
def fleet_copy(listener_port: int | None) -> Iterator[Path]:
    """The built-in fleet in a temporary directory, so the demo can edit it."""
    source = builtin_fleet_path().resolve().parent
    with tempfile.TemporaryDirectory(prefix="xdsfleet-demo-") as tmp:
        root = Path(tmp) / "fleet"
        shutil.copytree(source, root)
        if listener_port is not None:
            _set_listener_port(root, listener_port)
        yield root / "fleet.yaml"


def _set_listener_port(root: Path, port: int) -> None:
    for path in root.rglob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        gateways = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Gateway"]
        for gateway in gateways:
            for listener in gateway["spec"]["listeners"]:
                listener["port"] = port
        if gateways:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def listener_port(state: FleetState) -> int:
    namespace, name = GATEWAY.split("/")
    [gateway] = [g for g in state.gateways if (g.namespace, g.name) == (namespace, name)]
    return gateway.listeners[0].port


def backends(state: FleetState) -> list[Backend]:
    return [
        Backend(member=m.member.name, address=address, port=port.port)
        for m in state.members
        for s in m.endpoint_slices
        for port in s.ports[:1]
        for e in s.endpoints
        for address in e.addresses
    ]


def mark_unready(fleet: Path, member: str) -> None:
    """Edit a member's EndpointSlices as Kubernetes would when its pods fail readiness."""
    for path in (fleet.parent / "members" / member).glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "EndpointSlice":
                for endpoint in doc.get("endpoints", []):
                    endpoint["conditions"] = {"ready": False, "serving": False}
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def sample(port: int, requests: int) -> Counter[str]:
    answered: Counter[str] = Counter()
    for _ in range(requests):
        status, body = get(port, "/", host=HOST)
        answered[json.loads(body)["member"] if status == 200 else f"HTTP {status}"] += 1
    return answered


def report(step: Step, answered: Counter[str]) -> bool:
    total = sum(answered.values())
    table = Table(title=step.title, title_justify="left")
    for column in ("member", "requests", "share", "expected"):
        table.add_column(column, justify="left" if column == "member" else "right")
    ok = True
    for member in sorted(set(step.expected) | set(answered)):
        share = answered[member] / total
        expected = step.expected.get(member, 0.0)
        good = abs(share - expected) <= TOLERANCE
        ok &= good
        mark = "" if good else " [red]✗[/red]"
        table.add_row(member, str(answered[member]), f"{share:.0%}", f"{expected:.0%}{mark}")
    console.print(table)
    return ok


def run(requests: int, listener: int | None) -> bool:
    with ExitStack() as stack:
        fleet = stack.enter_context(fleet_copy(listener))
        state = load_fleet(fleet).state
        port = listener_port(state)
        for backend in backends(state):
            stack.callback(backend.start().stop)
        server = stack.enter_context(Server(fleet)).start()
        console.print(
            f"xdsfleet serving [bold]{state.name}[/bold] on port {server.xds_port}: "
            + ", ".join(
                f"{m.member.name} ({m.member.region}/{m.member.zone})" for m in state.members
            )
        )
        target = Target(port=server.xds_port)
        ok = True

        def gateway(region: str = "", zone: str = "") -> Envoy:
            profile = NodeProfile(role=Role.GATEWAY, gateway=GATEWAY, region=region, zone=zone)
            boot = envoy_bootstrap(
                node_id=f"demo-gateway-{zone or 'anywhere'}",
                cluster="demo",
                profile=profile,
                target=target,
                admin_port=0,
            )
            envoy = stack.enter_context(Envoy(boot)).start()
            wait_for(lambda: get(port, "/", host=HOST)[0] == 200, timeout=20, what="first route")
            return envoy

        anywhere = gateway()
        ok &= report(
            Step(
                "Gateway with no locality: shares follow ready replicas",
                {"zone-a": 0.4, "zone-b": 0.4, "idc": 0.2},
            ),
            sample(port, requests),
        )
        anywhere.stop()

        gateway(region="eu-west", zone="eu-west-1a")
        ok &= report(
            Step("Gateway in eu-west/eu-west-1a: its own zone first", {"zone-a": 1.0}),
            sample(port, requests),
        )
        for member, step in (
            ("zone-a", Step("zone-a unready: the rest of eu-west next", {"zone-b": 1.0})),
            ("zone-b", Step("zone-b unready too: on-prem last", {"idc": 1.0})),
        ):
            started = time.monotonic()
            mark_unready(fleet, member)
            wait_for(partial(member_gone, port, member), timeout=20, what=f"traffic off {member}")
            console.print(
                f"[dim]{member} marked unready; traffic moved within "
                f"{time.monotonic() - started:.2f} s (file watch included)[/dim]"
            )
            ok &= report(step, sample(port, requests))
        return ok


def member_gone(port: int, member: str) -> bool:
    return member not in sample(port, 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests per step")
    parser.add_argument(
        "--listener-port", type=int, default=None, help="override the Gateway listener port"
    )
    args = parser.parse_args(argv)
    ok = run(args.requests, args.listener_port)
    console.print("[green]demo passed[/green]" if ok else "[red]demo failed[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
