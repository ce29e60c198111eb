"""Disaster-recovery scenarios through a real Envoy gateway configured by `xdsfleet serve`, with
no TrafficPolicy tuning: members in network namespaces (loopback where namespaces cannot be
made), backends that answer with their member's name, a load at a fixed rate, and faults: a
member's backends killed, hung (SIGSTOP) or cut off, the whole region lost, a canary member
hung, a member drained, the control plane killed. Outcomes only: which members answer, no failed
request where retries must cover, traffic back after the recovery (docs/failover.md).

One setting differs from the defaults: a first ejection lasts 1 s instead of 5 s, so that the
tests wait less for a recovered member to take traffic again. It decides only when a recovered
member is tried again, not whether a request survives a fault; `make bench-dr` measures the
defaults untouched."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import yaml

from harness.failover import under_fault
from harness.scenarios import (
    CANARY_HEADER,
    GATEWAY,
    HOST,
    REGION_1,
    REGIONAL,
    drain_policy,
    write_fleet,
)
from xdsfleet.tools.drill.figures import answering
from xdsfleet.tools.drill.load import Event, Target
from xdsfleet.tools.drill.processes import wait_for
from xdsfleet.tools.drill.rig import Place, Rig
from xdsfleet.tools.drill.topology import Fault, Mode

pytestmark = pytest.mark.envoy

# Short, lean loads: the outcomes do not depend on their length.
RATE = 100
SECONDS = 2.0
FAULT_AT = 0.5
# A faulted member that recovers is tried again when its ejection ends (longer each time).
RETURN_S = 30


SHORT_EJECTION = {
    "apiVersion": "xdsfleet.io/v1alpha1",
    "kind": "TrafficPolicy",
    "metadata": {"name": "short-ejection", "namespace": "default"},
    "spec": {
        "targetRefs": [{"group": "", "kind": "Service", "name": "shop"}],
        "outlierDetection": {"baseEjectionTime": "1s"},
    },
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    fleet_def = dataclasses.replace(REGIONAL, policies=(SHORT_EJECTION,))
    fleet = write_fleet(fleet_def, tmp_path_factory.mktemp("regional"))
    place = Place(region="eu-west")
    with Rig(fleet, GATEWAY, place=place, delays=REGIONAL.delays) as rig:
        rig.wait_serving(rig.target(HOST), REGION_1)
        yield rig


@pytest.fixture(autouse=True)
def recovered(rig: Rig) -> Iterator[None]:
    """Whatever a test broke is mended after it, so that one failure does not cascade."""
    yield
    rig.restore(rig.topology.faulted())
    if not rig.server.running():
        rig.start_server()


def answering_now(rig: Rig, target: Target) -> set[str]:
    """The members answering a short burst of requests to `target` now."""
    return answering(rig.load(target, rate=50, seconds=0.4)[0], 0)


def comes_back(rig: Rig, members: tuple[str, ...], headers: dict[str, str] | None = None) -> None:
    target = rig.target(HOST, headers=headers)
    wait_for(
        lambda: set(members) <= answering_now(rig, target),
        timeout=RETURN_S,
        what=f"traffic back on {members}",
    )


# First: later tests eject zone-b's hosts, and an ejection lasts longer each time.
def test_canary_requests_fall_back_when_the_canary_member_hangs(rig: Rig) -> None:
    canary = dict([CANARY_HEADER])
    target = rig.target(HOST, headers=canary)
    # Answered by zone-b alone, not only once: until every zone-b host has passed its first
    # health check, Envoy spills part of the canary's traffic to its fallback priorities (seen
    # under load: zone-a and onprem answered before the fault).
    wait_for(
        lambda: answering_now(rig, target) == {"zone-b"},
        timeout=RETURN_S,
        what="canary traffic on zone-b alone",
    )
    run = under_fault(
        rig, target, ["zone-b"], Fault.HANG, rate=RATE, seconds=SECONDS, fault_at=FAULT_AT
    )

    assert run.failed == []
    assert answering(run.samples, 0, run.fault_at) == {"zone-b"}
    after = answering(run.samples, run.faulted_at)
    assert after
    assert "zone-b" not in after
    rig.restore(["zone-b"])
    comes_back(rig, ("zone-b",), canary)


@pytest.mark.parametrize("fault", list(Fault), ids=str)
def test_a_zone_killed_hung_or_cut_off_fails_no_request_and_comes_back(
    rig: Rig, fault: Fault
) -> None:
    if fault is Fault.CUT and rig.topology.mode is Mode.LOOPBACK:
        pytest.skip(f"a cut needs network namespaces: {rig.topology.why_loopback}")
    run = under_fault(
        rig, rig.target(HOST), ["zone-b"], fault, rate=RATE, seconds=SECONDS, fault_at=FAULT_AT
    )

    assert run.failed == []
    after = answering(run.samples, run.faulted_at)
    assert "zone-b" not in after
    assert {"zone-a", "onprem"} <= after
    rig.restore(["zone-b"])
    comes_back(rig, ("zone-b",))


def test_the_region_lost_moves_traffic_to_the_other_region_and_back(rig: Rig) -> None:
    run = under_fault(
        rig, rig.target(HOST), REGION_1, Fault.KILL, rate=RATE, seconds=SECONDS, fault_at=FAULT_AT
    )

    assert run.failed == []
    assert answering(run.samples, 0, run.fault_at) <= set(REGION_1)
    assert answering(run.samples, run.faulted_at) == {"far"}
    rig.restore(REGION_1)
    comes_back(rig, REGION_1)


def test_the_on_prem_member_reached_by_node_port_is_lost_and_restored(rig: Rig) -> None:
    run = under_fault(
        rig, rig.target(HOST), ["onprem"], Fault.KILL, rate=RATE, seconds=SECONDS, fault_at=FAULT_AT
    )

    assert run.failed == []
    assert "onprem" not in answering(run.samples, run.faulted_at)
    rig.restore(["onprem"])
    comes_back(rig, ("onprem",))


def test_a_member_drained_for_an_upgrade_and_brought_back_fails_no_request(rig: Rig) -> None:
    policy = rig.staged.fleet.parent / "routes" / "upgrade.yaml"
    target = rig.target(HOST)

    def drain() -> None:
        policy.write_text(yaml.safe_dump(drain_policy("zone-a")))

    samples, _ = rig.load(target, rate=RATE, seconds=SECONDS, events=[])
    assert "zone-a" in answering(samples, 0)
    samples, _ = rig.load(
        target, rate=RATE, seconds=SECONDS, events=[Event(FAULT_AT, "drain", drain)]
    )
    assert [s for s in samples if not s.ok] == []
    wait_for(
        lambda: "zone-a" not in answering_now(rig, target),
        timeout=RETURN_S,
        what="zone-a drained",
    )
    samples, _ = rig.load(
        target, rate=RATE, seconds=SECONDS, events=[Event(FAULT_AT, "undrain", policy.unlink)]
    )
    assert [s for s in samples if not s.ok] == []
    comes_back(rig, ("zone-a",))


def test_envoy_keeps_serving_without_its_control_plane_and_a_restart_sends_nothing_new(
    rig: Rig,
) -> None:
    # Earlier tests ejected zone-b's hosts several times, each ejection longer than the last:
    # what Envoy must keep is a region where every member takes traffic, so start from one. (It
    # failed once under load with zone-b missing after the kill; not starting from a region
    # whose members all answered together is the likely cause.)
    comes_back(rig, REGION_1)
    target = rig.target(HOST)
    samples, marks = rig.load(
        target, rate=RATE, seconds=SECONDS, events=[Event(FAULT_AT, "kill", rig.kill_server)]
    )
    assert [s for s in samples if not s.ok] == []
    assert set(REGION_1) <= answering(samples, marks[0].at)

    changes = _config_changes(rig)
    rig.start_server()
    wait_for(lambda: _connected(rig), timeout=RETURN_S, what="Envoy back on the control plane")
    assert _config_changes(rig) == changes


_CHANGES = ("cluster_added", "cluster_modified", "cluster_removed")
_LISTENER_CHANGES = ("listener_added", "listener_modified", "listener_removed")


def _config_changes(rig: Rig) -> dict[str, int]:
    stats = rig.envoy.stats()
    names = [f"cluster_manager.{n}" for n in _CHANGES]
    names += [f"listener_manager.{n}" for n in _LISTENER_CHANGES]
    found = {name: stats.get(name, 0) for name in names}
    found.update({k: v for k, v in stats.items() if ".rds." in k and k.endswith("config_reload")})
    return found


def _connected(rig: Rig) -> bool:
    """Envoy is back on a control plane that counts it in sync for every type."""
    clients = rig.server.clients()
    # A stream still waiting for its first request is listed without types: not in sync yet.
    in_sync = bool(clients) and all(
        "types" in c and all(t["inSync"] for t in c["types"].values()) for c in clients
    )
    return in_sync and rig.envoy.stats().get("control_plane.connected_state") == 1
