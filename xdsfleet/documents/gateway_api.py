"""Gateway API documents (Gateway, HTTPRoute, GRPCRoute, ReferenceGrant), the TLS Secrets
listeners use and the Namespaces whose labels listeners select routes by.

The subset of Gateway API v1 this control plane implements, read strictly: a field it does not
implement is reported as unknown, never ignored, because a silently ignored match or filter
would send traffic where nobody meant it to go. One exception, because the specification says
so: a backendRef of a kind we cannot send to is kept (the route is served, that backend's share
is answered 500). docs/fleet.md documents each field.

Like every parser here it does no I/O and knows nothing of Envoy.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import re2

from xdsfleet.documents.reading import (
    DNS_1035_LABEL,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    GATEWAY_GROUP,
    HOSTNAME,
    HTTP_TOKEN,
    MAX_PORT,
    MAX_WEIGHT,
    MCS_GROUP,
    Map,
    fixed,
    flag_repeats,
    metadata,
)
from xdsfleet.model.attachment import GATEWAY_CLASS
from xdsfleet.model.fleet import (
    CORS,
    SERVED_PROTOCOLS,
    UNSERVED_PROTOCOLS,
    AllowedRoutes,
    BackendRef,
    Gateway,
    GatewayListener,
    GrantFrom,
    GrantTo,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteMatch,
    GRPCRouteRule,
    HeaderModifier,
    HTTPRoute,
    LabelSelector,
    Namespace,
    ParentRef,
    PathMatch,
    PathMatchType,
    PathModifier,
    PathModifierType,
    ReferenceGrant,
    RequestMirror,
    RequestRedirect,
    RouteFilters,
    RouteGroupKind,
    RouteMatch,
    RouteNamespaces,
    RouteRetry,
    RouteRule,
    RouteTimeouts,
    SecretRef,
    TLSSecret,
    URLRewrite,
    ValueMatch,
    ValueMatchType,
)

# The group a backendRef must name for each kind it may point at.
BACKEND_GROUPS = {"Service": "", "ServiceImport": MCS_GROUP}
# The route kinds an HTTP or HTTPS listener accepts (allowedRoutes.kinds).
ROUTE_KINDS = (
    RouteGroupKind(GATEWAY_GROUP, "HTTPRoute"),
    RouteGroupKind(GATEWAY_GROUP, "GRPCRoute"),
)
LISTENER_PROTOCOLS = (*SERVED_PROTOCOLS, *UNSERVED_PROTOCOLS)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
TLS_SECRET_TYPE = "kubernetes.io/tls"
# Gateway API's limits.
MAX_MATCH_VALUES = 16
MAX_RULES = 16
MAX_HOSTNAMES = 16

_GRPC_SERVICE = re.compile(r"\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*")
_GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_SCHEMES = ("http", "https")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_KIND_NAME = re.compile(r"[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?")


# --- Gateway ---------------------------------------------------------------------------------


def _secret_ref(entry: Map, namespace: str) -> SecretRef:
    fixed(entry, "group", "")
    fixed(entry, "kind", "Secret")
    return SecretRef(
        namespace=entry.optional_name("namespace", DNS_LABEL) or namespace,
        name=entry.name("name", DNS_SUBDOMAIN),
    )


def _listener(entry: Map, namespace: str) -> GatewayListener:
    name = entry.name("name", DNS_SUBDOMAIN)
    port = entry.port("port")
    protocol = entry.required_text("protocol")
    if protocol and protocol not in LISTENER_PROTOCOLS:
        entry.problem(
            "protocol", f"must be one of {', '.join(LISTENER_PROTOCOLS)}; got {protocol!r}"
        )
    refs: tuple[SecretRef, ...] = ()
    hostname = entry.optional_name("hostname", HOSTNAME)
    if protocol in UNSERVED_PROTOCOLS:
        # Not served (status: UnsupportedProtocol): its TLS mode and route kinds (TLSRoute,
        # TCPRoute...) are not ours to judge; it must not make the Gateway invalid.
        return GatewayListener(name, port, protocol, hostname)
    if entry.has("tls"):
        tls = entry.mapping("tls", ("mode", "certificateRefs"))
        fixed(tls, "mode", "Terminate")
        fields = ("group", "kind", "name", "namespace")
        entries = tls.mappings("certificateRefs", fields, required=True, non_empty=True)
        refs = tuple(_secret_ref(ref, namespace) for ref in entries)
        if protocol == "HTTP":
            entry.problem("tls", "an HTTP listener has no TLS (use protocol HTTPS)")
    elif protocol == "HTTPS":
        entry.problem("tls", "missing required field (HTTPS needs tls.certificateRefs)")
    allowed = AllowedRoutes()
    if entry.has("allowedRoutes"):
        allowed = _allowed_routes(entry.mapping("allowedRoutes", ("namespaces", "kinds")))
    return GatewayListener(
        name, port, protocol, hostname, certificate_refs=refs, allowed_routes=allowed
    )


def label_selector(entry: Map) -> LabelSelector:
    labels = tuple(sorted(entry.string_map("matchLabels").items()))
    expressions = []
    for item in entry.mappings("matchExpressions", ("key", "operator", "values")):
        key = item.required_text("key")
        operator = item.choice("operator", _SELECTOR_OPERATORS, "In")
        values = tuple(item.strings("values"))
        if operator in ("In", "NotIn") and not values:
            item.problem("values", f"operator {operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            item.problem("values", f"operator {operator} takes no values")
        expressions.append((key, operator, values))
    return LabelSelector(labels, tuple(expressions))


def _allowed_routes(entry: Map) -> AllowedRoutes:
    namespaces = RouteNamespaces.SAME
    selector = None
    if entry.has("namespaces"):
        where = entry.mapping("namespaces", ("from", "selector"))
        choices = [n.value for n in RouteNamespaces]
        namespaces = RouteNamespaces(where.choice("from", choices, RouteNamespaces.SAME))
        if where.has("selector"):
            selector = label_selector(
                where.mapping("selector", ("matchLabels", "matchExpressions"))
            )
        if namespaces is RouteNamespaces.SELECTOR and selector is None:
            where.problem("selector", "missing required field (from: Selector needs one)")
        elif namespaces is not RouteNamespaces.SELECTOR and selector is not None:
            where.problem("selector", f"only used with from: Selector; got from: {namespaces}")
    kinds = []
    for item in entry.mappings("kinds", ("group", "kind")):
        kind = RouteGroupKind(item.text("group", GATEWAY_GROUP), item.required_text("kind"))
        if kind not in ROUTE_KINDS:
            # Gateway API: such a listener is not accepted (InvalidRouteKinds); saying so here
            # is the same refusal, earlier.
            supported = ", ".join(k.kind for k in ROUTE_KINDS)
            item.problem("kind", f"HTTP and HTTPS listeners take {supported}; got {kind.kind!r}")
        kinds.append(kind)
    return AllowedRoutes(namespaces, selector, tuple(kinds))


def foreign_gateway(doc: Map) -> tuple[str, str] | None:
    """(namespace, name) when the Gateway's class is not ours. Asked before `gateway`: another
    controller's Gateway is left alone before its spec is checked, so that what we do not
    support there never refuses anything of ours."""
    spec = doc.value("spec")
    class_name = spec.get("gatewayClassName") if isinstance(spec, dict) else None
    if not isinstance(class_name, str) or class_name == GATEWAY_CLASS:
        return None
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    return namespace, name


def gateway(doc: Map) -> Gateway:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    spec = doc.mapping("spec", ("gatewayClassName", "listeners"), required=True)
    gateway_class = spec.name("gatewayClassName", DNS_SUBDOMAIN)
    fields = ("name", "port", "protocol", "hostname", "tls", "allowedRoutes")
    entries = spec.mappings("listeners", fields, required=True, non_empty=True)
    listeners = tuple(_listener(entry, namespace) for entry in entries)
    flag_repeats(spec, "listeners", "name", [x.name for x in listeners], "listener name")
    bindings = [f"{x.port} {x.hostname or '*'}" for x in listeners]
    flag_repeats(spec, "listeners", "port", bindings, "listener port and hostname")
    return Gateway(namespace, name, gateway_class, listeners)


# --- References ------------------------------------------------------------------------------


def _parent_ref(entry: Map, route_namespace: str) -> ParentRef:
    fixed(entry, "group", GATEWAY_GROUP)
    fixed(entry, "kind", "Gateway")
    return ParentRef(
        namespace=entry.optional_name("namespace", DNS_LABEL) or route_namespace,
        name=entry.name("name", DNS_SUBDOMAIN),
        section_name=entry.optional_name("sectionName", DNS_SUBDOMAIN),
        port=entry.number("port", 1, MAX_PORT),
    )


_BACKEND_FIELDS = ("group", "kind", "name", "namespace", "port")


def backend_ref(entry: Map, route_namespace: str, *, weighted: bool = True) -> BackendRef:
    """A backendRef. A group or kind this control plane cannot send to is not a parse error:
    Gateway API keeps the route and answers that backend's share with 500 (`InvalidKind`)."""
    kind = entry.text("kind", "Service")
    group = entry.text("group", "")
    if _KIND_NAME.fullmatch(kind) is None:
        entry.problem("kind", f"{kind!r} is not a kind name")
    if group and not DNS_SUBDOMAIN.accepts(group):
        entry.problem("group", f"{group!r} is not {DNS_SUBDOMAIN.description}")
    known = kind in BACKEND_GROUPS and group == BACKEND_GROUPS[kind]
    return BackendRef(
        name=entry.name("name", DNS_1035_LABEL if known else DNS_SUBDOMAIN),
        namespace=entry.optional_name("namespace", DNS_LABEL) or route_namespace,
        port=entry.port("port") if known else entry.number("port", 1, MAX_PORT, 0),
        weight=entry.number("weight", 0, MAX_WEIGHT, 1) if weighted else 1,
        kind=kind,
        group=group,
    )


