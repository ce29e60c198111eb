"""Both machines' record of what a client holds (`protocol.Held`, shared snapshot maps, the
large-change fast path) against a client that changes its subscriptions at will (hypothesis).

`tests/test_protocol_properties.py` drives an Envoy-like client, whose names follow what it
holds. Other clients name what they like: gRPC's xDS client and hostile raw clients subscribe
and unsubscribe any assignment at any time, mix a wildcard with names, refuse responses and come
back saying what they hold (rule 19). Here one assignment stream is driven through any
interleaving of such requests, snapshot changes (rebuilt or patched, so that snapshot maps are
shared or not, and encodings reused or not) and deliveries; whenever it settles, the machine's
record of what the client holds must be exactly what the client holds, and the client must hold
the latest version of every name it asks for (rules 6, 8, 17, 18, 19).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from snapshots import assignment, delta_request, request
from test_protocol_properties import PROFILE

from xdsfleet.cache.resources import Encoded, Encoder
from xdsfleet.cache.snapshot import build_snapshot, patch_snapshot
from xdsfleet.cache.typeurls import ENDPOINT
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import Response
from xdsfleet.server.requests import Runs, SotwRequests, read_delta
from xdsfleet.server.sotw import SotwStream

NAMES = tuple(f"c{i:02}" for i in range(12))
# Name -> address version, absent names left out.
WORLDS = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 2))
SUBSETS = st.sets(st.sampled_from(NAMES))


class Subscriber(RuleBasedStateMachine):
    delta = False

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.messages: dict[tuple[str, int], Any] = {}
        self.snapshot = build_snapshot({ENDPOINT: {}}, self.encoder)
        self.machine: SotwStream | DeltaStream = SotwStream()
        self.reader = SotwRequests(Runs(), 10_000)
        self.to_server: deque[Any] = deque()
        self.to_client: deque[Response] = deque()
        self.names: set[str] = set()
        self.wildcard = False
        self.held: dict[str, Encoded] = {}
        self.nonce = ""
        self.accepted = ""
        # Versions (and removals, as None) the client ever refused, per name.
        self.refused: dict[str, set[str | None]] = {}

    # The world

    def message(self, name: str, version: int, fresh: bool) -> Any:
        """An assignment; the same object as before unless `fresh` (then encoded anew)."""
        if fresh or (name, version) not in self.messages:
            self.messages[name, version] = assignment(name, f"10.0.{version}.1")
        return self.messages[name, version]

    @initialize(world=WORLDS, names=SUBSETS, wildcard=st.booleans())
    def start(self, world: dict[str, int], names: set[str], wildcard: bool) -> None:
        self.publish(world, fresh=False)
        self.names = set(names)
        self.wildcard = wildcard
        self.connect()

    @rule(world=WORLDS, fresh=st.booleans())
    def publish(self, world: dict[str, int], fresh: bool) -> None:
        messages = {n: self.message(n, v, fresh) for n, v in sorted(world.items())}
        self.snapshot = build_snapshot({ENDPOINT: messages}, self.encoder).after(self.snapshot)

    @rule(changes=WORLDS, fresh=st.booleans())
    def patch(self, changes: dict[str, int], fresh: bool) -> None:
        messages = {n: self.message(n, v, fresh) for n, v in changes.items()}
        self.snapshot = patch_snapshot(self.snapshot, {ENDPOINT: messages}, self.encoder)

    # The client

    def names_requested(self) -> list[str]:
        return sorted(self.names) + (["*"] if self.wildcard else [])

    def connect(self) -> None:
        self.machine = DeltaStream() if self.delta else SotwStream()
        self.reader = SotwRequests(Runs(), 10_000)  # a stream's own
        self.to_server.clear()
        self.to_client.clear()
        if self.delta:
            initial = {n: r.version for n, r in self.held.items()}
            self.to_server.append(delta_request(ENDPOINT, self.names_requested(), initial=initial))
        else:
            self.to_server.append(request(ENDPOINT, self.names_requested(), version=self.accepted))

    @rule()
    def reconnect(self) -> None:
        self.connect()

    @rule(names=SUBSETS, wildcard=st.booleans())
    def subscribe(self, names: set[str], wildcard: bool) -> None:
        if self.delta and self.wildcard and not wildcard:
            wildcard = True  # what a client holds by a dropped wildcard alone is left open
        before, was = self.names, self.wildcard
        self.names, self.wildcard = set(names), wildcard
        if not wildcard:
            for gone in self.held.keys() - names:
                self.held.pop(gone, None)
        if self.delta:
            added = sorted(names - before) + (["*"] if wildcard and not was else [])
            removed = sorted(before - names)
            for gone in removed:
                self.held.pop(gone, None)
            self.to_server.append(delta_request(ENDPOINT, added, removed))
        else:
            self.to_server.append(
                request(ENDPOINT, self.names_requested(), nonce=self.nonce, version=self.accepted)
            )

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3))
    def subscribe_again(self, names: list[str]) -> None:
        """Delta only: names subscribed again, ones already subscribed included (rule 18)."""
        if self.delta:
            self.names |= set(names)
            self.to_server.append(delta_request(ENDPOINT, sorted(set(names))))

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def receive(self, response: Response, nack: bool) -> None:
        self.nonce = response.nonce
        if nack:
            for res in response.resources:
                self.refused.setdefault(res.name, set()).add(res.version)
            for name in response.removed:
                self.refused.setdefault(name, set()).add(None)
            if self.delta:
                self.to_server.append(delta_request(ENDPOINT, nonce=response.nonce, error="no"))
            else:
                self.to_server.append(
                    request(
                        ENDPOINT,
                        self.names_requested(),
                        nonce=response.nonce,
                        version=self.accepted,
                        error="no",
                    )
                )
            return
        for name in response.removed:
            self.held.pop(name, None)
        for res in response.resources:
            if self.wants(res.name):
                self.held[res.name] = res
        if self.delta:
            self.to_server.append(delta_request(ENDPOINT, nonce=response.nonce))
        else:
            self.accepted = response.version
            self.to_server.append(
                request(
                    ENDPOINT,
                    self.names_requested(),
                    nonce=response.nonce,
                    version=response.version,
                )
            )

    # The wire

    @rule()
    def server_writes(self) -> None:
        self.to_client.extend(self.machine.next_responses(self.snapshot))

    def take_request(self) -> None:
        """The next request on the wire, taken as the server reads it (SotW: from its bytes,
        an unchanged list of names told by them, `server/requests.py`)."""
        request = self.to_server.popleft()
        if isinstance(self.machine, DeltaStream):
            self.machine.on_request(*read_delta(request))
        else:
            self.machine.on_request(*self.reader.read(request.SerializeToString()))

    @precondition(lambda self: bool(self.to_server))
    @rule()
    def request_arrives(self) -> None:
        self.take_request()

    @precondition(lambda self: bool(self.to_client))
    @rule(nack=st.booleans())
    def response_arrives(self, nack: bool) -> None:
        self.receive(self.to_client.popleft(), nack)

    @rule()
    def settle(self) -> None:
        for _ in range(100):
            while self.to_server:
                self.take_request()
            responses = self.machine.next_responses(self.snapshot)
            self.to_client.extend(responses)
            while self.to_client:
                self.receive(self.to_client.popleft(), nack=False)
            if not responses and not self.to_server:
                break
        else:
            raise AssertionError("no quiescence")
        self.check_settled()

    def check_settled(self) -> None:
        available = self.snapshot.of(ENDPOINT)
        status = self.machine.status().get(ENDPOINT)
        record = {} if status is None else status.held
        for name in NAMES:
            res = available.get(name)
            refused = self.refused.get(name, set())
            held = self.held.get(name)
            if res is not None and self.wants(name):
                if res.version not in refused:
                    # Rules 8 and 12: the latest version of what it asks for.
                    assert held is not None, name
                    assert held.version == res.version, name
            elif self.delta and res is None and None not in refused:
                # Rule 17: a name that is gone is said to be gone.
                assert held is None, name
            if not (self.delta or res is not None):
                continue  # SotW: a name that is gone is not said to be gone (rule 10)
            holds = held.version if held else None
            if not self.delta and name not in record and res is not None and res.version in refused:
                # SotW: a client back on a new stream cannot say what it holds; once it
                # refused the latest version, what it kept is unknown to the machine.
                continue
            # The machine's record is what the client holds.
            assert record.get(name) == holds, (name, record)

    @invariant()
    def one_name_once_per_response(self) -> None:
        for response in self.to_client:
            names = [r.name for r in response.resources] + list(response.removed)
            assert len(names) == len(set(names))  # rule 11

    def teardown(self) -> None:
        if self.to_server or self.to_client or self.held:
            self.settle()


class DeltaSubscriber(Subscriber):
    delta = True


TestSotwSubscriptions = Subscriber.TestCase
TestSotwSubscriptions.settings = settings.get_profile(PROFILE)
TestDeltaSubscriptions = DeltaSubscriber.TestCase
TestDeltaSubscriptions.settings = settings.get_profile(PROFILE)
