"""No interleaving of requests and publishes leaves a stream owed a response with its writer
asleep (hypothesis).

The server's writer looks at a stream (`next_responses`) only when woken: by a new snapshot, or
by a request whose `RequestResult.wakes` says it may have let something go (server/ads.py). Most
ACKs do not wake it (server/protocol.py, "Waking"); one that should and does not leaves a client
without what it is owed until some unrelated publish, or for good. Here the stream of
tests/test_protocol_properties.py runs with the writer's wake modelled: it writes only when
woken, and whenever it is not, a copy of the machine asked what it would send on the latest
snapshot must say nothing. Left to settle the same way (woken writes only), the client must hold
the latest version of everything it subscribes to.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule
from snapshots import delta_request, request
from test_protocol_properties import PROFILE, Stream, worlds
from xds_model import Client, Link, World

from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.cache.typeurls import ENDPOINT
from xdsfleet.server import protocol
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import Outcome
from xdsfleet.server.sotw import SotwStream


def _would_send(machine: SotwStream | DeltaStream, snapshot: Snapshot) -> list[str]:
    """What a look would send now, asked of a copy (a look changes the machine)."""
    # The shared empty map is a mappingproxy (not copyable) and stays shared.
    twin = copy.deepcopy(machine, {id(protocol.NOTHING): protocol.NOTHING})
    return [r.type_url for r in twin.next_responses(snapshot)]


class WokenStream(Stream):
    """The stream of test_protocol_properties with the writer's wake flag modelled."""

    def __init__(self) -> None:
        super().__init__()
        self.woken = True

    @initialize(world=worlds(), star=st.booleans(), proxyless=st.booleans())
    def connect(self, world: World, star: bool, proxyless: bool) -> None:
        super().connect(world, star, proxyless)
        self.woken = True

    @rule(world=worlds())
    def publish(self, world: World) -> None:
        snapshot, _ = self.current()
        self.snapshot = world.snapshot().after(snapshot)
        self.woken = True  # the cache wakes every watcher of the profile

    @precondition(lambda self: self.woken)
    @rule()
    def server_writes(self) -> None:
        snapshot, link = self.current()
        self.woken = False  # cleared before the look, as the writer does
        link.server_writes(snapshot)

    def _deliver_request(self) -> None:
        _, link = self.current()
        if link.to_server:
            result = link.take_request()
            if result.wakes:
                self.woken = True
            else:
                assert result.outcome is Outcome.ACK  # only an ACK may let the writer sleep

    @rule()
    def request_arrives(self) -> None:
        self._deliver_request()

    @rule(star=st.booleans(), carry_nonce=st.booleans())
    def reconnect(self, star: bool, carry_nonce: bool) -> None:
        _, link = self.current()
        self.link = Link.open(link.client, star=star, carry_nonce=carry_nonce)
        self.woken = True  # a new stream: its first request wakes its writer

    @rule()
    def settle(self) -> None:
        """Deliver everything, accepting every response, the writer looking only when woken,
        until nothing moves: the client then holds the latest of what it asks for."""
        snapshot, link = self.current()
        for _ in range(200):
            while link.to_server:
                self._deliver_request()
            written = 0
            if self.woken:
                self.woken = False
                written = link.server_writes(snapshot)
            while link.to_client:
                link.deliver_response(nack=False)
            if not written and not link.to_server and not self.woken:
                break
        else:
            raise AssertionError("no quiescence: the stream keeps sending")
        link.client.check_settled(snapshot)

    @invariant()
    def an_asleep_writer_owes_nothing(self) -> None:
        if self.link is None or self.snapshot is None or self.woken:
            return
        assert _would_send(self.link.machine, self.snapshot) == []


class WokenDeltaStream(WokenStream):
    delta = True


TestSotwWakes = WokenStream.TestCase
TestSotwWakes.settings = settings.get_profile(PROFILE)
TestDeltaWakes = WokenDeltaStream.TestCase
TestDeltaWakes.settings = settings.get_profile(PROFILE)


def _acked_stream(delta: bool) -> tuple[Link, Snapshot]:
    snapshot = World((("a", 0, 0), ("b", 1, 0)), (("r0", "a", True),)).snapshot()
    link = Link.open(Client(delta=delta))
    link.settle(snapshot)
    return link, snapshot


def test_the_acks_of_a_settled_fan_out_do_not_wake_the_writer() -> None:
    """The point of it: once the writer has sent what a snapshot changed, the client's ACKs let
    nothing more go, and say so."""
    for delta in (False, True):
        link, snapshot = _acked_stream(delta)
        newer = World((("a", 1, 0), ("b", 2, 0)), (("r0", "a", True),)).snapshot().after(snapshot)
        assert link.server_writes(newer) == 1  # both assignments, one EDS response
        link.deliver_response(nack=False)
        results = []
        while link.to_server:
            results.append(link.take_request())
        assert [(r.outcome, r.wakes) for r in results] == [(Outcome.ACK, False)]


def test_an_ack_wakes_the_writer_when_a_newer_snapshot_waited_for_it() -> None:
    """Rule 26 holds a type back while its response is unanswered: the ACK lets it go."""
    for delta in (False, True):
        link, snapshot = _acked_stream(delta)
        second = World((("a", 1, 0), ("b", 1, 0)), (("r0", "a", True),)).snapshot().after(snapshot)
        third = World((("a", 2, 0), ("b", 1, 0)), (("r0", "a", True),)).snapshot().after(second)
        assert link.server_writes(second) == 1
        assert link.server_writes(third) == 0  # EDS waits for its answer
        link.deliver_response(nack=False)
        results = []
        while link.to_server:
            results.append(link.take_request())
        assert [(r.outcome, r.wakes) for r in results] == [(Outcome.ACK, True)]
        assert link.server_writes(third) == 1


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_an_ack_wakes_the_writer_for_a_route_that_waited_for_its_new_cluster(delta: bool) -> None:
    """Rule 14: a route moved to a new cluster waits until the client accepted the cluster's
    assignment; that ACK must wake the writer (the route is neither forced nor changed since
    the last look, only held back)."""
    first = World((("a", 0, 0),), (("r0", "a", True),)).snapshot()
    link = Link.open(Client(delta=delta))
    link.settle(first)
    moved = World((("a", 0, 0), ("b", 0, 0)), (("r0", "b", True),)).snapshot().after(first)
    woken = link.server_writes(moved) > 0
    for _ in range(10):
        if not woken:
            break
        while link.to_client:
            link.deliver_response(nack=False)
        woken = False
        while link.to_server:
            woken |= link.take_request().wakes
        if woken:
            link.server_writes(moved)
    link.client.check_settled(moved)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_an_ack_that_asks_for_more_wakes_the_writer(delta: bool) -> None:
    """An ACK may carry a new subscription (rule 8, rule 18): the names it adds are owed."""
    snapshot = World((("a", 0, 0), ("b", 0, 0))).snapshot()
    machine: SotwStream | DeltaStream = DeltaStream() if delta else SotwStream()
    machine.on_request(delta_request(ENDPOINT, ["a"]) if delta else request(ENDPOINT, ["a"]))
    [sent] = machine.next_responses(snapshot)
    if delta:
        ack = delta_request(ENDPOINT, ["b"], nonce=sent.nonce)
    else:
        ack = request(ENDPOINT, ["a", "b"], nonce=sent.nonce, version=sent.version)
    result = machine.on_request(ack)
    assert (result.outcome, result.wakes) == (Outcome.ACK, True)
    [more] = machine.next_responses(snapshot)
    assert [r.name for r in more.resources] == ["b"]
