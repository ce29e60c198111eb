"""`xdsfleet explain` against a real Envoy: the shares it predicts, with and without failures and
drains, are the shares Envoy serves.

Three members share the first tier and one more is the second. Envoy health-checks every
endpoint; a failed member is one whose pods' addresses answer nothing, so Envoy's checks mark them
unhealthy while the member's manifests still list them as ready, which is what `--fail` models.
Each case has its own service, so Envoy's per-host state never leaks between cases. The drained
case drains a member the Fleet way (`drain: true` on the member).

Tolerance: Envoy picks a tier at random by its priority load and then a locality by weight, so
over REQUESTS requests a share is off by about sqrt(p(1-p)/n) <= 2.5 points; each measured share
must lie within TOLERANCE (4 standard deviations) of the prediction.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fleets import FleetFiles, MemberSpec, Pod
from gateways import served_envoy

from harness.local import Backend, Envoy, free_port, get, wait_for
from xdsfleet.model.node import NodeProfile
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.explain import Explanation, Request, Scenario, explain

pytestmark = pytest.mark.envoy

PROFILE = NodeProfile(gateway="default/gw", region="eu-west")
CONVERGE_SECONDS = 30
REQUESTS = 400
TOLERANCE = 0.10
LIVE = {
    "a": [f"127.0.41.{i}" for i in (1, 2, 3)],
    "b": [f"127.0.42.{i}" for i in (1, 2)],
    "d": [f"127.0.43.{i}" for i in (1, 2)],
    "c": [f"127.0.44.{i}" for i in (1, 2)],
}
# Where a failed member's pods are: nothing listens there.
DEAD = {"a": [f"127.0.45.{i}" for i in (1, 2, 3)]}
POLICY = {
    "failover": {"tiers": [{"members": ["a", "b", "d"]}, {"members": ["c"]}]},
    "healthCheck": {
        "type": "HTTP",
        "path": "/healthz",
        # Dead pods refuse at once; a live one must miss three checks in a row (a busy test
        # machine can delay one) before Envoy stops balancing to it.
        "interval": "1s",
        "timeout": "2s",
        "unhealthyThreshold": 3,
        "healthyThreshold": 1,
    },
    # The first pick answers: no retry may move a request to another member.
    "retry": {"attempts": 0},
}


@dataclass
class Gateway:
    files: FleetFiles
    envoy: Envoy

    def apply(self, service: str, failed: set[str], drained: Collection[str] = ()) -> None:
        for member in self.files.members:
            addresses = DEAD[member.name] if member.name in failed else LIVE[member.name]
            member.services = {service: [Pod(address) for address in addresses]}
            member.drain = member.name in drained
        target = {"targetRefs": [{"group": "", "kind": "Service", "name": service}]}
        self.files.policies = {service: {**target, **POLICY}}
        self.files.write()

    def healthy(self, service: str) -> dict[str, bool]:
        """Each host of the service's cluster in Envoy, and whether Envoy balances to it."""
        data = json.loads(self.envoy.admin("/clusters?format=json"))
        found = [c for c in data["cluster_statuses"] if c["name"] == f"default/{service}:80"]
        hosts = found[0].get("host_statuses", []) if found else []
        return {
            h["address"]["socket_address"]["address"]: _balanced(h["health_status"]) for h in hosts
        }

    def shares(self, service: str, expected: dict[str, bool]) -> dict[str, float]:
        """Who answered REQUESTS requests, by share; the hosts' health must be `expected`
        throughout (checked after), or the prediction was not about what Envoy saw."""
        answers = []
        for _ in range(REQUESTS):
            status, body = get(self.files.listener_port, "/", host=f"{service}.example.com")
            answers.append(json.loads(body)["member"] if status == 200 else f"HTTP {status}")
        assert self.healthy(service) == expected, "a host's health changed while measuring"
        return {member: count / REQUESTS for member, count in Counter(answers).items()}


def _balanced(health: dict[str, Any]) -> bool:
    flags = [value for key, value in health.items() if key != "eds_health_status"]
    return health.get("eds_health_status") == "HEALTHY" and not any(v is True for v in flags)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    backends = [
        Backend(member=member, address=address, port=port).start()
        for member, addresses in LIVE.items()
        for address in addresses
    ]
    files = FleetFiles(
        root=tmp_path_factory.mktemp("fleet"),
        members=[
            MemberSpec("a", "eu-west", "eu-west-1a"),
            MemberSpec("b", "eu-west", "eu-west-1b"),
            MemberSpec("c", "us-east", "us-east-1a"),
            MemberSpec("d", "eu-west", "eu-west-1c"),
        ],
        target_port=port,
        listener_port=free_port(),
    )
    files.write()
    try:
        with served_envoy(files.fleet, "explain-gateway", PROFILE) as (_, envoy):
            yield Gateway(files, envoy)
    finally:
        for backend in backends:
            backend.stop()


