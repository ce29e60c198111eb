"""One node profile's complete resource set: which resources a role gets, from the builders.

This module only selects and assembles; every message comes from a memoised builder, so an
unchanged resource is the same object as in the previous generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from xdsfleet.cache import typeurls
from xdsfleet.model.attachment import certificate_problem, labels_of
from xdsfleet.model.fleet import FleetState, Gateway, GatewayListener, TLSSecret
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.model.policy import PolicyIndex, PolicySpec, TrafficPolicy
from xdsfleet.translate.accesslog import port_format
from xdsfleet.translate.clusters import ClusterSettings, cluster
from xdsfleet.translate.endpoints import assignment
from xdsfleet.translate.listeners import (
    gateway_listener,
    outbound_listener,
    proxyless_listener,
    quic_listener,
)
from xdsfleet.translate.localities import LocalityView, view_of
from xdsfleet.translate.memo import Memo, current, memoised_by_identity, start_generation
from xdsfleet.translate.names import (
    gateway_port_name,
    outbound_name,
    proxyless_listener_name,
    quic_listener_name,
    secret_name,
)
from xdsfleet.translate.placement import Placement, placement_of, ramps_by_port
from xdsfleet.translate.proto import Message
from xdsfleet.translate.routes import (
    GatewayPort,
    gateway_ports,
    misdirected,
    plan_port,
    route_configuration_steps,
    route_names,
    uses_cors,
    uses_sessions,
)
from xdsfleet.translate.rules import Destination, Planner
from xdsfleet.translate.secrets import tls_secret
from xdsfleet.translate.services import ServiceIndex, ServicePortKey, service_index
from xdsfleet.translate.sidecar import SERVICES_STEP, plan_outbound
from xdsfleet.translate.steps import Steps, finish
from xdsfleet.translate.tracing import plan_trace

Resources = dict[str, dict[str, Message]]
# How long clients may remember that a listener also speaks HTTP/3 (Alt-Svc `ma`, seconds).
ALT_SVC_MAX_AGE = 86400


@memoised_by_identity
def policy_index(policies: tuple[TrafficPolicy, ...]) -> PolicyIndex:
    """The policies by what they attach to; kept while the store shares the same tuple."""
    return PolicyIndex(policies)


def fleet_drained(state: FleetState) -> frozenset[str]:
    """The members drained from every service: `drain: true` on the Fleet's member, or in the
    `members` of a policy that targets the Fleet."""
    drained = {m.member.name for m in state.members if m.member.drain}
    drained.update(
        m.name for m in policy_index(state.policies).fleet(state.name).members if m.drain
    )
    return frozenset(drained)


@dataclass(frozen=True, slots=True)
class Translation:
    """A profile's resources, and the clusters each service port gave them: what a later
    change to that port's endpoints must rebuild (`translate_destinations`)."""

    resources: Resources
    destinations: Mapping[ServicePortKey, tuple[Destination, ...]]


def translate(state: FleetState, profile: NodeProfile) -> Resources:
    """Type URL -> resource name -> message, for every type of `cache.typeurls.ORDER`.

    Pure and deterministic. The messages are shared with other profiles and generations:
    callers must never mutate them. Uses the current memo (`memo.Memo.active`), or one of its
    own for this call.
    """
    with (current() or Memo()).active():
        return translation(state, profile, service_index(state)).resources


def translation(state: FleetState, profile: NodeProfile, index: ServiceIndex) -> Translation:
    """`translate`, given the state's `service_index` (which callers may have updated
    incrementally), and saying which clusters come from which service port."""
    planned = plan(state, profile, index)
    resources = planned.resources()
    resources.update(translate_destinations(state, profile, index, planned.used))
    return Translation(resources, planned.by_port)


