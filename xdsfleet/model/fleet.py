"""The fleet as the sources see it: members and what each one runs, plus the route documents.

Kubernetes names are kept (Service, EndpointSlice, ServiceExport, Gateway, HTTPRoute) so that a
reader can map each field back to the manifest it came from. Tuples, never lists: the model is
hashable and shared between generations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from xdsfleet.model.identity import IdentityRule
from xdsfleet.model.policy import TrafficPolicy


class EndpointMode(StrEnum):
    """How a member's pods are reached from outside the member."""

    POD = "pod"
    NODE_PORT = "nodePort"


@dataclass(frozen=True, slots=True)
class Member:
    """One Kubernetes cluster of the fleet, with its place in the world."""

    name: str
    region: str
    zone: str
    weight: int = 1
    endpoint_mode: EndpointMode = EndpointMode.POD
    # Where its objects come from, exactly one of: a directory of manifests; a kubeconfig file
    # (and a context in it); a Secret of the fleet cluster holding a kubeconfig (its name, in
    # the server's namespace). Paths are joined to the Fleet file's directory.
    manifests: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    secret: str | None = None
    # Taken out of every service in one push, and brought back on the undrain ramp
    # (docs/policy.md, "Draining a member (a zone upgrade)").
    drain: bool = False


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None
    target_port: int | str | None = None
    # Set on NodePort and LoadBalancer Services: how members in nodePort mode are reached.
    node_port: int | None = None


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]
    # `spec.ipFamilies`: a dual-stack Service's first family is the one served.
    ip_families: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One `endpoints[]` entry of an EndpointSlice (discovery.k8s.io/v1)."""

    addresses: tuple[str, ...]
    # Conditions as Kubernetes defines them: a missing `ready` means ready; a missing `serving`
    # means the same as `ready`; `terminating` defaults to False.
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str | None = None
    node_name: str | None = None
    # The Pod behind it (`targetRef`, "namespace/name"): replicas are counted by pod.
    target: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str  # the `kubernetes.io/service-name` label
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[Endpoint, ...]
    address_type: str = "IPv4"


@dataclass(frozen=True, slots=True)
class Node:
    """A member's node, as far as NodePort endpoints need it."""

    name: str
    addresses: tuple[str, ...]  # InternalIP addresses, in the order Kubernetes lists them
    zone: str | None = None  # the `topology.kubernetes.io/zone` label
    ready: bool = True


