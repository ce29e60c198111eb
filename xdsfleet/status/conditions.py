"""What the status of a route or TrafficPolicy of the fleet cluster should say.

Gateway API conditions, with our controllerName, on each `status.parents[]` entry of a route
(one per parentRef) and each `status.ancestors[]` entry of a TrafficPolicy (one per targetRef):

- Accepted: the latest version parsed (otherwise the parser's problems, and which version still
  serves); for a route parent, also that it attaches to a listener of that Gateway, with
  Gateway API's reasons (NoMatchingParent, NotAllowedByListeners, NoMatchingListenerHostname);
- ResolvedRefs: everything else it names exists (the reference checks `validate` runs), with
  Gateway API's reasons for backendRefs (RefNotPermitted, InvalidKind, BackendNotFound);
- Programmed: how many connected Envoys hold what it produced at the version served now, how
  many refused it, and the first refusal's message, from each ADS stream's per-resource
  ACK/NACK state.

Pure: the fleet state, the mirrors' refusals and the streams' holdings in, JSON out. Entries of
other controllers are kept; an unchanged status is reported as None, so nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xdsfleet.cache import typeurls
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.model.attachment import (
    GATEWAY_GROUP,
    CertificateProblem,
    Labels,
    allows_kind,
    backend_problem,
    certificate_problem,
    labels_of,
    parent_problem,
)
from xdsfleet.model.fleet import (
    FleetState,
    Gateway,
    GatewayListener,
    GRPCRoute,
    GRPCRouteRule,
    HTTPRoute,
    RouteRule,
)
from xdsfleet.model.node import NodeProfile
from xdsfleet.model.policy import TargetKind, TrafficPolicy
from xdsfleet.server.protocol import TypeStatus
from xdsfleet.translate.names import gateway_port_name
from xdsfleet.translate.routes import GatewayPort, attached, gateway_ports, route_names
from xdsfleet.translate.snapshot import certificates

CONTROLLER = "xdsfleet.io/controller"

JsonObject = dict[str, Any]
Affects = Callable[[str, str], bool]  # (type URL, resource name) -> does the object shape it?


@dataclass(frozen=True, slots=True)
class Held:
    """One resource a client was sent: whether it holds the version served now, or refused it
    (with its message)."""

    type_url: str
    name: str
    current: bool
    refused: str | None = None


def holdings(
    statuses: Iterable[tuple[NodeProfile, Mapping[str, TypeStatus]]],
    snapshot_of: Callable[[NodeProfile], Snapshot],
) -> list[list[Held]]:
    """Per stream (in the order given), every resource it holds or refused."""
    found = []
    for profile, by_type in statuses:
        snapshot = snapshot_of(profile)
        held = []
        for type_url, status in by_type.items():
            served = snapshot.of(type_url)
            for name, (_, message) in status.refused.items():
                held.append(Held(type_url, name, False, message))
            for name, version in status.held.items():
                if name not in status.refused:
                    current = name in served and served[name].version == version
                    held.append(Held(type_url, name, current))
        found.append(held)
    return found


@dataclass(frozen=True, slots=True)
class Programmed:
    accepted: int  # clients holding all of it at the version served now
    refused: int  # clients that refused some of it
    first_refusal: str = ""

    @classmethod
    def count(cls, streams: Iterable[list[Held]], affects: Affects) -> Programmed:
        accepted = refused = 0
        first = ""
        for held in streams:
            mine = [h for h in held if affects(h.type_url, h.name)]
            if not mine:
                continue  # this client is not sent anything of it
            refusal = next((h.refused for h in mine if h.refused is not None), None)
            if refusal is not None:
                refused += 1
                first = first or refusal
            elif all(h.current for h in mine):
                accepted += 1
        return cls(accepted, refused, first)

    def condition(self) -> Condition:
        envoys = f"{self.accepted} Envoy{'s' * (self.accepted != 1)} hold it"
        if self.refused:
            message = f"{envoys}; {self.refused} refused it: {self.first_refusal}"
            return Condition("Programmed", "False", "Refused", message)
        if self.accepted:
            return Condition("Programmed", "True", "Programmed", f"{envoys} at the served version")
        return Condition("Programmed", "Unknown", "Pending", "no connected Envoy holds it yet")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # True, False or Unknown
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Everything the status of one object says, per reference (parentRef or targetRef)."""

    generation: int  # the one these conditions are about
    conditions: tuple[tuple[Condition, ...], ...]  # per reference, in spec order

    @classmethod
    def refused(cls, generation: int, problems: str, serving: int | None) -> Verdict:
        keeps = f"; generation {serving} keeps serving" if serving else ""
        accepted = Condition("Accepted", "False", "UnsupportedValue", problems + keeps)
        return cls(generation, ((accepted,),))