@dataclass(frozen=True, slots=True)
class Plan:
    """A profile's listeners, routes and secrets, and the destinations they use: what remains
    to translate are those destinations' clusters and assignments (`translate_destinations`),
    which callers may do a few at a time. Shared by the profiles of one role (and Gateway)
    translated from one state (`DestinationTable.plan`): callers add to a `resources()` copy."""

    planned: Resources  # every type present; clusters and assignments still empty
    used: tuple[Destination, ...]  # in the order `translation` builds them
    by_port: Mapping[ServicePortKey, tuple[Destination, ...]]  # `by_port(used)`

    def resources(self) -> Resources:
        """The planned resources, in mappings of the caller's own."""
        return {type_url: dict(named) for type_url, named in self.planned.items()}


def plan(state: FleetState, profile: NodeProfile, index: ServiceIndex) -> Plan:
    """The first half of `translation`; starts a memo generation when `state` is new."""
    return finish(planning(state, profile, index))


def plan_key(profile: NodeProfile) -> tuple[Role, str | None]:
    """All of a profile that its plan depends on: profiles of one role (and Gateway) differ
    only in where they stand, which only their assignments see."""
    return profile.role, profile.gateway if profile.role is Role.GATEWAY else None


def planning(state: FleetState, profile: NodeProfile, index: ServiceIndex) -> Steps[Plan]:
    """`plan` in steps: it yields every few routes or services (a profile of a fleet of 1,000
    services plans 1,000 virtual hosts: 10-20 ms at E = 100,000)."""
    start_generation(state)
    resources: Resources = {type_url: {} for type_url in typeurls.ORDER}
    members = frozenset(m.member.name for m in state.members)
    planner = Planner(index, policy_index(state.policies), members, state.permits)
    if profile.role is Role.GATEWAY:
        gateway = gateway_of(state, profile.gateway)
        if gateway is None:
            return Plan(resources, (), {})
        for port in gateway_ports(gateway):
            yield from _add_gateway_port(resources, state, gateway, port, planner)
    elif profile.role is Role.SIDECAR:
        yield from _add_sidecar(resources, state, index, planner)
    else:
        yield from _add_proxyless(resources, index, planner)
    used = tuple(sorted(planner.used, key=lambda d: (d.key, d.pinned)))
    return Plan(resources, used, by_port(used))


def by_port(used: Iterable[Destination]) -> dict[ServicePortKey, tuple[Destination, ...]]:
    """The destinations of each service port: what a change of its endpoints rebuilds."""
    destinations: dict[ServicePortKey, tuple[Destination, ...]] = {}
    for destination in used:
        destinations[destination.key] = (*destinations.get(destination.key, ()), destination)
    return destinations


def translate_destinations(
    state: FleetState,
    profile: NodeProfile,
    index: ServiceIndex,
    destinations: Iterable[Destination],
    table: DestinationTable | None = None,
    *,
    clusters: bool = True,
) -> Resources:
    """The clusters and assignments of `destinations`, as `translation` builds them: all
    they depend on is their service port's entry in `index`, its policy and its ramps. Only
    the assignments when not `clusters` (a cluster depends on its port's endpoints only through
    `http2`). `table`, when given, is that of `state` and `index`, shared between profiles.

    Starts no memo generation (`translation` does): patching a few resources must not drop
    the memos of everything else, or the next full translation would build everything anew.
    """
    if table is None:
        table = DestinationTable(state, index)
    view = view_of(profile)
    built: dict[str, Message] = {}
    assignments: dict[str, Message] = {}
    for destination in destinations:
        name = destination.cluster
        if clusters:
            built[name] = table.cluster(destination, profile.role)
        assignments[name] = table.assignment(destination, view)
    if not clusters:
        return {typeurls.ENDPOINT: assignments}
    return {typeurls.CLUSTER: built, typeurls.ENDPOINT: assignments}


