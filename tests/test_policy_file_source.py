"""A TrafficPolicy file is followed like every other: a broken edit is rejected alone, visibly,
and the policy's last good version keeps applying."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs
from test_file_source import following, hostname_routes, hostnames, make_fleet, write

from xdsfleet.model.fleet import FleetState
from xdsfleet.model.policy import MemberPolicy
from xdsfleet.telemetry import metrics

POLICY = """\
apiVersion: xdsfleet.io/v1alpha1
kind: TrafficPolicy
metadata: {name: shop, namespace: default}
spec:
  targetRefs: [{kind: Service, name: shop}]
  members: [{name: zone-a, weight: WEIGHT}]
"""


def weights(state: FleetState) -> list[tuple[MemberPolicy, ...]]:
    return [p.spec.members for p in state.policies]


def rejections() -> float:
    return float(metrics.SOURCE_REJECTIONS.labels("files")._value.get())


async def test_a_broken_policy_is_rejected_alone_and_its_last_good_version_applies(
    tmp_path: Path,
) -> None:
    fleet = make_fleet(tmp_path)
    policies = write(tmp_path / "routes" / "policies.yaml", POLICY.replace("WEIGHT", "80"))
    counted = rejections()
    with capture_logs() as logs:
        async with following(fleet) as (source, states, first):
            assert weights(first) == [(MemberPolicy("zone-a", weight=80),)]
            write(policies, POLICY.replace("WEIGHT", "80000"))
            # Written after the bad edit, so its state shows that the bad edit was handled.
            write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
            state = await states.next()

            assert hostnames(state) == ["www.example.com"]
            assert weights(state) == [(MemberPolicy("zone-a", weight=80),)]
            assert [(p.file, p.obj, p.field) for p in source.problems] == [
                (str(policies), "TrafficPolicy default/shop", "spec.members[0].weight")
            ]
    (rejected,) = [e for e in logs if e["event"] == "source_rejected"]
    assert rejected["file"] == str(policies)
    assert rejections() == counted + 1