# Filters a backendRef may carry: header edits apply to the requests sent to it alone; the
# others only on a rule's sole backendRef, where they act as the rule's own (Envoy cannot
# rewrite a path or redirect per weighted cluster).
_BACKEND_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")
_SOLE_BACKEND_FILTERS = ("URLRewrite", "RequestRedirect")


def _routed_backend(
    entry: Map, route_namespace: str, allowed: tuple[str, ...]
) -> tuple[BackendRef, RouteFilters]:
    """A rule's backendRef with its header filters, and its other filters apart."""
    backend = backend_ref(entry, route_namespace)
    if not entry.has("filters"):
        return backend, RouteFilters()
    filters = _filters(entry, route_namespace, allowed)
    edited = replace(
        backend,
        request_headers=filters.request_headers,
        response_headers=filters.response_headers,
    )
    return edited, replace(filters, request_headers=None, response_headers=None)


def _backend_refs(
    rule: Map, route_namespace: str, allowed: tuple[str, ...] = _BACKEND_FILTERS
) -> tuple[tuple[BackendRef, ...], RouteFilters]:
    """The rule's backendRefs, and the filters of its sole backendRef that act on the rule."""
    entries = rule.mappings("backendRefs", (*_BACKEND_FIELDS, "weight", "filters"))
    parsed = [_routed_backend(b, route_namespace, allowed) for b in entries]
    backends = tuple(backend for backend, _ in parsed)
    if backends and not any(b.weight for b in backends):
        rule.problem("backendRefs", "weights sum to zero: every request would be answered 500")
    hoisted = [(i, f) for i, (_, f) in enumerate(parsed) if f != RouteFilters()]
    if hoisted and len(backends) > 1:
        path = f"backendRefs[{hoisted[0][0]}].filters"
        message = f"{' and '.join(_SOLE_BACKEND_FILTERS)} on a backendRef need it to be the "
        rule.problem(path, message + "rule's only one (Envoy cannot apply them per backend)")
    return backends, hoisted[0][1] if hoisted else RouteFilters()