@dataclass(frozen=True, slots=True)
class _Wording:
    """How one kind's conditions read: which problems are its references' (one Accepted per
    reference) and the reasons and messages Gateway API uses for that kind."""

    references: str  # the field path of its references: spec.parentRefs, spec.targetRefs
    unmatched: str  # the Accepted=False reason of a reference that does not resolve
    accepted: str  # the Accepted=True message
    unresolved: str  # the ResolvedRefs=False reason
    resolved: str  # the ResolvedRefs=True message


_ROUTE = _Wording(
    "spec.parentRefs", "NoMatchingParent", "served", "BackendNotFound", "every backend resolves"
)
_POLICY = _Wording(
    "spec.targetRefs", "TargetNotFound", "applied", "Invalid", "everything it names exists"
)


def _verdict(
    wording: _Wording,
    references: int,
    generation: int,
    problems: Mapping[str, str],
    programmed: Programmed,
) -> Verdict:
    others = [m for f, m in sorted(problems.items()) if not f.startswith(wording.references)]
    resolved = (
        Condition("ResolvedRefs", "False", wording.unresolved, "; ".join(others))
        if others
        else Condition("ResolvedRefs", "True", "ResolvedRefs", wording.resolved)
    )
    per_reference = []
    for i in range(references):
        if problem := problems.get(f"{wording.references}[{i}]"):
            accepted = Condition("Accepted", "False", wording.unmatched, problem)
        else:
            accepted = Condition("Accepted", "True", "Accepted", wording.accepted)
        per_reference.append((accepted, resolved, programmed.condition()))
    return Verdict(generation, tuple(per_reference))


@dataclass(frozen=True, slots=True)
class Gateways:
    """What the status of every route reads of a state's Gateways, made once per status pass
    rather than once per route: the namespaces' labels (what `allowedRoutes` selectors read),
    the Gateways by (namespace, name), and each one's ports."""

    labels: Labels
    by_name: Mapping[tuple[str, str], Gateway]
    ports: tuple[tuple[Gateway, tuple[GatewayPort, ...]], ...]

    @classmethod
    def of(cls, state: FleetState) -> Gateways:
        return cls(
            labels_of(state.namespaces),
            {(g.namespace, g.name): g for g in state.gateways},
            tuple((g, gateway_ports(g)) for g in state.gateways),
        )


def route_verdict(
    state: FleetState,
    route: HTTPRoute | GRPCRoute,
    generation: int,
    problems: Mapping[str, str],
    programmed: Programmed,
    gateways: Gateways | None = None,
) -> Verdict:
    """`problems`: field path (`spec.parentRefs[0]`, `spec.rules[1].backendRefs[0]`) ->
    message, from the reference checks. The reasons are Gateway API's: per parent, why the
    route attaches to none of its listeners; for the refs, the first of RefNotPermitted,
    InvalidKind, BackendNotFound that applies. `gateways`: `Gateways.of(state)`, made once for
    many routes."""
    verdict = _verdict(_ROUTE, len(route.parent_refs), generation, problems, programmed)
    kind = _kind(route)
    found_gateways = gateways or Gateways.of(state)
    labels = found_gateways.labels
    rules: Iterable[RouteRule | GRPCRouteRule] = route.rules
    reasons = set()
    for rule in rules:
        for ref in rule.backend_refs:
            if (problem := backend_problem(state, kind, route.namespace, ref)) is not None:
                reasons.add(problem[0])
    unresolved = next((r for r in ("RefNotPermitted", "InvalidKind") if r in reasons), None)
    per_parent = []
    for parent, (accepted, resolved, programmed_condition) in zip(
        route.parent_refs, verdict.conditions, strict=True
    ):
        gateway = found_gateways.by_name.get((parent.namespace, parent.name))
        found = parent_problem(gateway, parent, kind, route, labels) if gateway else None
        if found is not None:
            accepted = Condition("Accepted", "False", found[0], found[1])
        if unresolved is not None and resolved.status == "False":
            resolved = Condition("ResolvedRefs", "False", unresolved, resolved.message)
        per_parent.append((accepted, resolved, programmed_condition))
    return Verdict(generation, tuple(per_parent))