@dataclass(frozen=True, slots=True)
class MemberState:
    """What one member currently runs. `stale` marks a member whose source stopped answering:
    its last known objects are kept and still served."""

    member: Member
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    # (namespace, name) of each ServiceExport.
    exports: tuple[tuple[str, str], ...] = ()
    # Only filled for members in nodePort mode.
    nodes: tuple[Node, ...] = ()
    stale: bool = False


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A `certificateRefs` entry: a Secret of type kubernetes.io/tls."""

    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector: `matchLabels` and `matchExpressions` (operator In, NotIn,
    Exists, DoesNotExist), all of which must hold. The empty selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    # (key, operator, values)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels):
            return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            held = {
                "In": present and labels.get(key) in values,
                "NotIn": not present or labels.get(key) not in values,
                "Exists": present,
                "DoesNotExist": not present,
            }[operator]
            if not held:
                return False
        return True


class RouteNamespaces(StrEnum):
    """`allowedRoutes.namespaces.from`: where routes that attach to a listener may live."""

    SAME = "Same"
    ALL = "All"
    SELECTOR = "Selector"


@dataclass(frozen=True, slots=True)
class RouteGroupKind:
    group: str
    kind: str


@dataclass(frozen=True, slots=True)
class AllowedRoutes:
    """A listener's `allowedRoutes`. `kinds` empty means every kind the listener's protocol
    supports (HTTPRoute and GRPCRoute for HTTP and HTTPS)."""

    namespaces: RouteNamespaces = RouteNamespaces.SAME
    selector: LabelSelector | None = None  # with namespaces Selector
    kinds: tuple[RouteGroupKind, ...] = ()


# Gateway listener protocols: those served, and those accepted but not served.
SERVED_PROTOCOLS = ("HTTP", "HTTPS")
UNSERVED_PROTOCOLS = ("TLS", "TCP", "UDP")


@dataclass(frozen=True, slots=True)
class GatewayListener:
    name: str
    port: int
    protocol: str = "HTTP"  # SERVED_PROTOCOLS or UNSERVED_PROTOCOLS
    hostname: str | None = None
    # HTTPS only: the certificates it terminates TLS with (mode Terminate).
    certificate_refs: tuple[SecretRef, ...] = ()
    allowed_routes: AllowedRoutes = field(default_factory=AllowedRoutes)

    @property
    def served(self) -> bool:
        """Whether xdsfleet serves it. A TLS, TCP or UDP listener is kept as written and left
        alone (its status says UnsupportedProtocol), so that one such listener does not make
        the Gateway, or a fleet file, invalid."""
        return self.protocol in SERVED_PROTOCOLS


@dataclass(frozen=True, slots=True)
class Gateway:
    namespace: str
    name: str
    gateway_class: str
    listeners: tuple[GatewayListener, ...]


@dataclass(frozen=True, slots=True)
class ParentRef:
    namespace: str
    name: str
    section_name: str | None = None  # the Gateway listener name, when pinned to one
    port: int | None = None

    def selects(self, gateway: Gateway, listener: GatewayListener) -> bool:
        """Whether a route with this parentRef attaches to `listener` of `gateway`."""
        return (
            (self.namespace, self.name) == (gateway.namespace, gateway.name)
            and self.section_name in (None, listener.name)
            and self.port in (None, listener.port)
        )


class PathMatchType(StrEnum):
    EXACT = "Exact"
    PATH_PREFIX = "PathPrefix"
    REGULAR_EXPRESSION = "RegularExpression"


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathMatchType = PathMatchType.PATH_PREFIX
    value: str = "/"

    def normalized(self) -> PathMatch:
        """Gateway API prefixes match whole path elements: `/foo/` and `/foo` are one match."""
        if self.type is not PathMatchType.PATH_PREFIX:
            return self
        return PathMatch(self.type, self.value.rstrip("/") or "/")


class ValueMatchType(StrEnum):
    EXACT = "Exact"
    REGULAR_EXPRESSION = "RegularExpression"


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header or query parameter match. Header names are compared case-insensitively (the
    parser lowercases them); query parameter names exactly."""

    name: str
    value: str
    type: ValueMatchType = ValueMatchType.EXACT


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """All of its conditions must hold."""

    path: PathMatch = field(default_factory=PathMatch)
    headers: tuple[ValueMatch, ...] = ()
    query_params: tuple[ValueMatch, ...] = ()
    method: str | None = None


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A weighted backend. `kind` is `ServiceImport` (the service across all exporting members)
    or `Service` (documented to mean the same); any other group and kind is kept as written,
    so that translation answers its share with 500 and status says `InvalidKind` (Gateway
    API: an invalid backendRef invalidates that backend, not the route). The header modifiers
    are the backendRef's own `filters`, applied to requests sent to this backend only."""

    name: str
    namespace: str
    port: int
    weight: int = 1
    kind: str = "Service"
    group: str = ""
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None


@dataclass(frozen=True, slots=True)
class HeaderModifier:
    """RequestHeaderModifier / ResponseHeaderModifier. Names as given (Envoy compares them
    case-insensitively)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestMirror:
    """A copy of a fraction of the requests (`numerator`/`denominator`: Gateway API's
    `percent` or `fraction`) to another backend; answers ignored."""

    backend: BackendRef
    numerator: int = 100
    denominator: int = 100


class PathModifierType(StrEnum):
    REPLACE_FULL_PATH = "ReplaceFullPath"
    REPLACE_PREFIX_MATCH = "ReplacePrefixMatch"


@dataclass(frozen=True, slots=True)
class PathModifier:
    type: PathModifierType
    value: str


@dataclass(frozen=True, slots=True)
class RequestRedirect:
    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True)
class CORS:
    """HTTPRoute's CORS filter (experimental in Gateway API): the origins (exact, or with `*`
    wildcards), methods and headers a browser may use across origins."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None
    allow_credentials: bool = False


@dataclass(frozen=True, slots=True)
class RouteFilters:
    """A rule's `filters`, gathered by type (Gateway API allows each type once, mirrors
    excepted)."""

    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    mirrors: tuple[RequestMirror, ...] = ()
    redirect: RequestRedirect | None = None
    rewrite: URLRewrite | None = None
    cors: CORS | None = None


@dataclass(frozen=True, slots=True)
class RouteTimeouts:
    """Gateway API `timeouts`, in milliseconds; 0 disables a timeout."""

    request_ms: int | None = None
    backend_request_ms: int | None = None  # per try