def _parents_and_hostnames(spec: Map, namespace: str) -> tuple[tuple[ParentRef, ...], list[str]]:
    fields = ("group", "kind", "name", "namespace", "sectionName", "port")
    parents = tuple(_parent_ref(p, namespace) for p in spec.mappings("parentRefs", fields))
    hostnames = spec.strings("hostnames")
    if len(hostnames) > MAX_HOSTNAMES:
        spec.problem("hostnames", f"at most {MAX_HOSTNAMES} hostnames; got {len(hostnames)}")
    for i, hostname in enumerate(hostnames):
        if not HOSTNAME.accepts(hostname):
            spec.problem(f"hostnames[{i}]", f"{hostname!r} is not {HOSTNAME.description}")
    return parents, hostnames


# --- Matches ---------------------------------------------------------------------------------


def _check_regex(entry: Map, key: str, value: str) -> None:
    # Envoy matches with RE2: compile with RE2 itself, so that what passes here Envoy accepts
    # (Python's `re` takes lookarounds and backreferences, which RE2 refuses).
    try:
        re2.compile(value)
    except re2.error as error:
        entry.problem(key, f"not a valid RE2 regular expression: {_re2_message(error)}")


def _re2_message(error: Exception) -> str:
    text = str(error.args[0] if error.args else error)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text