def _kind(route: HTTPRoute | GRPCRoute) -> str:
    return TargetKind.GRPC_ROUTE if isinstance(route, GRPCRoute) else TargetKind.HTTP_ROUTE


def policy_verdict(
    policy: TrafficPolicy,
    generation: int,
    problems: Mapping[str, str],
    programmed: Programmed,
) -> Verdict:
    """`problems` as for `route_verdict` (`spec.targetRefs[0]`, `spec.members[1].name`)."""
    return _verdict(_POLICY, len(policy.targets), generation, problems, programmed)


# --- What an object shapes ---------------------------------------------------------------------


def _route_configurations(route: HTTPRoute | GRPCRoute, gateways: Gateways) -> frozenset[str]:
    """The gateway RouteConfigurations a route is part of (a port's, or an SNI chain's)."""
    kind, labels = _kind(route), gateways.labels
    return frozenset(
        route_names(gateway, port)[listener.name]
        for gateway, ports in gateways.ports
        for port in ports
        for listener in port.listeners
        if attached(gateway, listener, kind, (route,), labels)
    )


def route_affects(
    state: FleetState, route: HTTPRoute | GRPCRoute, gateways: Gateways | None = None
) -> Affects:
    names = _route_configurations(route, gateways or Gateways.of(state))
    return lambda type_url, name: type_url == typeurls.ROUTE and name in names


def _named(prefix: str, *type_urls: str) -> Affects:
    return lambda type_url, name: type_url in type_urls and name.startswith(prefix)


def policy_affects(
    state: FleetState, policy: TrafficPolicy, gateways: Gateways | None = None
) -> Affects:
    """The resources its targets shape: a service's clusters and assignments (every port and
    pinning), a route's RouteConfigurations, a Gateway's listeners and routes, or, for the
    Fleet, everything."""
    tests: list[Affects] = []
    for target in policy.targets:
        match target.kind:
            case TargetKind.SERVICE | TargetKind.SERVICE_IMPORT:
                prefix = f"{policy.namespace}/{target.name}:"
                tests.append(_named(prefix, typeurls.CLUSTER, typeurls.ENDPOINT))
            case TargetKind.HTTP_ROUTE | TargetKind.GRPC_ROUTE:
                routes: Iterable[HTTPRoute | GRPCRoute] = (
                    state.http_routes if target.kind is TargetKind.HTTP_ROUTE else state.grpc_routes
                )
                for route in routes:
                    if (route.namespace, route.name) == (policy.namespace, target.name):
                        gateways = gateways or Gateways.of(state)
                        tests.append(route_affects(state, route, gateways))
            case TargetKind.GATEWAY:
                prefix = f"{policy.namespace}/{target.name}:"
                tests.append(_named(prefix, typeurls.LISTENER, typeurls.ROUTE))
            case TargetKind.FLEET:
                tests.append(_named("", *typeurls.ORDER))
    return lambda type_url, name: any(test(type_url, name) for test in tests)


# --- The status document ---------------------------------------------------------------------


def parent_refs(route: JsonObject) -> list[JsonObject]:
    """The route's parentRefs as status names them (defaults spelled out)."""
    namespace = route["metadata"].get("namespace", "default")
    return [
        {
            "group": ref.get("group", GATEWAY_GROUP),
            "kind": ref.get("kind", "Gateway"),
            "namespace": ref.get("namespace", namespace),
            "name": ref.get("name", ""),
            **{k: ref[k] for k in ("sectionName", "port") if k in ref},
        }
        for ref in (route.get("spec") or {}).get("parentRefs") or []
    ]


def our_parent(foreign: Collection[tuple[str, str]]) -> Callable[[JsonObject], bool]:
    """Whether a parentRef (as `parent_refs` spells it) is ours to report on: Gateway API leaves
    the routes of a Gateway to the controller of its class, so a parentRef to a `foreign`
    Gateway (namespace, name) gets no status from us. A Gateway that does not exist anywhere
    stays ours: NoMatchingParent is what tells of the typo."""

    def mine(ref: JsonObject) -> bool:
        gateway = (ref["group"], ref["kind"]) == (GATEWAY_GROUP, "Gateway")
        return not gateway or (ref["namespace"], ref["name"]) not in foreign

    return mine


