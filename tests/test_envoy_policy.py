"""Traffic policy through a real Envoy gateway: shares, tiers, canaries, ejection, retries, drain.

One server and one Envoy serve the whole module; each test writes the complete fleet it needs
(its own service, so Envoy's per-host state never leaks between tests) and waits until Envoy
shows it. Pods are HTTP backends on loopback addresses of their own; a sick pod answers 503 and
a dead one is an address where nothing listens. Assertions are on what Envoy answers and counts.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fleets import FleetFiles, MemberSpec, Pod
from gateways import served_envoy

from harness.local import Backend, Envoy, Server, free_port, get, wait_for
from xdsfleet.model.node import NodeProfile

pytestmark = pytest.mark.envoy

# The gateway stands in eu-west without a zone: east and west share its tier, far is the next.
PROFILE = NodeProfile(gateway="default/gw", region="eu-west")
CONVERGE_SECONDS = 20
HEALTHY = {
    "east": [f"127.0.31.{i}" for i in (1, 2, 3)],
    "west": [f"127.0.32.{i}" for i in (1, 2, 3)],
    "far": ["127.0.33.1"],
}
SICK = "127.0.31.9"  # answers 503
DEAD = "127.0.31.8"  # nothing listens


@dataclass
class Gateway:
    files: FleetFiles
    server: Server
    envoy: Envoy

    def answers(
        self, service: str, requests: int = 20, headers: dict[str, str] | None = None
    ) -> list[str]:
        """Who answered each request: a member, or `HTTP <status>`."""
        found = []
        for _ in range(requests):
            status, body = get(
                self.files.listener_port, "/", host=f"{service}.example.com", headers=headers
            )
            found.append(json.loads(body)["member"] if status == 200 else f"HTTP {status}")
        return found

    def stat(self, cluster: str, *path: str) -> int:
        """A counter of `cluster` (Envoy writes `:` in stat names as `_`)."""
        name = ".".join(("cluster", cluster.replace(":", "_"), *path))
        for line in self.envoy.admin("/stats").splitlines():
            stat, _, value = line.partition(": ")
            if stat == name:
                return int(value)
        return 0

    def apply(self, members: dict[str, dict[str, list[Pod]]], **fleet: Any) -> None:
        """Write a whole fleet: member -> service -> pods, plus policies and rules."""
        for member in self.files.members:
            member.services = members.get(member.name, {})
        self.files.policies = fleet.get("policies", {})
        self.files.rules = fleet.get("rules", {})
        self.files.write()


@pytest.fixture(scope="module")
def backend_port() -> Iterator[int]:
    port = free_port()
    started = [
        Backend(member=member, address=address, port=port).start()
        for member, addresses in HEALTHY.items()
        for address in addresses
    ]
    started.append(Backend(member="east", address=SICK, port=port, status=503).start())
    try:
        yield port
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, backend_port: int) -> Iterator[Gateway]:
    files = FleetFiles(
        root=tmp_path_factory.mktemp("fleet"),
        members=[
            MemberSpec("east", "eu-west", "eu-west-1a"),
            MemberSpec("west", "eu-west", "eu-west-1b"),
            MemberSpec("far", "us-east", "us-east-1a"),
        ],
        target_port=backend_port,
        listener_port=free_port(),
    )
    files.write()
    with served_envoy(files.fleet, "policy-gateway", PROFILE) as (server, envoy):
        yield Gateway(files, server, envoy)


def converge(condition: Any, what: str) -> None:
    wait_for(condition, timeout=CONVERGE_SECONDS, what=what)


def pods(member: str, count: int = 1, ready: bool = True) -> list[Pod]:
    return [Pod(address, ready) for address in HEALTHY[member][:count]]


def share(answers: list[str], member: str) -> float:
    return Counter(answers)[member] / len(answers)


def test_by_default_traffic_follows_ready_replicas(gateway: Gateway) -> None:
    gateway.apply({"east": {"replicas": pods("east", 2)}, "west": {"replicas": pods("west", 1)}})
    converge(lambda: set(gateway.answers("replicas")) == {"east", "west"}, "both members")

    answers = gateway.answers("replicas", 90)

    # Two pods against one: Envoy's locality scheduler is exact over a run this long.
    assert 0.55 <= share(answers, "east") <= 0.78
    assert set(answers) == {"east", "west"}


def test_member_weights_split_a_tier_and_the_next_tier_takes_over_when_it_empties(
    gateway: Gateway,
) -> None:
    policy = {
        "targetRefs": [{"group": "", "kind": "Service", "name": "weighted"}],
        # Weights are shares whatever the replicas: one pod in east against three in west.
        "members": [{"name": "east", "weight": 80}, {"name": "west", "weight": 20}],
        "failover": {"tiers": [{"members": ["east", "west"]}, {"members": ["far"]}]},
    }
    members = {
        "east": {"weighted": pods("east", 1)},
        "west": {"weighted": pods("west", 3)},
        "far": {"weighted": pods("far")},
    }
    gateway.apply(members, policies={"weighted": policy})
    converge(lambda: set(gateway.answers("weighted")) == {"east", "west"}, "east and west")

    answers = gateway.answers("weighted", 100)
    assert 0.7 <= share(answers, "east") <= 0.9
    assert "far" not in answers

    members["east"]["weighted"] = pods("east", 1, ready=False)
    members["west"]["weighted"] = pods("west", 3, ready=False)
    gateway.apply(members, policies={"weighted": policy})
    converge(lambda: set(gateway.answers("weighted")) == {"far"}, "the next tier")


def test_a_canary_match_goes_to_the_pinned_member_and_falls_back_when_it_empties(
    gateway: Gateway,
) -> None:
    backend = gateway.files.backend("canary")
    rules = [
        {
            "name": "canary",
            "matches": [
                {"headers": [{"name": "x-canary", "value": "true"}]},
                {
                    "headers": [
                        {
                            "type": "RegularExpression",
                            "name": "cookie",
                            "value": "(.*; )?canary=true(;.*)?",
                        }
                    ]
                },
            ],
            "backendRefs": [backend],
        },
        {"backendRefs": [backend]},
    ]
    pin = {
        "targetRefs": [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "name": "canary",
                "sectionName": "canary",
            }
        ],
        "pin": {"members": ["west"]},
    }
    members = {"east": {"canary": pods("east", 2)}, "west": {"canary": pods("west", 1)}}
    gateway.apply(members, policies={"pin": pin}, rules={"canary": rules})
    flagged = {"x-canary": "true"}
    converge(lambda: set(gateway.answers("canary", headers=flagged)) == {"west"}, "pinned")

    assert set(gateway.answers("canary", headers={"cookie": "a=1; canary=true"})) == {"west"}
    assert set(gateway.answers("canary", 30)) == {"east", "west"}

    members["west"]["canary"] = pods("west", 1, ready=False)
    gateway.apply(members, policies={"pin": pin}, rules={"canary": rules})
    converge(lambda: set(gateway.answers("canary", headers=flagged)) == {"east"}, "fallback")


def test_a_member_answering_gateway_errors_is_ejected_and_traffic_fails_over(
    gateway: Gateway,
) -> None:
    policy = {
        "targetRefs": [{"group": "", "kind": "Service", "name": "sick"}],
        "failover": {"tiers": [{"members": ["east"]}, {"members": ["west"]}]},
        "outlierDetection": {"consecutiveGatewayErrors": 3},
        # No retries: the errors reach the client until Envoy ejects the pod.
        "retry": {"attempts": 0},
    }
    members = {"east": {"sick": [Pod(SICK)]}, "west": {"sick": pods("west", 1)}}
    gateway.apply(members, policies={"sick": policy})
    converge(lambda: gateway.answers("sick", 1) == ["west"], "traffic off the sick pod")

    assert gateway.stat("default/sick:80", "outlier_detection", EJECTIONS) == 1
    assert set(gateway.answers("sick", 20)) == {"west"}


EJECTIONS = "ejections_enforced_consecutive_gateway_failure"


def test_a_retry_after_a_refused_connection_goes_to_the_next_priority(gateway: Gateway) -> None:
    policy = {
        "targetRefs": [{"group": "", "kind": "Service", "name": "refused"}],
        "failover": {"tiers": [{"members": ["east"]}, {"members": ["west"]}]},
        # Without ejection and the gateway's default probe, every request meets the dead pod
        # first: only the retry saves it.
        "outlierDetection": {"enabled": False},
        "healthCheck": {"enabled": False},
    }
    members = {"east": {"refused": [Pod(DEAD)]}, "west": {"refused": pods("west", 1)}}
    gateway.apply(members, policies={"refused": policy})
    converge(lambda: gateway.answers("refused", 1) == ["west"], "routes to the service")
    retried = ("default/refused:80", "upstream_rq_retry_success")
    before = gateway.stat(*retried)

    assert gateway.answers("refused", 20) == ["west"] * 20
    # Each request met the dead pod in priority 0 and was retried in priority 1.
    assert gateway.stat(*retried) - before == 20


def test_a_policy_naming_a_member_not_in_the_fleet_applies_and_is_reported(
    gateway: Gateway,
) -> None:
    policy = {
        "targetRefs": [{"group": "", "kind": "Service", "name": "unknown"}],
        "failover": {"tiers": [{"members": ["west"]}, {"members": ["nowhere"]}]},
    }
    members = {"east": {"unknown": pods("east", 1)}, "west": {"unknown": pods("west", 1)}}
    gateway.apply(members, policies={"unknown": policy})
    converge(lambda: set(gateway.answers("unknown")) == {"west"}, "the policy's first tier")

    def unresolved() -> list[tuple[str, str, str]]:
        """The policy's references reported and not (yet) resolved again: the files are written
        one by one, so a state between two writes may briefly miss the member's Service."""
        outstanding: list[tuple[str, str, str]] = []
        for event in gateway.server.events("source_unresolved", "source_resolved"):
            if event["object"] != "TrafficPolicy default/unknown":
                continue
            key = (event["file"], event["field"], event["message"])
            if event["event"] == "source_unresolved":
                outstanding.append(key)
            elif key in outstanding:
                outstanding.remove(key)
        return outstanding

    expected = [
        (
            str(gateway.files.root.resolve() / "routes" / "policies.yaml"),
            "spec.failover.tiers[1].members[0]",
            "member nowhere is not in the Fleet",
        )
    ]
    converge(lambda: unresolved() == expected, "the reference reported")
    assert 'xdsfleet_unresolved_references{source="files"} 1.0' in gateway.server.metrics()