def _value_match(entry: Map, *, header: bool) -> ValueMatch:
    types = [t.value for t in ValueMatchType]
    match_type = ValueMatchType(entry.choice("type", types, ValueMatchType.EXACT))
    name = entry.required_text("name")
    if name and HTTP_TOKEN.fullmatch(name) is None:
        entry.problem("name", f"{name!r} is not a valid {'header' if header else 'parameter'} name")
    value = entry.required_string("value")
    if match_type is ValueMatchType.REGULAR_EXPRESSION:
        _check_regex(entry, "value", value)
    # Header names are case-insensitive; query parameter names are not.
    return ValueMatch(name.lower() if header else name, value, match_type)


def _value_matches(entry: Map, key: str, *, header: bool) -> tuple[ValueMatch, ...]:
    entries = entry.mappings(key, ("type", "name", "value"))
    if len(entries) > MAX_MATCH_VALUES:
        entry.problem(key, f"at most {MAX_MATCH_VALUES} entries; got {len(entries)}")
    matches = tuple(_value_match(e, header=header) for e in entries)
    names = [m.name.lower() if header else m.name for m in matches]
    flag_repeats(entry, key, "name", names, "name")
    return matches


def _path_match(entry: Map) -> PathMatch:
    if not entry.has("path"):
        return PathMatch()
    path = entry.mapping("path", ("type", "value"))
    types = [t.value for t in PathMatchType]
    match_type = PathMatchType(path.choice("type", types, PathMatchType.PATH_PREFIX))
    value = path.text("value", "/")
    if match_type is PathMatchType.REGULAR_EXPRESSION:
        _check_regex(path, "value", value)
    elif not value.startswith("/"):
        path.problem("value", "must start with '/'")
    return PathMatch(match_type, value)


def _route_match(entry: Map) -> RouteMatch:
    method = entry.text("method")
    if method is not None and method not in METHODS:
        entry.problem("method", f"must be one of {', '.join(METHODS)}; got {method!r}")
    return RouteMatch(
        path=_path_match(entry),
        headers=_value_matches(entry, "headers", header=True),
        query_params=_value_matches(entry, "queryParams", header=False),
        method=method,
    )


# --- Filters ---------------------------------------------------------------------------------


