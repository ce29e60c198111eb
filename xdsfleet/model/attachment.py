"""Gateway API attachment: which listeners of a Gateway a route attaches to, and why not.

parentRefs, `allowedRoutes` (namespaces and kinds), hostname intersection and listener
precedence, and whether a backendRef may be followed (kind, ReferenceGrant). Pure functions of
the model, shared by translation (what is served), the reference checks (what `validate`
reports) and the status conditions (the reasons Gateway API names), so that all three agree.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from enum import StrEnum
from typing import Protocol

from xdsfleet.model.fleet import (
    BackendRef,
    FleetState,
    Gateway,
    GatewayListener,
    GrantFrom,
    Namespace,
    ParentRef,
    RouteGroupKind,
    RouteNamespaces,
    SecretRef,
)

GATEWAY_GROUP = "gateway.networking.k8s.io"
# The GatewayClass xdsfleet serves. Gateway API gives each Gateway to the controller its class
# names; without this, xdsfleet would program (and refuse the features of) the Gateways of
# another controller sharing the cluster
# (docs/fleet.md, "Gateway (`gateway.networking.k8s.io/v1`)").
GATEWAY_CLASS = "xdsfleet"
MCS_GROUP = "multicluster.x-k8s.io"
# (group, kind) of the backends a route may send to: a Service, or the same service across
# every exporting member (docs/architecture.md, "Fleet documents").
SERVICE_KINDS = frozenset({("", "Service"), (MCS_GROUP, "ServiceImport")})
Labels = Mapping[str, Mapping[str, str]]  # namespace -> its labels


def labels_of(namespaces: tuple[Namespace, ...]) -> Labels:
    """Each known namespace's labels (what `allowedRoutes` selectors read)."""
    return {n.name: dict(n.labels) for n in namespaces}


