"""Reference checks: what the fleet's documents point at that does not exist, or cannot work.

These are not parse errors (docs/architecture.md, decision 5): a route may name a backend no
member runs yet, a policy may name a member that joins later, and translation skips what does
not resolve, the same way on every replica. `xdsfleet validate` reports them, each named by the
file of the object holding the reference. Nothing here does I/O or knows Envoy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from xdsfleet.documents.policy import SPEC_FIELDS
from xdsfleet.documents.reading import did_you_mean, object_label, origin_key
from xdsfleet.model.attachment import (
    Attachable,
    CertificateProblem,
    Labels,
    attaches,
    backend_problem,
    certificate_problem,
    effective_hostnames,
    labels_of,
    parent_problem,
)
from xdsfleet.model.errors import Problem, Severity
from xdsfleet.model.fleet import (
    BackendRef,
    EndpointMode,
    FleetState,
    Gateway,
    GRPCRoute,
    GRPCRouteMatch,
    GRPCRouteRule,
    HTTPRoute,
    Member,
    ParentRef,
    RouteMatch,
    RouteRule,
    ServicePort,
)
from xdsfleet.model.policy import (
    Level,
    MemberPolicy,
    PolicyIndex,
    PolicyTarget,
    TargetKind,
    TrafficPolicy,
)

R = TypeVar("R", bound=Attachable)
# PolicySpec field -> the YAML key under `spec` that sets it.
_SPEC_KEYS = {field: key for key, field in SPEC_FIELDS.items()}


def _parent_problem(
    parent: ParentRef,
    gateways: Mapping[tuple[str, str], Gateway],
    kind: str,
    route: HTTPRoute | GRPCRoute,
    labels: Labels,
) -> str:
    gateway = gateways.get((parent.namespace, parent.name))
    label = object_label("Gateway", parent.namespace, parent.name)
    if gateway is None:
        names = [name for namespace, name in gateways if namespace == parent.namespace]
        return f"{label} does not exist{did_you_mean(parent.name, names)}"
    found = parent_problem(gateway, parent, kind, route, labels)
    if found is None:
        return ""
    if found[0] != "NoMatchingParent":
        return f"{label}: {found[1]}"
    if parent.section_name is not None:
        hint = did_you_mean(parent.section_name, (x.name for x in gateway.listeners))
        on = f" on port {parent.port}" if parent.port is not None else ""
        return f"{label} has no listener {parent.section_name!r}{on}{hint}"
    return f"{label} has no listener on port {parent.port}"


@dataclass(frozen=True, slots=True)
class _Offer:
    """What the members offer under one (namespace, service name)."""

    ports: frozenset[int]
    port_names: frozenset[str]
    exporters: tuple[str, ...]  # the members exporting it, in member order


class _Offered:
    """What the members offer, by (namespace, service name), gathered per name when asked.

    A large fleet offers tens of thousands of (member, service) pairs while its documents name
    a few hundred services: gathering every pair up front cost most of a second at 100,000
    endpoints, each time a member came or went, on the event loop that serves Envoy.
    """

    def __init__(self, state: FleetState) -> None:
        self._members = [
            (
                {(service.namespace, service.name): service for service in member.services},
                None if state.export_all else frozenset(member.exports),
                member.member.name,
            )
            for member in state.members
        ]
        self._offers: dict[tuple[str, str], _Offer] = {}

    def offer(self, key: tuple[str, str]) -> _Offer:
        """What is offered under `key`: nothing at all when no member has the Service."""
        found = self._offers.get(key)
        if found is None:
            # Members running the same Service often share its ports' tuple (the sources keep
            # unchanged objects): each distinct one is read once.
            distinct: dict[int, tuple[ServicePort, ...]] = {}
            exporters = []
            for services, exports, member in self._members:
                service = services.get(key)
                if service is None:
                    continue
                distinct.setdefault(id(service.ports), service.ports)
                if exports is None or key in exports:
                    exporters.append(member)
            every = [p for ports in distinct.values() for p in ports]
            found = _Offer(
                frozenset(p.port for p in every),
                frozenset(p.name for p in every if p.name),
                tuple(exporters),
            )
            self._offers[key] = found
        return found

    def defines(self, key: tuple[str, str]) -> bool:
        """Whether any member has the Service, whether or not it exports it."""
        return any(key in services for services, _, _ in self._members)

    def names_in(self, namespace: str) -> set[str]:
        return {
            name for services, _, _ in self._members for ns, name in services if ns == namespace
        }

    def problem(self, backend: BackendRef) -> str:
        key = (backend.namespace, backend.name)
        label = object_label("Service", *key)
        if not self.defines(key):
            names = self.names_in(backend.namespace)
            return f"{label} is not defined by any member{did_you_mean(backend.name, names)}"
        offer = self.offer(key)
        if backend.port not in offer.ports:
            offered = ", ".join(map(str, sorted(offer.ports)))
            return f"{label} has no port {backend.port} in any member (it has {offered})"
        if not offer.exporters:
            return f"{label} is not exported by any member (add a ServiceExport)"
        return ""


class _Report:
    """Problems, each attributed to the file that defines the object it is about."""

    def __init__(self, origins: Mapping[str, str]) -> None:
        self._origins = origins
        self.problems: list[Problem] = []

    def add(
        self,
        label: str,
        path: str,
        message: str,
        member: str | None = None,
        *,
        warning: bool = False,
    ) -> None:
        file = self._origins.get(origin_key(label, member), "")
        severity = Severity.WARNING if warning else Severity.ERROR
        self.problems.append(Problem(file, label, path, message, severity=severity))


def reference_problems(state: FleetState, origins: Mapping[str, str]) -> list[Problem]:
    """What the fleet's documents refer to that does not exist or cannot work: route parents
    and backends, listener certificates, policy targets and members, conflicting policies and
    routes, and node ports that nodePort members need. Translation skips such references."""
    report = _Report(origins)
    offered = _Offered(state)
    gateways = {(g.namespace, g.name): g for g in state.gateways}
    labels = labels_of(state.namespaces)
    for route in state.http_routes:
        _check_route(report, state, "HTTPRoute", route, gateways, offered, labels)
    for grpc_route in state.grpc_routes:
        _check_route(report, state, "GRPCRoute", grpc_route, gateways, offered, labels)
    _check_certificates(report, state)
    _check_shared_ports(report, state)
    _check_match_conflicts(report, state, "HTTPRoute", state.http_routes, _http_matches, labels)
    _check_match_conflicts(report, state, "GRPCRoute", state.grpc_routes, _grpc_matches, labels)
    _check_node_ports(report, state)
    index = PolicyIndex(state.policies)
    for policy in state.policies:
        _check_policy(report, state, policy, offered, index)
    for conflict in index.conflicts():
        label = object_label("TrafficPolicy", conflict.loser.namespace, conflict.loser.name)
        winner = object_label("TrafficPolicy", conflict.winner.namespace, conflict.winner.name)
        message = f"{winner} sets it too for {_describe(conflict.target)}; {winner} applies"
        report.add(label, f"spec.{_SPEC_KEYS[conflict.field]}", message)
    return report.problems


# --- Routes ----------------------------------------------------------------------------------


def _check_route(
    report: _Report,
    state: FleetState,
    kind: str,
    route: HTTPRoute | GRPCRoute,
    gateways: Mapping[tuple[str, str], Gateway],
    offered: _Offered,
    labels: Labels,
) -> None:
    label = object_label(kind, route.namespace, route.name)
    foreign = set(state.foreign_gateways)
    for i, parent in enumerate(route.parent_refs):
        if (parent.namespace, parent.name) in foreign:
            continue  # another controller's Gateway: its controller says what is wrong
        if message := _parent_problem(parent, gateways, kind, route, labels):
            report.add(label, f"spec.parentRefs[{i}]", message)
    rules: Sequence[RouteRule | GRPCRouteRule] = route.rules
    for r, rule in enumerate(rules):
        for b, backend in enumerate(rule.backend_refs):
            if message := _backend_message(state, kind, route.namespace, backend, offered):
                report.add(label, f"spec.rules[{r}].backendRefs[{b}]", message)
        for m, mirror in enumerate(rule.filters.mirrors):
            ref = mirror.backend
            if message := _backend_message(state, kind, route.namespace, ref, offered):
                report.add(label, f"spec.rules[{r}].filters.requestMirror[{m}]", message)


def _backend_message(
    state: FleetState, kind: str, namespace: str, backend: BackendRef, offered: _Offered
) -> str:
    found = backend_problem(state, kind, namespace, backend)
    if found is not None:
        return f"{found[1]} (its requests are answered 500)"
    return offered.problem(backend)


def _check_certificates(report: _Report, state: FleetState) -> None:
    secrets = {(s.namespace, s.name) for s in state.secrets}
    for gateway in state.gateways:
        label = object_label("Gateway", gateway.namespace, gateway.name)
        for i, listener in enumerate(gateway.listeners):
            for c, ref in enumerate(listener.certificate_refs):
                path = f"spec.listeners[{i}].tls.certificateRefs[{c}]"
                secret = object_label("Secret", ref.namespace, ref.name)
                match certificate_problem(state, gateway, ref, secrets):
                    case CertificateProblem.NOT_FOUND:
                        message = f"{secret} does not exist (the listener is not served)"
                        report.add(label, path, message)
                    case CertificateProblem.NOT_PERMITTED:
                        message = f"no ReferenceGrant in namespace {ref.namespace} lets Gateways "
                        message += f"of {gateway.namespace} use {secret} (RefNotPermitted)"
                        report.add(label, path, message)


def _check_shared_ports(report: _Report, state: FleetState) -> None:
    """Listeners may share a port only with one protocol: the port's first listener sets it
    (Gateway API: the others are Conflicted, ProtocolConflict)."""
    for gateway in state.gateways:
        label = object_label("Gateway", gateway.namespace, gateway.name)
        first: dict[int, tuple[str, str]] = {}
        for i, listener in enumerate(gateway.listeners):
            if not listener.served:
                message = f"protocol {listener.protocol} is not served by xdsfleet: this "
                message += "listener is left alone (UnsupportedProtocol)"
                report.add(label, f"spec.listeners[{i}].protocol", message, warning=True)
                continue
            protocol, name = first.setdefault(listener.port, (listener.protocol, listener.name))
            if listener.protocol != protocol:
                message = f"port {listener.port} serves {protocol} (listener {name}): this "
                message += f"{listener.protocol} listener is not served (ProtocolConflict)"
                report.add(label, f"spec.listeners[{i}].protocol", message)


def _http_matches(route: HTTPRoute) -> list[list[RouteMatch]]:
    return [
        [RouteMatch(m.path.normalized(), m.headers, m.query_params, m.method) for m in rule.matches]
        for rule in route.rules
    ]


def _grpc_matches(route: GRPCRoute) -> list[list[GRPCRouteMatch]]:
    return [list(rule.matches) for rule in route.rules]


def _check_match_conflicts(
    report: _Report,
    state: FleetState,
    kind: str,
    routes: Sequence[R],
    matches_of: Callable[[R], Sequence[Sequence[object]]],
    labels: Labels,
) -> None:
    """A rule whose match another rule on the same listener and hostname already has never
    applies: the one first by (namespace, name), then rule order, wins (Gateway API). Each
    such match is reported once, however many listeners it meets the other on."""
    reported: set[tuple[str, int, int]] = set()
    for gateway in state.gateways:
        for listener in gateway.listeners:
            seen: dict[tuple[str, object], str] = {}
            for route in routes:
                if not attaches(gateway, listener, kind, route, labels):
                    continue
                label = object_label(kind, route.namespace, route.name)
                hostnames = effective_hostnames(listener, route.hostnames)
                for r, matches in enumerate(matches_of(route)):
                    for m, match in enumerate(matches):
                        for hostname in hostnames:
                            first = seen.setdefault((hostname, match), f"{label} rule {r}")
                            if first == f"{label} rule {r}" or (label, r, m) in reported:
                                continue
                            reported.add((label, r, m))
                            message = f"{first} has the same match for {hostname}; it wins"
                            report.add(label, f"spec.rules[{r}].matches[{m}]", message)


# --- Members ---------------------------------------------------------------------------------


def _check_node_ports(report: _Report, state: FleetState) -> None:
    """Members in nodePort mode are reached at their nodes: each exported port needs a
    nodePort, and the member needs ready nodes."""
    for member_state in state.members:
        member = member_state.member
        if member.endpoint_mode is not EndpointMode.NODE_PORT:
            continue
        exported = set(member_state.exports)
        for service in member_state.services:
            if not (state.export_all or (service.namespace, service.name) in exported):
                continue
            label = object_label("Service", service.namespace, service.name)
            for i, port in enumerate(service.ports):
                if port.node_port is None:
                    message = f"member {member.name} is in nodePort mode: this port needs one"
                    report.add(label, f"spec.ports[{i}].nodePort", message, member.name)
        reachable = any(node.ready and node.addresses for node in member_state.nodes)
        if (exported or state.export_all) and not reachable:
            fleet = object_label("Fleet", "", state.name)
            message = f"member {member.name} is in nodePort mode but has no ready Node"
            report.add(fleet, "spec.members", message)


# --- Policies --------------------------------------------------------------------------------


def _describe(target: PolicyTarget) -> str:
    section = f" section {target.section_name}" if target.section_name else ""
    return f"{target.kind} {target.name}{section}"


def _target_problem(
    state: FleetState, policy: TrafficPolicy, target: PolicyTarget, offered: _Offered
) -> str:
    namespace, section = policy.namespace, target.section_name
    match target.kind:
        case TargetKind.SERVICE | TargetKind.SERVICE_IMPORT:
            key = (namespace, target.name)
            if not offered.defines(key):
                return f"{object_label('Service', *key)} is not defined by any member"
            if section is not None and section not in offered.offer(key).port_names:
                return f"{object_label('Service', *key)} has no port named {section!r}"
        case TargetKind.HTTP_ROUTE | TargetKind.GRPC_ROUTE:
            routes = (
                state.http_routes if target.kind is TargetKind.HTTP_ROUTE else state.grpc_routes
            )
            route = next(
                (r for r in routes if (r.namespace, r.name) == (namespace, target.name)), None
            )
            if route is None:
                return f"{object_label(target.kind, namespace, target.name)} does not exist"
            if section is not None and section not in {rule.name for rule in route.rules}:
                return (
                    f"{object_label(target.kind, namespace, target.name)} has no rule {section!r}"
                )
        case TargetKind.GATEWAY:
            gateway = next(
                (g for g in state.gateways if (g.namespace, g.name) == (namespace, target.name)),
                None,
            )
            if gateway is None:
                names = [g.name for g in state.gateways if g.namespace == namespace]
                hint = did_you_mean(target.name, names)
                return f"{object_label('Gateway', namespace, target.name)} does not exist{hint}"
            if section is not None and section not in {x.name for x in gateway.listeners}:
                return (
                    f"{object_label('Gateway', namespace, target.name)} has no listener {section!r}"
                )
        case TargetKind.FLEET:
            if target.name != state.name:
                return f"the Fleet is named {state.name!r}"
    return ""


def _named_members(policy: TrafficPolicy) -> list[tuple[str, str]]:
    """(field path, member name) for every member the policy names."""
    spec = policy.spec
    named = [(f"spec.members[{i}].name", m.name) for i, m in enumerate(spec.members)]
    if spec.failover is not None:
        for t, tier in enumerate(spec.failover.tiers):
            named += [(f"spec.failover.tiers[{t}].members[{i}]", n) for i, n in enumerate(tier)]
    if spec.pin is not None:
        named += [(f"spec.pin.members[{i}]", n) for i, n in enumerate(spec.pin.members)]
    return named


def _check_policy(
    report: _Report,
    state: FleetState,
    policy: TrafficPolicy,
    offered: _Offered,
    index: PolicyIndex,
) -> None:
    label = object_label("TrafficPolicy", policy.namespace, policy.name)
    for i, target in enumerate(policy.targets):
        if message := _target_problem(state, policy, target, offered):
            report.add(label, f"spec.targetRefs[{i}]", message)
    members = {m.member.name: m.member for m in state.members}
    for path, name in _named_members(policy):
        if name not in members:
            hint = did_you_mean(name, members)
            report.add(label, path, f"member {name} is not in the Fleet{hint}")
    if policy.spec.sidecar is not None:
        for i, (namespace, name) in enumerate(policy.spec.sidecar.services):
            if not offered.offer((namespace, name)).exporters:
                service = object_label("Service", namespace, name)
                report.add(label, f"spec.sidecar.services[{i}]", f"{service} is not exported")
    if policy.level is Level.SERVICE and policy.spec.members:
        _check_some_member_serves(report, label, policy, offered, index, members)
    if policy.spec.http3 is not None:
        _check_http3(report, label, state, policy)
    if (tracing := policy.spec.tracing) is not None:
        collector = BackendRef(tracing.collector, tracing.namespace, tracing.port)
        if message := offered.problem(collector):
            report.add(label, "spec.tracing.collector", f"{message}: requests are not traced")


def _check_http3(report: _Report, label: str, state: FleetState, policy: TrafficPolicy) -> None:
    """QUIC always encrypts: HTTP/3 goes with HTTPS listeners only (a whole Gateway needs one)."""
    for target in policy.targets:
        gateway = next(
            (g for g in state.gateways if (g.namespace, g.name) == (policy.namespace, target.name)),
            None,
        )
        if gateway is None:
            continue  # reported with the target
        chosen = [x for x in gateway.listeners if target.section_name in (None, x.name)]
        if not chosen or any(x.protocol == "HTTPS" for x in chosen):
            continue
        if target.section_name:
            found = f"listener {target.section_name} of Gateway {target.name} is HTTP"
        else:
            found = f"Gateway {target.name} has no HTTPS listener"
        report.add(label, "spec.http3", f"HTTP/3 needs HTTPS, and {found}")


def _check_some_member_serves(
    report: _Report,
    label: str,
    policy: TrafficPolicy,
    offered: _Offered,
    index: PolicyIndex,
    members: Mapping[str, Member],
) -> None:
    """Weights that sum to zero: every member exporting the service drained or weighted 0."""
    for target in policy.targets:
        exporters = offered.offer((policy.namespace, target.name)).exporters
        spec = index.service(policy.namespace, target.name, target.section_name or "")
        serving = [name for name in exporters if not _silenced(spec.member(name), members[name])]
        if exporters and not serving:
            message = f"no member exporting {target.name} would get traffic (all drained or 0)"
            report.add(label, "spec.members", message)


def _silenced(policy: MemberPolicy | None, member: Member) -> bool:
    if policy is None:
        return member.weight == 0
    return policy.drain or (policy.weight if policy.weight is not None else member.weight) == 0