def _header_pairs(entry: Map, key: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in entry.mappings(key, ("name", "value")):
        name = item.required_text("name")
        if name and HTTP_TOKEN.fullmatch(name) is None:
            item.problem("name", f"{name!r} is not a valid header name")
        pairs.append((name, item.text("value", "")))
    flag_repeats(entry, key, "name", [n.lower() for n, _ in pairs], "header")
    return tuple(pairs)


def _header_modifier(entry: Map) -> HeaderModifier:
    modifier = HeaderModifier(
        set=_header_pairs(entry, "set"),
        add=_header_pairs(entry, "add"),
        remove=tuple(entry.strings("remove")),
    )
    for i, name in enumerate(modifier.remove):
        if HTTP_TOKEN.fullmatch(name) is None:
            entry.problem(f"remove[{i}]", f"{name!r} is not a valid header name")
    if not (modifier.set or modifier.add or modifier.remove):
        entry.report("must set, add or remove at least one header")
    return modifier


def _path_modifier(entry: Map) -> PathModifier | None:
    if not entry.has("path"):
        return None
    path = entry.mapping("path", ("type", "replaceFullPath", "replacePrefixMatch"))
    kinds = [t.value for t in PathModifierType]
    kind = PathModifierType(path.choice("type", kinds, PathModifierType.REPLACE_FULL_PATH))
    key = "replaceFullPath" if kind is PathModifierType.REPLACE_FULL_PATH else "replacePrefixMatch"
    value = path.required_text(key)
    if value and not value.startswith("/"):
        path.problem(key, "must start with '/'")
    return PathModifier(kind, value)


def _mirror(entry: Map, namespace: str) -> RequestMirror:
    backend = backend_ref(
        entry.mapping("backendRef", _BACKEND_FIELDS, required=True), namespace, weighted=False
    )
    if entry.has("percent") and entry.has("fraction"):
        entry.problem("fraction", "give percent or fraction, not both")
    if entry.has("fraction"):
        fraction = entry.mapping("fraction", ("numerator", "denominator"), required=True)
        numerator = fraction.number("numerator", 0, MAX_WEIGHT, 0)
        denominator = fraction.number("denominator", 1, MAX_WEIGHT, 100)
        if numerator > denominator:
            fraction.problem("numerator", "must not be greater than the denominator")
        return RequestMirror(backend, numerator, denominator)
    return RequestMirror(backend, entry.number("percent", 0, 100, 100))


def _redirect(entry: Map) -> RequestRedirect:
    scheme = entry.text("scheme")
    if scheme is not None and scheme not in _SCHEMES:
        entry.problem("scheme", f"must be one of {', '.join(_SCHEMES)}; got {scheme!r}")
    code = entry.number("statusCode", 100, 599, 302)
    if code not in _REDIRECT_CODES:
        codes = ", ".join(map(str, _REDIRECT_CODES))
        entry.problem("statusCode", f"must be one of {codes}; got {code}")
    return RequestRedirect(
        scheme=scheme,
        hostname=entry.optional_name("hostname", HOSTNAME),
        path=_path_modifier(entry),
        port=entry.number("port", 1, MAX_PORT),
        status_code=code,
    )


def _rewrite(entry: Map) -> URLRewrite:
    rewrite = URLRewrite(entry.optional_name("hostname", HOSTNAME), _path_modifier(entry))
    if rewrite.hostname is None and rewrite.path is None:
        entry.report("must rewrite the hostname, the path or both")
    return rewrite


_CORS_FIELDS = (
    "allowOrigins",
    "allowMethods",
    "allowHeaders",
    "exposeHeaders",
    "maxAge",
    "allowCredentials",
)


def _cors(entry: Map) -> CORS:
    origins = tuple(entry.strings("allowOrigins"))
    for i, origin in enumerate(origins):
        if origin != "*" and "://" not in origin:
            entry.problem(f"allowOrigins[{i}]", f"{origin!r} is not '*' or SCHEME://HOST[:PORT]")
    methods = tuple(entry.strings("allowMethods"))
    for i, method in enumerate(methods):
        if method != "*" and method not in METHODS:
            entry.problem(f"allowMethods[{i}]", f"must be '*' or one of {', '.join(METHODS)}")
    cors = CORS(
        allow_origins=origins,
        allow_methods=methods,
        allow_headers=tuple(entry.strings("allowHeaders")),
        expose_headers=tuple(entry.strings("exposeHeaders")),
        max_age_seconds=entry.number("maxAge", 1, 86400 * 365),
        allow_credentials=entry.flag("allowCredentials", False),
    )
    if not cors.allow_origins:
        entry.problem("allowOrigins", "missing required field (no origin would be allowed)")
    return cors


# Filter type -> (its config field, the fields of that config).
_FILTERS = {
    "RequestHeaderModifier": ("requestHeaderModifier", ("set", "add", "remove")),
    "ResponseHeaderModifier": ("responseHeaderModifier", ("set", "add", "remove")),
    "RequestMirror": ("requestMirror", ("backendRef", "percent", "fraction")),
    "RequestRedirect": ("requestRedirect", ("scheme", "hostname", "path", "port", "statusCode")),
    "URLRewrite": ("urlRewrite", ("hostname", "path")),
    "CORS": ("cors", _CORS_FIELDS),
}
_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")


def _filters(rule: Map, namespace: str, allowed: tuple[str, ...]) -> RouteFilters:
    """A rule's (or a backendRef's) `filters`. A type outside `allowed` is refused whole: an
    unsupported filter must not be skipped, since requests would then go out unfiltered."""
    fields = ("type", *(_FILTERS[t][0] for t in allowed))
    filters = RouteFilters()
    seen: set[str] = set()
    for entry in rule.mappings("filters", fields):
        kind = entry.required_text("type")
        if kind not in allowed:
            if kind:
                entry.problem("type", f"must be one of {', '.join(allowed)}; got {kind!r}")
            continue
        if kind in seen and kind != "RequestMirror":
            entry.problem("type", f"{kind} given twice (at most once per rule)")
        seen.add(kind)
        key, config_fields = _FILTERS[kind]
        for other in fields[1:]:
            if other != key and entry.has(other):
                entry.problem(other, f"does not go with type {kind}")
        config = entry.mapping(key, config_fields, required=True)
        match kind:
            case "RequestHeaderModifier":
                filters = replace(filters, request_headers=_header_modifier(config))
            case "ResponseHeaderModifier":
                filters = replace(filters, response_headers=_header_modifier(config))
            case "RequestMirror":
                filters = replace(filters, mirrors=(*filters.mirrors, _mirror(config, namespace)))
            case "RequestRedirect":
                filters = replace(filters, redirect=_redirect(config))
            case "URLRewrite":
                filters = replace(filters, rewrite=_rewrite(config))
            case "CORS":
                filters = replace(filters, cors=_cors(config))
    return filters


# --- HTTPRoute -------------------------------------------------------------------------------


def _timeouts(rule: Map) -> RouteTimeouts | None:
    if not rule.has("timeouts"):
        return None
    entry = rule.mapping("timeouts", ("request", "backendRequest"))
    timeouts = RouteTimeouts(entry.duration("request"), entry.duration("backendRequest"))
    request, backend = timeouts.request_ms, timeouts.backend_request_ms
    if request and backend and backend > request:
        entry.problem("backendRequest", "must not be longer than request")
    return timeouts


def _retry(rule: Map) -> RouteRetry | None:
    if not rule.has("retry"):
        return None
    entry = rule.mapping("retry", ("codes", "attempts", "backoff"))
    return RouteRetry(
        codes=tuple(entry.numbers("codes", 400, 599)),
        attempts=entry.number("attempts", 0, 10),
        backoff_ms=entry.duration("backoff"),
    )


def _check_rewrites(rule: Map, route_rule: RouteRule) -> None:
    """ReplacePrefixMatch replaces the matched prefix, so every match must be a prefix."""
    for modifier in (route_rule.filters.rewrite, route_rule.filters.redirect):
        path = modifier.path if modifier is not None else None
        if path is None or path.type is not PathModifierType.REPLACE_PREFIX_MATCH:
            continue
        if any(m.path.type is not PathMatchType.PATH_PREFIX for m in route_rule.matches):
            rule.problem("filters", "ReplacePrefixMatch needs every match to be a PathPrefix")
    if route_rule.filters.redirect is not None and route_rule.backend_refs:
        rule.problem("backendRefs", "a rule with a RequestRedirect sends requests nowhere else")


def _rule_name(rule: Map) -> str | None:
    return rule.optional_name("name", DNS_SUBDOMAIN)


def _route_rule(rule: Map, namespace: str) -> RouteRule:
    fields = ("path", "headers", "queryParams", "method")
    # Gateway API: a rule without matches matches every path (PathPrefix "/").
    matches = tuple(_route_match(m) for m in rule.mappings("matches", fields))
    backends, hoisted = _backend_refs(rule, namespace, _BACKEND_FILTERS + _SOLE_BACKEND_FILTERS)
    filters = _filters(rule, namespace, tuple(_FILTERS))
    if hoisted.rewrite is not None:
        if filters.rewrite is not None:
            rule.problem("backendRefs[0].filters", "the rule has its own URLRewrite too")
        filters = replace(filters, rewrite=hoisted.rewrite)
    if hoisted.redirect is not None:
        if filters.redirect is not None:
            rule.problem("backendRefs[0].filters", "the rule has its own RequestRedirect too")
        filters = replace(filters, redirect=hoisted.redirect)
        backends = ()  # the redirect answers: nothing is sent to the backend
    if filters.redirect is not None and filters.rewrite is not None:
        rule.problem("filters", "RequestRedirect and URLRewrite cannot both be used in a rule")
    parsed = RouteRule(
        matches=matches or (RouteMatch(),),
        backend_refs=backends,
        name=_rule_name(rule),
        filters=filters,
        timeouts=_timeouts(rule),
        retry=_retry(rule),
    )
    _check_rewrites(rule, parsed)
    return parsed


def _rules(spec: Map, fields: tuple[str, ...]) -> list[Map]:
    rules = spec.mappings("rules", fields)
    if len(rules) > MAX_RULES:
        spec.problem("rules", f"at most {MAX_RULES} rules; got {len(rules)}")
    return rules


def http_route(doc: Map) -> HTTPRoute:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    spec = doc.mapping("spec", ("parentRefs", "hostnames", "rules"), required=True)
    parents, hostnames = _parents_and_hostnames(spec, namespace)
    fields = ("name", "matches", "filters", "backendRefs", "timeouts", "retry")
    rules = tuple(_route_rule(r, namespace) for r in _rules(spec, fields))
    flag_repeats(spec, "rules", "name", [r.name for r in rules], "rule name")
    return HTTPRoute(namespace, name, parents, tuple(hostnames), rules)


# --- GRPCRoute -------------------------------------------------------------------------------


def _grpc_method(entry: Map) -> GRPCMethodMatch:
    types = [t.value for t in ValueMatchType]
    match_type = ValueMatchType(entry.choice("type", types, ValueMatchType.EXACT))
    service, method = entry.text("service"), entry.text("method")
    if service is None and method is None:
        entry.report("needs a service, a method or both")
    exact = match_type is ValueMatchType.EXACT
    for key, value, syntax in (
        ("service", service, _GRPC_SERVICE),
        ("method", method, _GRPC_METHOD),
    ):
        if value is None:
            continue
        if not exact:
            _check_regex(entry, key, value)
        elif syntax.fullmatch(value) is None:
            entry.problem(key, f"{value!r} is not a gRPC {key} name")
    return GRPCMethodMatch(service, method, match_type)


def _grpc_match(entry: Map) -> GRPCRouteMatch:
    method = None
    if entry.has("method"):
        method = _grpc_method(entry.mapping("method", ("type", "service", "method")))
    return GRPCRouteMatch(method, _value_matches(entry, "headers", header=True))


def _grpc_rule(rule: Map, namespace: str) -> GRPCRouteRule:
    matches = tuple(_grpc_match(m) for m in rule.mappings("matches", ("method", "headers")))
    return GRPCRouteRule(
        matches=matches or (GRPCRouteMatch(),),
        backend_refs=_backend_refs(rule, namespace)[0],
        name=_rule_name(rule),
        filters=_filters(rule, namespace, _GRPC_FILTERS),
    )


def grpc_route(doc: Map) -> GRPCRoute:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    spec = doc.mapping("spec", ("parentRefs", "hostnames", "rules"), required=True)
    parents, hostnames = _parents_and_hostnames(spec, namespace)
    rules = tuple(
        _grpc_rule(r, namespace)
        for r in _rules(spec, ("name", "matches", "filters", "backendRefs"))
    )
    flag_repeats(spec, "rules", "name", [r.name for r in rules], "rule name")
    return GRPCRoute(namespace, name, parents, tuple(hostnames), rules)


# --- Secret ----------------------------------------------------------------------------------

# Secret key -> what its PEM must contain. ca.crt is accepted (cert-manager writes it) and unused.
_TLS_KEYS = {"tls.crt": "CERTIFICATE-----", "tls.key": "PRIVATE KEY-----"}
TLS_SECRET_KEYS = (*_TLS_KEYS, "ca.crt")


def _secret_values(doc: Map) -> dict[str, str | None]:
    """The Secret's keys, decoded (None when a value was reported undecodable): `data` is
    base64 as in Kubernetes; `stringData` is plain text."""
    values: dict[str, str | None] = {}
    for field, encoded in (("data", True), ("stringData", False)):
        for key, value in doc.string_map(field).items():
            path = f'{field}["{key}"]'
            if key not in TLS_SECRET_KEYS:
                doc.problem(path, f"unknown key (a TLS Secret holds {', '.join(TLS_SECRET_KEYS)})")
                continue
            if not encoded:
                values[key] = value
                continue
            try:
                values[key] = base64.b64decode(value, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                # binascii.Error is a ValueError, and so is what b64decode raises for a
                # character outside ASCII (found by tests/test_fuzz_documents.py).
                doc.problem(path, "not base64-encoded PEM text")
                values[key] = None
    return values


def tls_secret(doc: Map) -> TLSSecret:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    secret_type = doc.required_text("type")
    if secret_type and secret_type != TLS_SECRET_TYPE:
        doc.problem("type", f"only {TLS_SECRET_TYPE} Secrets are used; got {secret_type!r}")
    values = _secret_values(doc)
    for key, marker in _TLS_KEYS.items():
        if key not in values:
            doc.problem(f'data["{key}"]', "missing required key")
        elif (value := values[key]) is not None and marker not in value:
            doc.problem(f'data["{key}"]', f"not a PEM block ending in {marker!r}")
    return TLSSecret(namespace, name, values.get("tls.crt") or "", values.get("tls.key") or "")


# --- ReferenceGrant and Namespace --------------------------------------------------------------


def reference_grant(doc: Map) -> ReferenceGrant:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    spec = doc.mapping("spec", ("from", "to"), required=True)
    sources = tuple(
        GrantFrom(
            entry.text("group", ""), entry.required_text("kind"), entry.name("namespace", DNS_LABEL)
        )
        for entry in spec.mappings("from", ("group", "kind", "namespace"), required=True)
    )
    targets = tuple(
        GrantTo(
            entry.text("group", ""),
            entry.required_text("kind"),
            entry.optional_name("name", DNS_SUBDOMAIN),
        )
        for entry in spec.mappings("to", ("group", "kind", "name"), required=True)
    )
    if not sources:
        spec.problem("from", "must name at least one kind and namespace")
    if not targets:
        spec.problem("to", "must name at least one kind")
    return ReferenceGrant(namespace, name, sources, targets)


def namespace_object(doc: Map) -> Namespace:
    """A Namespace, for its labels only (listeners select route namespaces by them)."""
    _, name, labels = metadata(doc, DNS_LABEL, namespaced=False)
    return Namespace(name, tuple(sorted(labels.items())))