class Attachable(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def parent_refs(self) -> tuple[ParentRef, ...]: ...
    @property
    def hostnames(self) -> tuple[str, ...]: ...


def covers(hostname: str, host: str) -> bool:
    """Whether `hostname` (`*`, `*.suffix` or exact) takes requests for `host` (exact or a
    wildcard): a wildcard stands for one or more leading labels."""
    if hostname in ("*", host):
        return True
    return hostname.startswith("*.") and host.endswith(hostname[1:])


def specificity(hostname: str) -> tuple[int, int]:
    """Sort key, most specific first (Gateway API: the most characters of a matching
    non-wildcard hostname, then the most characters)."""
    exact = not hostname.startswith("*")
    return (-len(hostname) if exact else 0, -len(hostname) if hostname != "*" else 0)


def intersection(listener: str | None, route: str) -> str | None:
    """The hostnames a route's `route` and its listener's `listener` hostname both take: the
    more specific of the two when one covers the other, else None."""
    if listener is None or covers(listener, route):
        return route
    if covers(route, listener):
        return listener
    return None


def effective_hostnames(listener: GatewayListener, hostnames: tuple[str, ...]) -> tuple[str, ...]:
    """The hostnames a route serves on `listener`; empty when none intersect (the route then
    does not attach there)."""
    if not hostnames:
        return (listener.hostname or "*",)
    found = (intersection(listener.hostname, h) for h in hostnames)
    return tuple(sorted({h for h in found if h is not None}))


# --- Attachment ------------------------------------------------------------------------------


def allows_kind(listener: GatewayListener, kind: str) -> bool:
    """Whether the listener's `allowedRoutes.kinds` take routes of `kind` (of Gateway API's
    group: a kind is its group and its name); none listed take every kind."""
    kinds = listener.allowed_routes.kinds
    return not kinds or RouteGroupKind(GATEWAY_GROUP, kind) in kinds


def allows(
    gateway: Gateway, listener: GatewayListener, kind: str, namespace: str, labels: Labels
) -> bool:
    """Whether the listener's `allowedRoutes` take a route of `kind` from `namespace`. A
    listener xdsfleet does not serve (TLS, TCP, UDP) takes none of its route kinds."""
    if not listener.served or not allows_kind(listener, kind):
        return False
    allowed = listener.allowed_routes
    if allowed.namespaces is RouteNamespaces.SAME:
        return namespace == gateway.namespace
    if allowed.namespaces is RouteNamespaces.ALL:
        return True
    selector = allowed.selector
    return selector is not None and selector.matches(labels.get(namespace, {}))


def attaches(
    gateway: Gateway, listener: GatewayListener, kind: str, route: Attachable, labels: Labels
) -> bool:
    """Whether `route` (of `kind`) attaches to `listener` of `gateway`: a parentRef selects
    it, the listener allows it, and their hostnames intersect."""
    return (
        any(p.selects(gateway, listener) for p in route.parent_refs)
        and allows(gateway, listener, kind, route.namespace, labels)
        and bool(effective_hostnames(listener, route.hostnames))
    )


def parent_problem(
    gateway: Gateway, parent: ParentRef, kind: str, route: Attachable, labels: Labels
) -> tuple[str, str] | None:
    """Why `route` attaches to no listener through `parent`, as Gateway API's (reason,
    message); None when it attaches to at least one."""
    selected = [x for x in gateway.listeners if parent.selects(gateway, x)]
    if not selected:
        return "NoMatchingParent", "no listener of the Gateway matches sectionName and port"
    allowing = [x for x in selected if allows(gateway, x, kind, route.namespace, labels)]
    if not allowing:
        names = ", ".join(x.name for x in selected)
        return "NotAllowedByListeners", f"allowedRoutes of listener {names} exclude it"
    if not any(effective_hostnames(x, route.hostnames) for x in allowing):
        names = ", ".join(f"{x.name} ({x.hostname or '*'})" for x in allowing)
        return "NoMatchingListenerHostname", f"no hostname intersects listener {names}"
    return None


def backend_problem(
    state: FleetState, kind: str, namespace: str, ref: BackendRef
) -> tuple[str, str] | None:
    """Why a backendRef of a `kind` route in `namespace` cannot be followed, as Gateway API's
    ResolvedRefs (reason, message); None when its kind is one we send to and it may be
    referred to. Whether the service exists is the reference checks' business."""
    if (ref.group, ref.kind) not in SERVICE_KINDS:
        group = f"{ref.group}/" if ref.group else ""
        return "InvalidKind", f"backendRef kind {group}{ref.kind} is not supported"
    source = GrantFrom(GATEWAY_GROUP, kind, namespace)
    if not state.permits(source, ref.group, ref.kind, ref.namespace, ref.name):
        message = f"no ReferenceGrant in namespace {ref.namespace} lets {kind}s of {namespace} "
        message += f"refer to {ref.kind} {ref.name}"
        return "RefNotPermitted", message
    return None


class CertificateProblem(StrEnum):
    """Why a listener cannot use a certificateRef: Gateway API's ResolvedRefs reasons."""

    NOT_PERMITTED = "RefNotPermitted"
    NOT_FOUND = "InvalidCertificateRef"


def certificate_problem(
    state: FleetState, gateway: Gateway, ref: SecretRef, secrets: Container[tuple[str, str]]
) -> CertificateProblem | None:
    """Why a listener of `gateway` cannot use the Secret `ref` (`secrets`: the (namespace, name)
    of those that exist); None when it can. The grant comes first: whether a Secret exists in a
    namespace that grants the Gateway nothing is not for its status to tell."""
    source = GrantFrom(GATEWAY_GROUP, "Gateway", gateway.namespace)
    if not state.permits(source, "", "Secret", ref.namespace, ref.name):
        return CertificateProblem.NOT_PERMITTED
    if (ref.namespace, ref.name) not in secrets:
        return CertificateProblem.NOT_FOUND
    return None
