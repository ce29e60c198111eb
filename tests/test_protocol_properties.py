"""Both protocol machines against an Envoy-like client under any interleaving (hypothesis).

Rules checked one at a time miss what happens when they interleave, and interleavings are what a
failover produces: removals published at once, pushes overtaking a busy client's requests,
clients reconnecting to another replica. Here hypothesis drives one stream through random
sequences of snapshot changes (chained by `Snapshot.after`, as the cache chains them), deliveries
in either direction in any order, NACKs of any response and reconnects that resume, while the
model client (`tests/xds_model.py`) checks that it never takes a route to a cluster that is not
warm and never loses a cluster a route uses. Whenever the stream is left to settle, the client
must hold the latest version of everything it subscribes to, except what it refused, and nothing
it does not.

`make test` runs the default profile; `make proptest` runs many more examples
(`XDSFLEET_HYPOTHESIS_PROFILE=long`).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from xds_model import Client, Link, World

from xdsfleet.cache.snapshot import Snapshot

settings.register_profile(
    "default",
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    # The same examples on every run: `make test` must not pass or fail by chance.
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=3000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("XDSFLEET_HYPOTHESIS_PROFILE", "default")

CLUSTER_NAMES = ("a", "b", "c", "d")


@st.composite
def worlds(draw: st.DrawFn) -> World:
    names: list[str] = sorted(draw(st.sets(st.sampled_from(CLUSTER_NAMES))))
    clusters = tuple((name, draw(st.integers(0, 2)), draw(st.integers(0, 1))) for name in names)
    routes: list[tuple[str, str, bool]] = []
    for route_name in ("r0", "r1"):
        present: bool = bool(names) and draw(st.booleans())
        if present:
            target: str = draw(st.sampled_from(names))
            listened: bool = draw(st.booleans())
            routes.append((route_name, target, listened))
    return World(clusters, tuple(routes))


class Stream(RuleBasedStateMachine):
    delta = False

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Snapshot | None = None
        self.link: Link | None = None

    @initialize(world=worlds(), star=st.booleans(), proxyless=st.booleans())
    def connect(self, world: World, star: bool, proxyless: bool) -> None:
        self.snapshot = world.snapshot()
        self.link = Link.open(Client(delta=self.delta, proxyless=proxyless), star=star)

    def current(self) -> tuple[Snapshot, Link]:
        assert self.snapshot is not None
        assert self.link is not None
        return self.snapshot, self.link

    @rule(world=worlds())
    def publish(self, world: World) -> None:
        snapshot, _ = self.current()
        self.snapshot = world.snapshot().after(snapshot)

    @rule()
    def server_writes(self) -> None:
        snapshot, link = self.current()
        link.server_writes(snapshot)

    @rule()
    def request_arrives(self) -> None:
        self.current()[1].deliver_request()

    @rule(nack=st.booleans())
    def response_arrives(self, nack: bool) -> None:
        self.current()[1].deliver_response(nack=nack)

    @rule(star=st.booleans(), carry_nonce=st.booleans())
    def reconnect(self, star: bool, carry_nonce: bool) -> None:
        """The stream breaks (what was on the wire is lost) and the client comes back, to this
        server or another replica, saying what it holds."""
        _, link = self.current()
        self.link = Link.open(link.client, star=star, carry_nonce=carry_nonce)

    @rule()
    def settle(self) -> None:
        snapshot, link = self.current()
        link.settle(snapshot)
        link.client.check_settled(snapshot)

    @invariant()
    def nothing_is_sent_twice_in_a_response(self) -> None:
        if self.link is not None:
            for response in self.link.to_client:
                names = [r.name for r in response.resources]
                assert len(names) == len(set(names))  # rule 11

    def teardown(self) -> None:
        if self.link is not None:
            self.settle()


class DeltaStream(Stream):
    delta = True


TestSotwConverges = Stream.TestCase
TestSotwConverges.settings = settings.get_profile(PROFILE)
TestDeltaConverges = DeltaStream.TestCase
TestDeltaConverges.settings = settings.get_profile(PROFILE)
