"""A fleet standing on this machine: members' backends in the topology, `xdsfleet serve` serving
the staged copy of the fleet, and a real Envoy (a gateway, or a sidecar) configured by it.

Faults and loads are run against a rig; one rig serves many runs (tests share one per module).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.tools.bootstrap import Target as ControlPlane
from xdsfleet.tools.bootstrap import envoy_bootstrap
from xdsfleet.tools.drill.load import Event, Mark, Sample, Target, run_load
from xdsfleet.tools.drill.processes import Envoy, Server, get, wait_for
from xdsfleet.tools.drill.stage import Staged, stage
from xdsfleet.tools.drill.topology import Fault, Topology

READY_S = 30


@dataclass(frozen=True, slots=True)
class Place:
    """Where the Envoy stands: its role and locality (tiers by topology are relative to it)."""

    role: Role = Role.GATEWAY
    region: str = ""
    zone: str = ""
    member: str | None = None


def asyncio_load(
    target: Target, *, rate: float, seconds: float, events: Sequence[Event] = ()
) -> tuple[list[Sample], list[Mark]]:
    """`run_load` from synchronous code."""
    return asyncio.run(run_load(target, rate=rate, seconds=seconds, events=events))


class Rig:
    """Use as a context manager: everything it starts stops at exit."""

    def __init__(
        self,
        fleet: Path,
        gateway: str,
        *,
        place: Place = Place(),
        delays: dict[str, int] | None = None,
        namespaces: bool = True,
    ) -> None:
        self._stack = ExitStack()
        self._fleet = fleet
        self.gateway = gateway
        self.place = place
        self._delays = delays or {}
        self._namespaces = namespaces
        self.topology: Topology
        self.staged: Staged
        self.server: Server
        self.envoy: Envoy

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        work = Path(
            self._stack.enter_context(tempfile.TemporaryDirectory(prefix="xdsfleet-drill-"))
        )
        self.topology = self._stack.enter_context(Topology(namespaces=self._namespaces))
        delays = self._delays
        self.staged = stage(self._fleet, self.gateway, self.topology, Path(work), delays=delays)
        for member, listen in self.staged.listen.items():
            self.topology.start(member, listen)
        self.server = self._stack.enter_context(Server(self.staged.fleet)).start()
        self.envoy = self._stack.enter_context(Envoy(self._bootstrap())).start()

    def _bootstrap(self) -> dict[str, object]:
        place = self.place
        profile = NodeProfile(
            role=place.role,
            gateway=self.gateway if place.role is Role.GATEWAY else None,
            member=place.member,
            region=place.region,
            zone=place.zone,
        )
        return envoy_bootstrap(
            node_id=f"drill-{place.role.value}",
            cluster="drill",
            profile=profile,
            target=ControlPlane(port=self.server.xds_port),
            admin_port=0,
        )

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    # --- traffic -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return str(self.topology.mode)

    def target(
        self,
        host: str,
        *,
        port: int | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/",
    ) -> Target:
        """Requests to the gateway's first listener (or `port`, a sidecar's outbound one)."""
        chosen = port or next(iter(self.staged.listeners.values()))
        return Target(chosen, host, path, tuple((headers or {}).items()))

    def wait_serving(self, target: Target, members: Iterable[str] = ()) -> None:
        """Until the target answers, and from each of `members` when given."""
        wanted = set(members)
        seen: set[str] = set()
        headers = dict(target.headers)

        def ready() -> bool:
            status, body = get(target.port, target.path, host=target.host, headers=headers)
            if status == 200:
                seen.add(str(json.loads(body)["member"]))
            return status == 200 and wanted <= seen

        wait_for(
            ready, timeout=READY_S, what=f"{target.host} served by {sorted(wanted) or 'anyone'}"
        )

    def load(
        self,
        target: Target,
        *,
        rate: float,
        seconds: float,
        events: Sequence[Event] = (),
    ) -> tuple[list[Sample], list[Mark]]:
        return asyncio_load(target, rate=rate, seconds=seconds, events=events)

    # --- faults --------------------------------------------------------------------------

    def inject(self, members: Iterable[str], fault: Fault) -> None:
        for member in members:
            self.topology.inject(member, fault)

    def restore(self, members: Iterable[str]) -> None:
        for member in members:
            self.topology.restore(member)

    def kill_server(self) -> None:
        """The control plane dies (SIGKILL): Envoy keeps what it has."""
        self.server.kill()

    def start_server(self) -> None:
        """A new control plane at the same address (a restart, or another replica)."""
        self.server = self._stack.enter_context(
            Server(self.staged.fleet, xds_port=self.server.xds_port)
        )
        self.server.start()
