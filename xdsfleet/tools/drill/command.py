"""`xdsfleet drill`: a user's fleet stood up locally with their own routes and policies, a fault
injected into some of its members under load through a real Envoy, and the figures printed.

The exit status says whether a request failed, so a drill can gate a change of policy in CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import Role
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.drill.figures import figures
from xdsfleet.tools.drill.load import Event
from xdsfleet.tools.drill.processes import envoy_binary
from xdsfleet.tools.drill.report import Row, table
from xdsfleet.tools.drill.rig import Place, Rig
from xdsfleet.tools.drill.stage import CannotStage
from xdsfleet.tools.drill.topology import Fault, Mode, Topology

FALLBACK_HOST = "drill.example.com"


@dataclass(frozen=True, slots=True)
class Drill:
    fleet: Path
    gateway: str
    members: tuple[str, ...]
    fault: Fault
    rate: float = 200
    seconds: float = 12
    fault_at: float = 3
    restore_at: float | None = 6
    host: str | None = None
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    region: str = ""
    zone: str = ""
    namespaces: bool = True


class DrillError(RuntimeError):
    """The drill could not run (a missing Envoy, a fleet it cannot stage, a bad member)."""


def _host(state: FleetState, gateway: str) -> str:
    """The first hostname a route of the gateway answers for, else any name."""
    namespace, _, name = gateway.partition("/")
    routes = [(r.namespace, r.parent_refs, r.hostnames) for r in state.http_routes]
    routes += [(r.namespace, r.parent_refs, r.hostnames) for r in state.grpc_routes]
    for route_namespace, parent_refs, hostnames in routes:
        parents = {(p.namespace or route_namespace, p.name) for p in parent_refs}
        if (namespace, name) in parents:
            for hostname in hostnames:
                if "*" not in hostname:
                    return str(hostname)
    return FALLBACK_HOST


def run(drill: Drill, console: Console) -> bool:
    """Run the drill, print what happened; True when no request failed."""
    try:
        envoy_binary()
    except FileNotFoundError as error:
        raise DrillError(str(error)) from None
    known = {m.member.name for m in load_fleet(drill.fleet).state.members}
    unknown = [m for m in drill.members if m not in known]
    if unknown:
        raise DrillError(f"no member {', '.join(unknown)} in {drill.fleet}")
    if drill.fault is Fault.CUT:
        with Topology(namespaces=drill.namespaces) as probe:
            if probe.mode is Mode.LOOPBACK:
                why = probe.why_loopback
                raise DrillError(f"a cut needs network namespaces ({why}): run as root")
    place = Place(role=Role.GATEWAY, region=drill.region, zone=drill.zone)
    try:
        rig = Rig(drill.fleet, drill.gateway, place=place, namespaces=drill.namespaces)
        with rig:
            if rig.topology.mode is Mode.LOOPBACK:
                why = rig.topology.why_loopback
                console.print(f"[yellow]members on loopback addresses[/yellow] ({why})")
            else:
                console.print("members in network namespaces of their own")
            host = drill.host or _host(rig.staged.state, drill.gateway)
            target = rig.target(host, headers=dict(drill.headers), path=drill.path)
            rig.wait_serving(target)
            members, fault = drill.members, drill.fault
            events = [Event(drill.fault_at, "fault", lambda: rig.inject(members, fault))]
            if drill.restore_at is not None:
                events.append(Event(drill.restore_at, "restore", lambda: rig.restore(members)))
            console.print(
                f"{drill.rate:g} requests/s to {host}{drill.path} for {drill.seconds:g} s; "
                f"{drill.fault} {', '.join(drill.members)} at {drill.fault_at:g} s"
                + (f", restored at {drill.restore_at:g} s" if drill.restore_at is not None else "")
            )
            samples, marks = rig.load(target, rate=drill.rate, seconds=drill.seconds, events=events)
    except CannotStage as error:
        raise DrillError(str(error)) from None
    at = {m.label: m.at for m in marks}
    found = figures(
        samples, fault_at=at["fault"], restore_at=at.get("restore"), members=drill.members
    )
    console.print(table([Row(drill.gateway, str(drill.fault), found)], title="Drill"))
    if found.failed:
        console.print(f"[red]{found.failed} of {found.requests} requests failed[/red]")
    else:
        console.print(f"[green]no request failed[/green] ({found.requests} requests)")
    return found.failed == 0
