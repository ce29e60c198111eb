"""Gateway API documents (Gateway, HTTPRoute, GRPCRoute) and the TLS Secrets listeners use.

The subset of Gateway API v1 this control plane implements, read strictly: a field it does not
implement is reported as unknown, never ignored, because a silently ignored match or filter
would send traffic where nobody meant it to go. docs/fleet.md documents each field.

Like every parser here it does no I/O and knows nothing of Envoy.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import replace

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
from xdsfleet.model.fleet import (
    BackendRef,
    Gateway,
    GatewayListener,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteMatch,
    GRPCRouteRule,
    HeaderModifier,
    HTTPRoute,
    ParentRef,
    PathMatch,
    PathMatchType,
    PathModifier,
    PathModifierType,
    RequestMirror,
    RequestRedirect,
    RouteFilters,
    RouteMatch,
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
LISTENER_PROTOCOLS = ("HTTP", "HTTPS")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
TLS_SECRET_TYPE = "kubernetes.io/tls"
# Gateway API's limits.
MAX_MATCH_VALUES = 16
MAX_RULES = 16
MAX_HOSTNAMES = 16

_GRPC_SERVICE = re.compile(r"\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*")
_GRPC_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_SCHEMES = ("http", "https")
_REDIRECT_CODES = (301, 302)


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
    hostname = entry.optional_name("hostname", HOSTNAME)
    return GatewayListener(name, port, protocol, hostname, certificate_refs=refs)


def gateway(doc: Map) -> Gateway:
    namespace, name, _ = metadata(doc, DNS_SUBDOMAIN, namespaced=True)
    spec = doc.mapping("spec", ("gatewayClassName", "listeners"), required=True)
    gateway_class = spec.name("gatewayClassName", DNS_SUBDOMAIN)
    entries = spec.mappings(
        "listeners", ("name", "port", "protocol", "hostname", "tls"), required=True, non_empty=True
    )
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
    kind = entry.choice("kind", tuple(BACKEND_GROUPS), "Service")
    group = entry.text("group", "")
    if group != BACKEND_GROUPS[kind]:
        entry.problem("group", f"kind {kind} needs group {BACKEND_GROUPS[kind]!r}; got {group!r}")
    return BackendRef(
        name=entry.name("name", DNS_1035_LABEL),
        namespace=entry.optional_name("namespace", DNS_LABEL) or route_namespace,
        port=entry.port("port"),
        weight=entry.number("weight", 0, MAX_WEIGHT, 1) if weighted else 1,
        kind=kind,
    )


def _backend_refs(rule: Map, route_namespace: str) -> tuple[BackendRef, ...]:
    entries = rule.mappings("backendRefs", (*_BACKEND_FIELDS, "weight"))
    backends = tuple(backend_ref(b, route_namespace) for b in entries)
    if backends and not any(b.weight for b in backends):
        rule.problem("backendRefs", "weights sum to zero: every request would be answered 500")
    return backends


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
    # Envoy uses RE2, close enough to Python's syntax to catch what users get wrong.
    try:
        re.compile(value)
    except re.error as error:
        entry.problem(key, f"not a valid regular expression: {error}")


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
    return RequestMirror(backend, entry.number("percent", 0, 100, 100))


def _redirect(entry: Map) -> RequestRedirect:
    scheme = entry.text("scheme")
    if scheme is not None and scheme not in _SCHEMES:
        entry.problem("scheme", f"must be one of {', '.join(_SCHEMES)}; got {scheme!r}")
    code = entry.number("statusCode", 100, 599, 302)
    if code not in _REDIRECT_CODES:
        entry.problem("statusCode", f"must be 301 or 302; got {code}")
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


# Filter type -> (its config field, the fields of that config).
_FILTERS = {
    "RequestHeaderModifier": ("requestHeaderModifier", ("set", "add", "remove")),
    "ResponseHeaderModifier": ("responseHeaderModifier", ("set", "add", "remove")),
    "RequestMirror": ("requestMirror", ("backendRef", "percent")),
    "RequestRedirect": ("requestRedirect", ("scheme", "hostname", "path", "port", "statusCode")),
    "URLRewrite": ("urlRewrite", ("hostname", "path")),
}
_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")


def _filters(rule: Map, namespace: str, allowed: tuple[str, ...]) -> RouteFilters:
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
    if filters.redirect is not None and filters.rewrite is not None:
        rule.problem("filters", "RequestRedirect and URLRewrite cannot both be used in a rule")
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
    parsed = RouteRule(
        matches=matches or (RouteMatch(),),
        backend_refs=_backend_refs(rule, namespace),
        name=_rule_name(rule),
        filters=_filters(rule, namespace, tuple(_FILTERS)),
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
        backend_refs=_backend_refs(rule, namespace),
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
_SECRET_KEYS = (*_TLS_KEYS, "ca.crt")


def _secret_values(doc: Map) -> dict[str, str | None]:
    """The Secret's keys, decoded (None when a value was reported undecodable): `data` is
    base64 as in Kubernetes; `stringData` is plain text."""
    values: dict[str, str | None] = {}
    for field, encoded in (("data", True), ("stringData", False)):
        for key, value in doc.string_map(field).items():
            path = f'{field}["{key}"]'
            if key not in _SECRET_KEYS:
                doc.problem(path, f"unknown key (a TLS Secret holds {', '.join(_SECRET_KEYS)})")
                continue
            if not encoded:
                values[key] = value
                continue
            try:
                values[key] = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
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
