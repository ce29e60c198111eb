"""A sidecar's outbound route survives a hung member as a gateway's does, with no TrafficPolicy:
the same per-try timeout, hedging and ejection, without the gateway's probe (docs/failover.md).
Through a real Envoy in the sidecar role, configured by `xdsfleet serve`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.failover import under_fault
from harness.scenarios import GATEWAY, FleetDef, MemberDef, write_fleet
from xdsfleet.model.node import Role
from xdsfleet.tools.drill.figures import answering
from xdsfleet.tools.drill.processes import free_port
from xdsfleet.tools.drill.rig import Place, Rig
from xdsfleet.tools.drill.topology import Fault

pytestmark = pytest.mark.envoy

SERVICE_HOST = "shop.default.svc.clusterset.local"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, int]]:
    # The sidecar listens on the service's port: a free one, so that runs do not collide.
    port = free_port()
    fleet = FleetDef(
        name="sidecars",
        members=(
            MemberDef("zone-a", "eu-west", "eu-west-1a", pods=2),
            MemberDef("zone-b", "eu-west", "eu-west-1b", pods=2),
        ),
        service_port=port,
    )
    path = write_fleet(fleet, tmp_path_factory.mktemp("sidecars"))
    with Rig(path, GATEWAY, place=Place(role=Role.SIDECAR, region="eu-west")) as rig:
        rig.wait_serving(rig.target(SERVICE_HOST, port=port), ["zone-a", "zone-b"])
        yield rig, port


def test_a_hung_member_fails_no_request_through_a_sidecar(sidecar: tuple[Rig, int]) -> None:
    rig, port = sidecar
    target = rig.target(SERVICE_HOST, port=port)
    run = under_fault(rig, target, ["zone-b"], Fault.HANG, rate=100, seconds=2.0, fault_at=0.5)

    assert run.failed == []
    assert answering(run.samples, run.faulted_at) == {"zone-a"}