@dataclass(frozen=True, slots=True)
class RouteRetry:
    """Gateway API's HTTPRouteRule `retry`: retry on these status codes (and connection
    errors), `attempts` times, waiting `backoff_ms` between tries."""

    codes: tuple[int, ...] = ()
    attempts: int | None = None
    backoff_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RouteRule:
    matches: tuple[RouteMatch, ...]
    backend_refs: tuple[BackendRef, ...]
    # Gateway API's rule name: what a TrafficPolicy's targetRef sectionName points at.
    name: str | None = None
    filters: RouteFilters = field(default_factory=RouteFilters)
    timeouts: RouteTimeouts | None = None
    retry: RouteRetry | None = None


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    namespace: str
    name: str
    parent_refs: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]


@dataclass(frozen=True, slots=True)
class GRPCMethodMatch:
    """Gateway API's GRPCMethodMatch: `service` and `method` (either may be missing), compared
    exactly or as regular expressions."""

    service: str | None = None
    method: str | None = None
    type: ValueMatchType = ValueMatchType.EXACT


@dataclass(frozen=True, slots=True)
class GRPCRouteMatch:
    method: GRPCMethodMatch | None = None
    headers: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class GRPCRouteRule:
    matches: tuple[GRPCRouteMatch, ...]
    backend_refs: tuple[BackendRef, ...]
    name: str | None = None
    # Header modifiers and mirrors only: gRPC has no redirects or rewrites.
    filters: RouteFilters = field(default_factory=RouteFilters)


@dataclass(frozen=True, slots=True)
class GRPCRoute:
    namespace: str
    name: str
    parent_refs: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[GRPCRouteRule, ...]


@dataclass(frozen=True, slots=True)
class TLSSecret:
    """A Secret of type kubernetes.io/tls: a PEM certificate chain and its private key."""

    namespace: str
    name: str
    certificate: str
    private_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class GrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True, slots=True)
class GrantTo:
    group: str
    kind: str
    name: str | None = None  # None: every object of that kind in the grant's namespace


@dataclass(frozen=True, slots=True)
class ReferenceGrant:
    """Gateway API ReferenceGrant: objects of the `from` kinds in those namespaces may refer
    to the `to` objects of the grant's own namespace."""

    namespace: str
    name: str
    from_: tuple[GrantFrom, ...]
    to: tuple[GrantTo, ...]

    def permits(self, source: GrantFrom, group: str, kind: str, name: str) -> bool:
        return source in self.from_ and any(
            (t.group, t.kind) == (group, kind) and t.name in (None, name) for t in self.to
        )


@dataclass(frozen=True, slots=True)
class Namespace:
    """A namespace's labels: what listeners with `allowedRoutes.namespaces.from: Selector`
    select routes by."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def namespace(self) -> str:
        """Namespaces are cluster-scoped: keyed like other objects, with namespace ""."""
        return ""


@dataclass(frozen=True, slots=True)
class Ramp:
    """A member on its way back from drain: the percentage of its share that one service port
    gives it for now. No source sets it: the app's ramp agent (`pipeline/ramps.py`) raises it over
    the slow-start window and then removes it, so that the state is again the one a server that
    never saw the drain would hold."""

    namespace: str
    service: str
    port: int
    member: str
    percent: int  # 1 to 99


@dataclass(frozen=True, slots=True)
class FleetState:
    """One generation of everything the sources know, and the ramps under way. Members are sorted
    by name; gateways, routes, policies and secrets by (namespace, name); ramps by service port
    and member: equal inputs give equal states."""

    name: str
    members: tuple[MemberState, ...]
    gateways: tuple[Gateway, ...] = ()
    http_routes: tuple[HTTPRoute, ...] = ()
    export_all: bool = False
    # The address family dual-stack Services serve when they have it (the Fleet's
    # spec.ipFamily); None: each Service's first.
    ip_family: str | None = None
    grpc_routes: tuple[GRPCRoute, ...] = ()
    policies: tuple[TrafficPolicy, ...] = ()
    secrets: tuple[TLSSecret, ...] = ()
    ramps: tuple[Ramp, ...] = ()
    reference_grants: tuple[ReferenceGrant, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    # (namespace, name) of the Gateways of another controller's class, sorted: neither served
    # nor reported on, and route parentRefs to them are that controller's business.
    foreign_gateways: tuple[tuple[str, str], ...] = ()

    # Who may claim which node profile (the Fleet's spec.identities); translation ignores it.
    identities: tuple[IdentityRule, ...] = ()

    def permits(self, source: GrantFrom, group: str, kind: str, namespace: str, name: str) -> bool:
        """Whether an object described by `source` may refer to `kind` `namespace/name`:
        always within its own namespace, across namespaces only with a ReferenceGrant there."""
        if namespace == source.namespace:
            return True
        return any(
            g.namespace == namespace and g.permits(source, group, kind, name)
            for g in self.reference_grants
        )