def test_draining_and_undraining_a_member_fails_no_request(gateway: Gateway) -> None:
    members = {"east": {"drain": pods("east", 1)}, "west": {"drain": pods("west", 1)}}
    target = {"targetRefs": [{"group": "", "kind": "Service", "name": "drain"}]}
    ramp = {"loadBalancer": {"slowStart": {"window": "2s"}}}
    gateway.apply(members, policies={"drain": {**target, **ramp}})
    converge(lambda: set(gateway.answers("drain")) == {"east", "west"}, "both members")
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        for _ in range(20_000):  # bounded: the test stops it long before
            if stop.is_set():
                return
            statuses.append(get(gateway.files.listener_port, "/", host="drain.example.com")[0])

    loader = threading.Thread(target=load, name="drain-load")
    loader.start()
    try:
        drained = {**target, **ramp, "members": [{"name": "east", "drain": True}]}
        gateway.apply(members, policies={"drain": drained})
        converge(lambda: set(gateway.answers("drain")) == {"west"}, "east drained")
        gateway.apply(members, policies={"drain": {**target, **ramp}})
        converge(lambda: "east" in gateway.answers("drain", 40), "east back")
        # Its share ramps back over the slow-start window, then is whole: one pod against one.
        converge(lambda: bool(gateway.server.events("undrain_ramp_finished")), "the ramp done")
        converge(lambda: 0.4 <= share(gateway.answers("drain", 40), "east") <= 0.6, "east's share")
    finally:
        stop.set()
        loader.join()

    assert statuses
    assert Counter(statuses) == {200: len(statuses)}
