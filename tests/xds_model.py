"""A model xDS client that behaves as Envoy does, and a lossless, reorderable link between it and
a protocol machine (`SotwStream` or `DeltaStream`), for tests that try every interleaving.

The client subscribes to every cluster and listener (wildcard), to the assignments of the
clusters it holds and to the route configurations of the listeners it holds; it answers every
response, with an ACK or, when told to, a NACK that rejects the whole response. As a gRPC client
(`proxyless`) it asks for its listeners by name and for a cluster only once a route names it.
It checks, as it goes, what Envoy needs to serve without errors: a route arrives only once every
cluster it uses is held and warm (an assignment accepted after the cluster), no cluster or
assignment goes while something it holds uses it, and no placeholder empties the assignment of
a cluster a route sends to. Convention of `tests/snapshots.py`: a cluster's assignment has its
name, listener `L-x` uses route configuration `x`.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from snapshots import assignment, cluster, delta_request, listener, request, route

from xdsfleet.cache.resources import Encoded, Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, FULL_STATE, LISTENER, ROUTE
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import RequestResult, Response
from xdsfleet.server.requests import Runs, SotwRequests, read_delta
from xdsfleet.server.sotw import SotwStream

TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


@dataclass(frozen=True)
class World:
    """What the snapshot describes: clusters (endpoint and settings variants) and routes (the
    cluster each sends to, and whether a listener uses it)."""

    clusters: tuple[tuple[str, int, int], ...]
    routes: tuple[tuple[str, str, bool], ...] = ()

    def snapshot(self) -> Snapshot:
        messages: dict[str, dict[str, Any]] = {
            CLUSTER: {n: cluster(n, 1000 + 1000 * s) for n, _, s in self.clusters},
            ENDPOINT: {n: assignment(n, f"10.0.{e}.1") for n, e, _ in self.clusters},
            LISTENER: {f"L-{r}": listener(f"L-{r}", r) for r, _, used in self.routes if used},
            ROUTE: {r: route(r, c) for r, c, _ in self.routes},
        }
        return build_snapshot(messages, Encoder())


def route_cluster(res: Encoded) -> str:
    config = route_pb2.RouteConfiguration.FromString(res.body)
    return str(config.virtual_hosts[0].routes[0].route.cluster)


@dataclass
class Client:
    delta: bool
    # A gRPC client: one listener per target by name, clusters by name once a route names them.
    proxyless: bool = False
    star: bool = False  # wildcard said as `*` rather than with an empty list (rule 9)
    held: dict[str, dict[str, Encoded]] = field(default_factory=lambda: {t: {} for t in TYPES})
    warm: set[str] = field(default_factory=set)
    # SotW: the last version accepted and the last nonce seen, per type.
    accepted: dict[str, str] = field(default_factory=dict)
    nonces: dict[str, str] = field(default_factory=dict)
    # Every version it ever refused, per type and name; names whose removal it refused.
    rejected: dict[str, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )
    rejected_removals: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    outbox: deque[Any] = field(default_factory=deque)
    # Routes held from before a reconnect, until replaced. A Delta stream learns what they use
    # from their versions, or from sending them again, unless the client refuses that. A SotW
    # stream learns it from the versions per type its first requests carry and the snapshot's
    # history; where that history no longer reaches back (`blind`), a cluster they use may go
    # first.
    inherited: set[str] = field(default_factory=set)
    blind: bool = False

    # What it subscribes to

    def wildcard(self, type_url: str) -> bool:
        return type_url in FULL_STATE and not self.proxyless

    def names(self, type_url: str) -> set[str]:
        if type_url == ENDPOINT:
            return set(self.held[CLUSTER])
        if type_url == ROUTE:
            return {name.removeprefix("L-") for name in self.held[LISTENER]}
        if type_url == CLUSTER and self.proxyless:
            return {route_cluster(r) for r in self.held[ROUTE].values()}
        if type_url == LISTENER and self.proxyless:
            return {"L-r0", "L-r1"}
        return set()

    def unknowable(self, route_name: str) -> bool:
        """A route held from before a reconnect whose use the server cannot know."""
        refused = route_name in self.rejected[ROUTE] or route_name in self.rejected_removals[ROUTE]
        return route_name in self.inherited and (self.blind or refused)

    def blind_to(self, snapshot: Snapshot) -> bool:
        """Whether a SotW server with `snapshot` cannot tell what this client holds from before:
        the clusters deleted since its set, and their assignments, are not in the history."""
        if self.delta:
            return False
        assignments = snapshot.changes_since(ENDPOINT, self.accepted.get(ENDPOINT, ""))
        clusters: object = True  # asked for by name: the names tell
        if self.wildcard(CLUSTER):
            clusters = snapshot.changes_since(CLUSTER, self.accepted.get(CLUSTER, ""))
        gone = self.held[CLUSTER].keys() - snapshot.of(CLUSTER).keys()
        return (
            clusters is None
            or assignments is None
            or any(name not in snapshot.departed for name in gone)
        )

    def routes_using(self, cluster_name: str, *, inherited: bool = True) -> list[str]:
        return [
            n
            for n, r in self.held[ROUTE].items()
            if route_cluster(r) == cluster_name and (inherited or not self.unknowable(n))
        ]

    # Requests

    def connect(self, *, star: bool, carry_nonce: bool) -> None:
        """The first requests of a stream: every type it needs, saying what it holds."""
        self.star = star
        self.inherited = set(self.held[ROUTE])
        self.blind = False
        for type_url in TYPES:
            names = self.names(type_url)
            if not self.wildcard(type_url) and not names:
                continue
            if self.delta:
                subscribe = sorted(names) or (["*"] if star else [])
                initial = {n: r.version for n, r in self.held[type_url].items()}
                self.outbox.append(delta_request(type_url, subscribe, initial=initial))
            else:
                wanted = self._sotw_names(type_url)
                nonce = self.nonces.get(type_url, "") if carry_nonce else ""
                version = self.accepted.get(type_url, "")
                self.outbox.append(request(type_url, wanted, nonce=nonce, version=version))

    def _sotw_names(self, type_url: str) -> list[str]:
        if self.wildcard(type_url):
            return ["*"] if self.star else []
        return sorted(self.names(type_url))

    def dependent(self, type_url: str) -> str | None:
        """The type whose names follow what the client holds of `type_url`."""
        if type_url == ROUTE:
            return CLUSTER if self.proxyless else None
        return {CLUSTER: ENDPOINT, LISTENER: ROUTE}.get(type_url)

    def _subscription_changed(self, type_url: str, before: set[str]) -> None:
        after = self.names(type_url)
        if after == before:
            return
        dependent = self.dependent(type_url)
        dependent_before = self.names(dependent) if dependent else set()
        for gone in before - after:
            self.held[type_url].pop(gone, None)
            self.inherited.discard(gone)
        if self.delta:
            self.outbox.append(
                delta_request(type_url, sorted(after - before), sorted(before - after))
            )
        else:
            self.outbox.append(
                request(
                    type_url,
                    sorted(after),
                    nonce=self.nonces.get(type_url, ""),
                    version=self.accepted.get(type_url, ""),
                )
            )
        if dependent:
            self._subscription_changed(dependent, dependent_before)

    # Responses

    def receive(self, response: Response, *, nack: bool) -> None:
        type_url = response.type_url
        self.nonces[type_url] = response.nonce
        full = type_url in FULL_STATE and not self.delta
        if nack:
            for res in response.resources:
                self.rejected[type_url][res.name].add(res.version)
            removed = set(response.removed)
            if full:
                removed |= self.held[type_url].keys() - {r.name for r in response.resources}
            self.rejected_removals[type_url] |= removed
            if self.delta:
                self.outbox.append(delta_request(type_url, nonce=response.nonce, error="no"))
            else:
                self.outbox.append(
                    request(
                        type_url,
                        self._sotw_names(type_url),
                        nonce=response.nonce,
                        version=self.accepted.get(type_url, ""),
                        error="no",
                    )
                )
            return
        dependent = self.dependent(type_url)
        before = self.names(dependent) if dependent else set()
        self._apply(type_url, response, full=full)
        if dependent:
            self._subscription_changed(dependent, before)
        if self.delta:
            self.outbox.append(delta_request(type_url, nonce=response.nonce))
        else:
            self.accepted[type_url] = response.version
            self.outbox.append(
                request(
                    type_url,
                    self._sotw_names(type_url),
                    nonce=response.nonce,
                    version=response.version,
                )
            )

    def _apply(self, type_url: str, response: Response, *, full: bool) -> None:
        held = self.held[type_url]
        incoming = {r.name: r for r in response.resources}
        removed = set(response.removed)
        if full:
            removed |= held.keys() - incoming.keys()
        wanted = None if self.wildcard(type_url) else self.names(type_url)
        if type_url == CLUSTER:
            for name in removed & held.keys():
                users = self.routes_using(name, inherited=False)
                assert not users, f"cluster {name} removed while routes {users} use it"
            for name in incoming.keys() - held.keys():
                self.warm.discard(name)  # a new cluster warms on its next assignment
            self.warm -= removed
        if type_url == ENDPOINT:
            for name in removed & held.keys():
                assert name not in self.held[CLUSTER], f"assignment {name} removed under it"
            for name, res in incoming.items():
                # Every cluster of the model has an endpoint: an empty assignment is a
                # placeholder (rule 15), and must not drain a cluster a route sends to.
                if not endpoint_pb2.ClusterLoadAssignment.FromString(res.body).endpoints:
                    users = self.routes_using(name, inherited=False)
                    assert not users, f"assignment {name} emptied while routes {users} use it"
        if type_url == ROUTE and not self.proxyless:
            # A gRPC client asks for a route's clusters once it has the route.
            for name, res in incoming.items():
                if wanted is not None and name not in wanted:
                    continue
                used = route_cluster(res)
                assert used in self.held[CLUSTER], f"route {name} names unknown cluster {used}"
                assert used in self.warm, f"route {name} names cluster {used}, still warming"
        for name in removed:
            held.pop(name, None)
        for name, res in incoming.items():
            if wanted is None or name in wanted:
                held[name] = res
                if type_url == ROUTE:
                    self.inherited.discard(name)
                if type_url == ENDPOINT and name in self.held[CLUSTER]:
                    self.warm.add(name)

    # What it should hold once everything has settled

    def check_settled(self, snapshot: Snapshot) -> None:
        routes = snapshot.of(ROUTE)
        # Delta: a route held from before a reconnect whose replacement waits on a cluster the
        # client refused; the server cannot know what the old one uses, so it keeps every
        # cluster meanwhile.
        unknown_route = any(
            name in self.inherited
            and name in routes
            and have.version != routes[name].version
            and self._blocked(ROUTE, routes[name], snapshot)
            for name, have in self.held[ROUTE].items()
        )
        for type_url in TYPES:
            latest = snapshot.of(type_url)
            held = self.held[type_url]
            rejected = self.rejected[type_url]
            wanted = latest.keys() if self.wildcard(type_url) else self.names(type_url)
            for name in wanted:
                res = latest.get(name)
                if res is None:
                    continue  # a route or assignment of something on its way out
                have = held.get(name)
                if have is not None and have.version == res.version:
                    continue
                assert res.version in rejected[name] or self._blocked(type_url, res, snapshot), (
                    f"{type_url} {name}: holds {have and have.version}, latest {res.version}"
                )
            for name in held.keys() - latest.keys():
                kept = name in self.rejected_removals[type_url]
                if type_url == CLUSTER:
                    kept = kept or bool(self.routes_using(name)) or unknown_route
                if type_url in (ENDPOINT, ROUTE):
                    kept = True  # follows what it holds, checked through its parent
                assert kept, f"{type_url} {name} is gone yet still held"
        for name, res in self.held[ROUTE].items():
            used = route_cluster(res)
            if not self.unknowable(name) and not self.proxyless:
                assert used in self.held[CLUSTER], f"route {name} -> {used}, not held"
                assert used in self.warm, f"route {name} -> {used}, still warming"

    def _blocked(self, type_url: str, res: Encoded, snapshot: Snapshot) -> bool:
        """A route held back because the client refused the latest version of the cluster it
        needs, or of its assignment: the server cannot tell whether it is warm there."""
        if type_url != ROUTE:
            return False
        used = route_cluster(res)
        return any(
            used in snapshot.of(t) and snapshot.of(t)[used].version in self.rejected[t][used]
            for t in (CLUSTER, ENDPOINT)
        )


@dataclass
class Link:
    """One stream: the machine, the client and what is on the wire each way, in order."""

    client: Client
    machine: SotwStream | DeltaStream
    to_server: deque[Any] = field(default_factory=deque)
    to_client: deque[Response] = field(default_factory=deque)
    # How the server reads a SotW stream's requests: from their bytes, an unchanged list of
    # names told by them (`server/requests.py`), in every interleaving here.
    reader: SotwRequests = field(default_factory=lambda: SotwRequests(Runs(), 10_000))

    @classmethod
    def open(cls, client: Client, *, star: bool = False, carry_nonce: bool = False) -> Link:
        machine: SotwStream | DeltaStream = DeltaStream() if client.delta else SotwStream()
        client.outbox.clear()
        client.connect(star=star, carry_nonce=carry_nonce)
        link = cls(client, machine)
        link.flush_client()
        return link

    def flush_client(self) -> None:
        self.to_server.extend(self.client.outbox)
        self.client.outbox.clear()

    def server_writes(self, snapshot: Snapshot) -> int:
        if self.client.inherited and not self.client.blind:
            # Checked while routes from before remain: a write may be the first to look.
            self.client.blind = self.client.blind_to(snapshot)
        responses = self.machine.next_responses(snapshot)
        self.to_client.extend(responses)
        return len(responses)

    def take_request(self) -> RequestResult:
        """The next request on the wire, taken by the machine as the server reads it."""
        request = self.to_server.popleft()
        if isinstance(self.machine, DeltaStream):
            return self.machine.on_request(*read_delta(request))
        return self.machine.on_request(*self.reader.read(request.SerializeToString()))

    def deliver_request(self) -> None:
        if self.to_server:
            self.take_request()

    def deliver_response(self, *, nack: bool) -> None:
        if self.to_client:
            self.client.receive(self.to_client.popleft(), nack=nack)
            self.flush_client()

    def settle(self, snapshot: Snapshot, *, limit: int = 200) -> None:
        """Deliver everything, accepting every response, until nothing moves."""
        for _ in range(limit):
            while self.to_server:
                self.deliver_request()
            written = self.server_writes(snapshot)
            while self.to_client:
                self.deliver_response(nack=False)
            if not written and not self.to_server:
                return
        raise AssertionError("no quiescence: the stream keeps sending")