class DestinationTable:
    """The plans, clusters and assignments of one state's profiles, each built once and shared
    by every profile translated from that state: profiles differ only in their role and Gateway
    (plans, clusters) and their locality view (assignments), so twelve profiles of six places
    and two roles cost two plans and six assignments per destination, not twelve plans and
    twelve lookups of policies, placements and memos per destination.

    Holds what it built until dropped: the owner makes one per state (and service index)."""

    def __init__(self, state: FleetState, index: ServiceIndex) -> None:
        self._state = state
        self._index = index
        self._plans: dict[tuple[Role, str | None], Plan] = {}
        self._policies = policy_index(state.policies)
        self._ramps = ramps_by_port(state.ramps)
        self._everywhere = fleet_drained(state)
        self._settings: dict[Destination, ClusterSettings] = {}
        self._placements: dict[Destination, Placement] = {}
        self._clusters: dict[tuple[Destination, Role], Message] = {}
        self._assignments: dict[tuple[Destination, LocalityView], Message] = {}

    def plan(self, profile: NodeProfile) -> Steps[Plan]:
        """The profile's `plan`, in steps, made once per `plan_key`."""
        start_generation(self._state)
        key = plan_key(profile)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = yield from planning(self._state, profile, self._index)
        return found

    def cluster(self, destination: Destination, role: Role) -> Message:
        found = self._clusters.get((destination, role))
        if found is None:
            settings = self._settings.get(destination)
            if settings is None:
                settings = self._settings[destination] = ClusterSettings.of(self._spec(destination))
            if role is Role.PROXYLESS:
                settings = settings.for_proxyless()
            elif role is Role.GATEWAY:
                settings = settings.for_gateway()
            http2 = self._index[destination.key].http2
            found = cluster(destination.cluster, http2, settings)
            self._clusters[destination, role] = found
        return found

    def assignment(self, destination: Destination, view: LocalityView) -> Message:
        found = self._assignments.get((destination, view))
        if found is None:
            placement = self._placements.get(destination)
            if placement is None:
                ramps = self._ramps.get(destination.key, ())
                placement = placement_of(self._spec(destination), ramps, self._everywhere)
                placement = placement.with_pinned(destination.pinned)
                self._placements[destination] = placement
            port = self._index[destination.key]
            found = self._assignments[destination, view] = assignment(port, view, placement)
        return found

    def _spec(self, destination: Destination) -> PolicySpec:
        key = destination.key
        return self._policies.service(key.namespace, key.service, self._index[key].port_name)


def gateway_of(state: FleetState, ref: str | None) -> Gateway | None:
    """The Gateway a gateway profile names (`NS/NAME`). A profile naming none gets the fleet's
    Gateway when it has exactly one (an Envoy started without `xdsfleet.io/gateway`), else
    nothing."""
    if ref is None:
        return state.gateways[0] if len(state.gateways) == 1 else None
    namespace, _, name = ref.partition("/")
    return next((g for g in state.gateways if (g.namespace, g.name) == (namespace, name)), None)


def certificates(state: FleetState, gateway: Gateway, listener: GatewayListener) -> list[TLSSecret]:
    """The TLS Secrets a listener may use: those that exist, in its own namespace or granted
    to Gateways by a ReferenceGrant in theirs."""
    by_name = {(s.namespace, s.name): s for s in state.secrets}
    return [
        by_name[r.namespace, r.name]
        for r in listener.certificate_refs
        if certificate_problem(state, gateway, r, by_name) is None
    ]