def target_refs(policy: JsonObject) -> list[JsonObject]:
    """The policy's targetRefs as ancestor references."""
    namespace = policy["metadata"].get("namespace", "default")
    return [
        {
            "group": ref.get("group", ""),
            "kind": ref.get("kind", ""),
            "namespace": namespace,
            "name": ref.get("name", ""),
            **({"sectionName": ref["sectionName"]} if "sectionName" in ref else {}),
        }
        for ref in (policy.get("spec") or {}).get("targetRefs") or []
    ]


def _condition(
    condition: Condition, generation: int, old: list[JsonObject], now: str
) -> JsonObject:
    previous = next((c for c in old if c.get("type") == condition.type), None)
    # The transition time moves only when the status does.
    same = previous is not None and previous.get("status") == condition.status
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message[:32768],  # the CRDs' bound
        "observedGeneration": generation,
        "lastTransitionTime": previous["lastTransitionTime"] if same and previous else now,
    }


def merged_status(
    obj: JsonObject,
    *,
    field: str,
    refs: list[JsonObject],
    ref_key: str,
    verdict: Verdict,
    now: datetime | None = None,
    mine: Callable[[JsonObject], bool] | None = None,
) -> JsonObject | None:
    """`obj`'s status with our entries of `field` (`parents` or `ancestors`) replaced: one per
    reference in `refs` that is `mine` (default: all), under `ref_key` (`parentRef`,
    `ancestorRef`). None when that changes nothing."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = dict(obj.get("status") or {})
    entries = [e for e in status.get(field) or [] if isinstance(e, dict)]
    others = [e for e in entries if e.get("controllerName") != CONTROLLER]
    ours = {repr(e.get(ref_key)): e for e in entries if e.get("controllerName") == CONTROLLER}
    written = []
    for i, ref in enumerate(refs):
        if mine is not None and not mine(ref):
            continue
        conditions = verdict.conditions[min(i, len(verdict.conditions) - 1)]
        old = ours.get(repr(ref), {}).get("conditions") or []
        written.append(
            {
                ref_key: ref,
                "controllerName": CONTROLLER,
                "conditions": [_condition(c, verdict.generation, old, stamp) for c in conditions],
            }
        )
    if not written and not ours:
        return None  # nothing of ours to say, nor to take back
    new = {**status, field: others + written}
    return None if new == status else new


def fleet_members_status(
    obj: JsonObject, members: Iterable[tuple[str, str, bool, str]]
) -> JsonObject | None:
    """A Fleet resource's status: its Kubernetes members as (name, source, stale, message).
    Endpoint counts are left out on purpose: they change all the time, staleness seldom."""
    status = dict(obj.get("status") or {})
    new = {
        **status,
        "observedGeneration": (obj.get("metadata") or {}).get("generation", 0),
        "members": [
            {"name": name, "source": source, "stale": stale, "message": message}
            for name, source, stale, message in members
        ],
    }
    return None if new == status else new


# --- Gateways --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenerVerdict:
    """What `status.listeners[]` says of one Gateway listener."""

    name: str
    attached_routes: int
    supported_kinds: tuple[str, ...]
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class GatewayVerdict:
    generation: int
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerVerdict, ...]


def _certificate_condition(
    state: FleetState,
    gateway: Gateway,
    listener: GatewayListener,
    secrets: Container[tuple[str, str]],
) -> Condition:
    """ResolvedRefs of a listener: the first certificateRef it cannot use, and why."""
    for ref in listener.certificate_refs:
        problem = certificate_problem(state, gateway, ref, secrets)
        if problem is None:
            continue
        secret = f"Secret {ref.namespace}/{ref.name}"
        message = (
            f"no ReferenceGrant lets it use {secret}"
            if problem is CertificateProblem.NOT_PERMITTED
            else f"{secret} does not exist"
        )
        return Condition("ResolvedRefs", "False", problem.value, message)
    return Condition("ResolvedRefs", "True", "ResolvedRefs", "every reference resolves")


def _listener_named(name: str) -> Affects:
    return lambda type_url, found: type_url == typeurls.LISTENER and found == name


def gateway_verdict(
    state: FleetState, gateway: Gateway, generation: int, streams: Iterable[list[Held]]
) -> GatewayVerdict:
    """Per listener: Accepted, Conflicted (ProtocolConflict on a shared port), ResolvedRefs
    (its certificates) and Programmed (how many Envoys hold its port's listener), with the
    routes attached to it; and the Gateway's own Accepted and Programmed."""
    streams = list(streams)
    labels = labels_of(state.namespaces)
    secrets = {(s.namespace, s.name) for s in state.secrets}
    ports = {x.name: port for port in gateway_ports(gateway) for x in port.listeners}
    conflicted = {x.name for port in gateway_ports(gateway) for x in port.conflicted}
    found = []
    for listener in gateway.listeners:
        if not listener.served:
            unsupported = f"protocol {listener.protocol} is not served by xdsfleet"
            left_alone = (
                Condition("Accepted", "False", "UnsupportedProtocol", unsupported),
                Condition("Programmed", "False", "Invalid", "not served"),
            )
            found.append(ListenerVerdict(listener.name, 0, (), left_alone))
            continue
        kinds = tuple(
            k for k in (TargetKind.HTTP_ROUTE, TargetKind.GRPC_ROUTE) if allows_kind(listener, k)
        )
        attached_routes = len(
            attached(gateway, listener, TargetKind.HTTP_ROUTE, state.http_routes, labels)
        ) + len(attached(gateway, listener, TargetKind.GRPC_ROUTE, state.grpc_routes, labels))
        conditions = [
            Condition("Accepted", "True", "Accepted", "served"),
            Condition("Conflicted", "True", "ProtocolConflict", "another protocol has the port")
            if listener.name in conflicted
            else Condition("Conflicted", "False", "NoConflicts", "no conflict"),
            _certificate_condition(state, gateway, listener, secrets),
        ]
        if listener.name in conflicted:
            conditions.append(Condition("Programmed", "False", "Invalid", "not served"))
        elif listener.protocol == "HTTPS" and not certificates(state, gateway, listener):
            message = "not served: none of its certificates can be used"
            conditions.append(Condition("Programmed", "False", "Invalid", message))
        else:
            port = ports[listener.name]
            name = gateway_port_name(gateway.namespace, gateway.name, port.port)
            conditions.append(Programmed.count(streams, _listener_named(name)).condition())
        found.append(ListenerVerdict(listener.name, attached_routes, kinds, tuple(conditions)))
    served = {x.name for x in gateway.listeners if x.served}
    programmed = [
        c for v in found if v.name in served for c in v.conditions if c.type == "Programmed"
    ]
    overall = (
        Condition("Programmed", "True", "Programmed", "every listener is held by its Envoys")
        if programmed and all(c.status == "True" for c in programmed)
        else next(
            (c for c in programmed if c.status != "True"),
            Condition("Programmed", "False", "Invalid", "no listener is served"),
        )
    )
    accepted = Condition("Accepted", "True", "Accepted", "served")
    return GatewayVerdict(generation, (accepted, overall), tuple(found))


def gateway_status(
    obj: JsonObject, verdict: GatewayVerdict, now: datetime | None = None
) -> JsonObject | None:
    """`obj`'s status with the conditions and listeners of `verdict`; None when that changes
    nothing. Transition times move only when a condition's status does."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = dict(obj.get("status") or {})
    old_listeners = {
        entry.get("name"): entry.get("conditions") or []
        for entry in status.get("listeners") or []
        if isinstance(entry, dict)
    }
    old = status.get("conditions") or []
    new = {
        **status,
        "conditions": [_condition(c, verdict.generation, old, stamp) for c in verdict.conditions],
        "listeners": [
            {
                "name": listener.name,
                "supportedKinds": [
                    {"group": GATEWAY_GROUP, "kind": kind} for kind in listener.supported_kinds
                ],
                "attachedRoutes": listener.attached_routes,
                "conditions": [
                    _condition(c, verdict.generation, old_listeners.get(listener.name, []), stamp)
                    for c in listener.conditions
                ],
            }
            for listener in verdict.listeners
        ],
    }
    return None if new == status else new