def predicted(gateway: Gateway, service: str, scenario: Scenario | None) -> dict[str, float]:
    """The shares `explain` predicts for the service (after the scenario, if any)."""
    state = load_fleet(gateway.files.fleet).state
    found = explain(state, PROFILE, Request(f"{service}.example.com"), scenario=scenario)
    return _shares(found, after=scenario is not None)


def _shares(found: Explanation | None, *, after: bool) -> dict[str, float]:
    assert found is not None
    [cluster] = found.clusters
    shares: dict[str, float] = {}
    for loc in cluster.localities:
        share = (loc.after.share if loc.after is not None else 0.0) if after else loc.shares[0]
        shares[loc.member] = shares.get(loc.member, 0.0) + share
    return {member: share for member, share in shares.items() if share > 0}


def converge(
    gateway: Gateway, service: str, failed: set[str], drained: set[str]
) -> dict[str, bool]:
    """Until Envoy holds the service's endpoints, the failed ones found unhealthy by its checks
    and the rest healthy."""
    expected = {
        address: member not in failed
        for member, addresses in LIVE.items()
        if member not in drained
        for address in (DEAD[member] if member in failed else addresses)
    }
    wait_for(
        lambda: gateway.healthy(service) == expected,
        timeout=CONVERGE_SECONDS,
        what=f"Envoy's hosts of {service}",
    )
    return expected


def assert_close(measured: dict[str, float], expected: dict[str, float]) -> None:
    for member in sorted(set(measured) | set(expected)):
        got, want = measured.get(member, 0.0), expected.get(member, 0.0)
        assert abs(got - want) <= TOLERANCE, f"{member}: Envoy {got:.1%}, explain {want:.1%}"


def test_with_every_member_healthy_envoy_serves_the_predicted_shares(gateway: Gateway) -> None:
    gateway.apply("normal", failed=set())
    hosts = converge(gateway, "normal", set(), set())

    expected = predicted(gateway, "normal", None)

    # By ready endpoints inside the first tier: 3, 2 and 2 of 7.
    assert expected == pytest.approx({"a": 3 / 7, "b": 2 / 7, "d": 2 / 7})
    assert_close(gateway.shares("normal", hosts), expected)


def test_a_failed_member_spills_what_overprovisioning_cannot_cover(gateway: Gateway) -> None:
    gateway.apply("partial", failed={"a"})
    hosts = converge(gateway, "partial", {"a"}, set())

    expected = predicted(gateway, "partial", Scenario(failed=frozenset({"a"})))

    # 4 of 7 healthy x 1.4 = 80 %: the first tier keeps 80 %, the second takes 20 %.
    assert expected == pytest.approx({"b": 0.4, "d": 0.4, "c": 0.2})
    assert_close(gateway.shares("partial", hosts), expected)


def test_a_drained_member_and_a_failed_one_spill_as_predicted(gateway: Gateway) -> None:
    gateway.apply("drained", failed={"a"}, drained={"b"})
    hosts = converge(gateway, "drained", {"a"}, {"b"})

    state = load_fleet(gateway.files.fleet).state
    expected = predicted(gateway, "drained", Scenario(failed=frozenset({"a"})))
    # `--drain b` on the same fleet without the drain predicts the same.
    undrained = dataclasses.replace(
        state,
        members=tuple(
            dataclasses.replace(m, member=dataclasses.replace(m.member, drain=False))
            for m in state.members
        ),
    )
    what_if = Scenario(failed=frozenset({"a"}), drained=frozenset({"b"}))
    found = explain(undrained, PROFILE, Request("drained.example.com"), scenario=what_if)
    assert _shares(found, after=True) == pytest.approx(expected)

    # Left in the first tier: a's 3 failed endpoints and d's 2, so 2 of 5 x 1.4 = 56 %.
    assert expected == pytest.approx({"d": 0.56, "c": 0.44})
    assert_close(gateway.shares("drained", hosts), expected)