def _add_gateway_port(
    resources: Resources,
    state: FleetState,
    gateway: Gateway,
    port: GatewayPort,
    planner: Planner,
) -> Steps[None]:
    """Add the Envoy listener of one Gateway port with its routes, certificates and HTTP/3
    twin: every Gateway listener on the port, HTTPS ones by SNI."""
    name = gateway_port_name(gateway.namespace, gateway.name, port.port)
    secrets: dict[str, tuple[str, ...]] = {}  # listener -> its SDS secrets
    http3 = None
    if port.protocol == "HTTPS":
        for listener in port.listeners:
            found = certificates(state, gateway, listener)
            if not found:
                # Serving HTTPS in plaintext would be worse than not serving it (validate says
                # why); the port's other listeners keep their chains.
                continue
            secrets[listener.name] = tuple(secret_name(s.namespace, s.name) for s in found)
            for secret, secret_key in zip(found, secrets[listener.name], strict=True):
                resources[typeurls.SECRET][secret_key] = tls_secret(secret)
            wanted = planner.policies.listener(gateway.namespace, gateway.name, listener.name)
            http3 = http3 or wanted.http3  # QUIC always encrypts: HTTPS listeners only
        if not secrets:
            return
        # A listener without its chain serves no hosts either (whatever SNI a client sent).
        port = replace(port, listeners=tuple(x for x in port.listeners if x.name in secrets))
    labels = labels_of(state.namespaces)
    planned = yield from plan_port(
        gateway, port, state.http_routes, state.grpc_routes, planner, labels
    )
    every = tuple(sorted((h for hosts in planned.values() for h in hosts), key=lambda h: h.name))
    sessions, cors = uses_sessions(every), uses_cors(every)
    alt_svc = f'h3=":{port.port}"; ma={ALT_SVC_MAX_AGE}' if http3 else None
    routes = route_names(gateway, port)
    for listener in port.listeners:
        own = routes[listener.name]
        if own in resources[typeurls.ROUTE]:
            continue  # the port's one route table, already built
        hosts = every
        if own != name:
            # This listener's SNI chain: its own hosts; the others' hosts answer 421, and so
            # does any host another listener of the port would own (its hostname, or every
            # host for one without), not only those its routes name.
            mine = {d for h in planned[listener.name] for d in h.domains}
            others = {h.name for h in every if h not in planned[listener.name]}
            others |= {x.hostname or "*" for x in port.listeners if x is not listener}
            others -= mine
            hosts = (*planned[listener.name], *((misdirected(others),) if others else ()))
        resources[typeurls.ROUTE][own] = yield from route_configuration_steps(own, hosts, alt_svc)
        yield
    # HTTPS: one chain per listener with certificates (the others were left out above).
    chains = tuple((x.hostname, secrets[x.name], routes[x.name]) for x in port.listeners if secrets)
    on_port = [
        planner.policies.listener(gateway.namespace, gateway.name, x.name) for x in port.listeners
    ]
    log = port_format(p.access_log for p in on_port)
    trace = plan_trace((p.tracing for p in on_port), planner, f"{gateway.namespace}/{gateway.name}")
    resources[typeurls.LISTENER][name] = gateway_listener(
        name, port.port, chains, sessions, cors, log, trace
    )
    if http3 is not None:
        twin = quic_listener_name(name)
        resources[typeurls.LISTENER][twin] = quic_listener(
            twin, port.port, chains, http3.early_data, sessions, cors, log, trace
        )


def _add_sidecar(
    resources: Resources, state: FleetState, index: ServiceIndex, planner: Planner
) -> Steps[None]:
    """Outbound listeners for the services in the sidecar scope (all exported by default)."""
    scope = planner.policies.fleet(state.name).sidecar
    keys = [k for k in index if scope is None or (k.namespace, k.service) in scope.services]
    outbound = yield from plan_outbound(keys, planner)
    for port, hosts in outbound.items():
        name = outbound_name(port)
        resources[typeurls.LISTENER][name] = outbound_listener(name, port, uses_sessions(hosts))
        resources[typeurls.ROUTE][name] = yield from route_configuration_steps(name, hosts)
        yield


def _add_proxyless(resources: Resources, index: ServiceIndex, planner: Planner) -> Steps[None]:
    """Add one listener per service port: the targets gRPC clients dial."""
    for done, key in enumerate(index, 1):
        name = proxyless_listener_name(key.service, key.namespace, key.port)
        # `service` also records the cluster as used.
        retry = planner.service(key).retry
        resources[typeurls.LISTENER][name] = proxyless_listener(name, key.cluster, retry)
        if done % SERVICES_STEP == 0:
            yield
