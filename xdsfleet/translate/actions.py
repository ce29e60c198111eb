"""Envoy routes from planned rules: the match, and what happens to a matching request.

Only message building: what a rule does was decided by `rules`. The retry policy always asks
Envoy for another host and another priority on a retry, so a retry after a failure in one member
lands in another (docs/policy.md, "retry").
"""

from __future__ import annotations

import re

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.stateful_session.v3 import stateful_session_pb2
from envoy.extensions.http.stateful_session.cookie.v3 import cookie_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.http.v3 import cookie_pb2 as http_cookie_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from xdsfleet.model.fleet import (
    CORS,
    HeaderModifier,
    PathMatch,
    PathMatchType,
    PathModifier,
    PathModifierType,
    RouteMatch,
    ValueMatch,
    ValueMatchType,
)
from xdsfleet.model.policy import ConsistentHash, Cookie
from xdsfleet.translate.proto import Message, duration, pack_into
from xdsfleet.translate.rules import PER_MILLION, Action, Backend, RetrySettings, RoutePlan

STATEFUL_SESSION = "envoy.filters.http.stateful_session"
CORS_FILTER = "envoy.filters.http.cors"
COOKIE_SESSION_STATE = "envoy.http.stateful_session.cookie"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
# How many times Envoy may re-pick a host that the previous-hosts predicate rejects.
HOST_SELECTION_ATTEMPTS = 5
# Envoy recomputes which priorities to skip after this many attempts.
PRIORITY_UPDATE_FREQUENCY = 2
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
# Gateway API: a redirect that changes the scheme but names no port goes to the scheme's own.
_SCHEME_PORTS = {"http": 80, "https": 443}


def envoy_route(plan: RoutePlan) -> Message:
    action = plan.action
    route = rc.Route(name=plan.name, match=envoy_match(plan.match))
    _edit_headers(route, action.request_headers, "request")
    _edit_headers(route, action.response_headers, "response")
    if action.session_cookie is not None:
        pack_into(route.typed_per_filter_config[STATEFUL_SESSION], _session(action.session_cookie))
    if action.cors is not None:
        pack_into(route.typed_per_filter_config[CORS_FILTER], _cors(action.cors))
    if action.answer is not None:
        route.direct_response.status = action.answer
    elif action.redirect is not None:
        redirect = action.redirect
        built = route.redirect
        if redirect.scheme:
            built.scheme_redirect = redirect.scheme
        if redirect.hostname:
            built.host_redirect = redirect.hostname
        # Gateway API: the given port, else the new scheme's own, else the listener's. Envoy
        # writes a port_redirect even when it is the scheme's default, so that one is left
        # out (a port the client sent in Host then stays: docs/fleet.md, "Gateway API
        # support").
        default = _SCHEME_PORTS.get(redirect.scheme or "")
        port = redirect.port or default or action.listener_port
        if port and port != default:
            built.port_redirect = port
        if redirect.path is not None:
            built.regex_rewrite.CopyFrom(_path_rewrite(redirect.path, plan.match.path))
        built.response_code = _REDIRECT_CODES[redirect.status_code]
    elif all(backend.invalid for backend in action.backends):
        # Gateway API: traffic for a rule whose backends are all invalid gets a 500.
        route.direct_response.status = 500
    else:
        route.route.CopyFrom(_route_action(action, plan.match.path))
    return route


def _route_action(action: Action, path: PathMatch) -> Message:
    built = rc.RouteAction()
    [first, *others] = action.backends
    if not others and first.request_headers is None and first.response_headers is None:
        built.cluster = first.cluster
    else:
        built.weighted_clusters.clusters.extend(_weighted(b) for b in action.backends)
    if any(b.invalid for b in action.backends):
        # The invalid backends' share goes to a cluster that does not exist: answered 500.
        built.cluster_not_found_response_code = rc.RouteAction.INTERNAL_SERVER_ERROR
    if action.timeout_ms is not None:
        built.timeout.CopyFrom(duration(action.timeout_ms))
    if action.retry is not None:
        built.retry_policy.CopyFrom(retry_policy(action.retry))
        if action.retry.hedge and action.retry.per_try_timeout_ms:
            built.hedge_policy.hedge_on_per_try_timeout = True
    if action.hash is not None:
        built.hash_policy.append(_hash_policy(action.hash))
    for cluster, per_million in action.mirrors:
        mirror = built.request_mirror_policies.add(cluster=cluster)
        if per_million < PER_MILLION:
            fraction = mirror.runtime_fraction.default_value
            fraction.numerator = per_million
            fraction.denominator = fraction.MILLION
    rewrite = action.rewrite
    if rewrite is not None:
        if rewrite.hostname:
            built.host_rewrite_literal = rewrite.hostname
        if rewrite.path is not None:
            built.regex_rewrite.CopyFrom(_path_rewrite(rewrite.path, path))
    return built


def _weighted(backend: Backend) -> Message:
    """A weighted cluster, with the header edits of its backendRef's own filters."""
    built = rc.WeightedCluster.ClusterWeight(name=backend.cluster, weight={"value": backend.weight})
    _edit_headers(built, backend.request_headers, "request")
    _edit_headers(built, backend.response_headers, "response")
    return built


def _cors(cors: CORS) -> Message:
    """Envoy's per-route CORS policy; the listener carries the (otherwise idle) CORS filter."""
    policy = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin(origin) for origin in cors.allow_origins],
        allow_methods=", ".join(cors.allow_methods),
        allow_headers=", ".join(cors.allow_headers),
        expose_headers=", ".join(cors.expose_headers),
        # A preflight from an origin not allowed is answered by Envoy without CORS headers,
        # never forwarded: the backend would answer it as an ordinary request (the spec's
        # HTTPRouteCORS case "preflight from a non-matching origin").
        forward_not_matching_preflights={"value": False},
    )
    if cors.max_age_seconds is not None:
        policy.max_age = str(cors.max_age_seconds)
    if cors.allow_credentials:
        policy.allow_credentials.value = True
    return policy


def _origin(origin: str) -> Message:
    """Gateway API origins are exact, `*`, or carry `*` wildcards for host labels."""
    if "*" not in origin:
        return string_pb2.StringMatcher(exact=origin)
    pattern = ".*".join(re.escape(part) for part in origin.split("*"))
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def retry_policy(retry: RetrySettings) -> Message:
    built = rc.RetryPolicy(
        retry_on=",".join(retry.retry_on),
        num_retries={"value": retry.attempts},
        retriable_status_codes=retry.codes,
        host_selection_retry_max_attempts=HOST_SELECTION_ATTEMPTS,
    )
    if retry.per_try_timeout_ms:
        built.per_try_timeout.CopyFrom(duration(retry.per_try_timeout_ms))
    if retry.backoff_base_ms:
        built.retry_back_off.base_interval.CopyFrom(duration(retry.backoff_base_ms))
        if retry.backoff_max_ms:
            built.retry_back_off.max_interval.CopyFrom(duration(retry.backoff_max_ms))
    if retry.other_host:
        predicate = built.retry_host_predicate.add(name=PREVIOUS_HOSTS)
        pack_into(predicate.typed_config, previous_hosts_pb2.PreviousHostsPredicate())
    if retry.other_priority:
        built.retry_priority.name = PREVIOUS_PRIORITIES
        config = previous_priorities_config_pb2.PreviousPrioritiesConfig(
            update_frequency=PRIORITY_UPDATE_FREQUENCY
        )
        pack_into(built.retry_priority.typed_config, config)
    return built


# The retry conditions gRPC's xDS client implements (gRFC A44): gRPC status codes only.
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")


def grpc_retry_policy(retry: RetrySettings | None) -> Message | None:
    """What a proxyless gRPC client can do of `retry`: retry on gRPC statuses (another host:
    its balancer picks again), with the backoff. No per-try timeout, hedging or host and priority
    predicates: gRPC does not implement them (docs/failover.md). None: nothing to retry on."""
    codes = [c for c in retry.retry_on if c in GRPC_RETRY_ON] if retry is not None else []
    if retry is None or not codes or not retry.attempts:
        return None
    built = rc.RetryPolicy(retry_on=",".join(codes), num_retries={"value": retry.attempts})
    if retry.backoff_base_ms:
        built.retry_back_off.base_interval.CopyFrom(duration(retry.backoff_base_ms))
        if retry.backoff_max_ms:
            built.retry_back_off.max_interval.CopyFrom(duration(retry.backoff_max_ms))
    return built


def _hash_policy(hashed: ConsistentHash) -> Message:
    policy = rc.RouteAction.HashPolicy()
    if hashed.header is not None:
        policy.header.header_name = hashed.header
    elif hashed.cookie is not None:
        cookie = policy.cookie
        cookie.name = hashed.cookie.name
        # With a ttl Envoy sets the cookie when the request has none, so the session sticks.
        if hashed.cookie.ttl_ms is not None:
            cookie.ttl.CopyFrom(duration(hashed.cookie.ttl_ms))
        if hashed.cookie.path:
            cookie.path = hashed.cookie.path
    else:
        policy.connection_properties.source_ip = True
    return policy


def _session(cookie: Cookie) -> Message:
    """Envoy's stateful session: the cookie names the endpoint that served the session."""
    http_cookie = http_cookie_pb2.Cookie(name=cookie.name, path=cookie.path or "/")
    if cookie.ttl_ms is not None:
        http_cookie.ttl.CopyFrom(duration(cookie.ttl_ms))
    state = cookie_pb2.CookieBasedSessionState(cookie=http_cookie)
    session = stateful_session_pb2.StatefulSession()
    session.session_state.name = COOKIE_SESSION_STATE
    pack_into(session.session_state.typed_config, state)
    return stateful_session_pb2.StatefulSessionPerRoute(stateful_session=session)


def _edit_headers(route: Message, modifier: HeaderModifier | None, direction: str) -> None:
    if modifier is None:
        return
    add = getattr(route, f"{direction}_headers_to_add")
    for pairs, action in (
        (modifier.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        (modifier.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    ):
        for name, value in pairs:
            add.add(header=base_pb2.HeaderValue(key=name, value=value), append_action=action)
    getattr(route, f"{direction}_headers_to_remove").extend(modifier.remove)


def _path_rewrite(modifier: PathModifier, path: PathMatch) -> Message:
    """Gateway API path modifiers as an RE2 rewrite of the path (the query is kept)."""
    if modifier.type is PathModifierType.REPLACE_FULL_PATH:
        return _rewrite("^.*$", modifier.value)
    prefix = path.normalized().value
    replacement = modifier.value.rstrip("/")
    if prefix == "/":
        return _rewrite("^/", f"{replacement}/")
    # The prefix matches whole path elements; what follows it (a "/..." or nothing) is kept.
    return _rewrite(f"^{re.escape(prefix)}(/|$)", f"{replacement}\\1" if replacement else "/")


def _rewrite(pattern: str, substitution: str) -> Message:
    return regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex=pattern), substitution=substitution
    )


# --- Matches ---------------------------------------------------------------------------------


def envoy_match(match: RouteMatch) -> Message:
    built = _path(match.path)
    for header in match.headers:
        built.headers.add(name=header.name, string_match=_string_match(header))
    if match.method is not None:
        built.headers.add(name=":method", string_match=string_pb2.StringMatcher(exact=match.method))
    for param in match.query_params:
        built.query_parameters.add(name=param.name, string_match=_string_match(param))
    return built


def _path(path: PathMatch) -> Message:
    if path.type is PathMatchType.EXACT:
        return rc.RouteMatch(path=path.value)
    if path.type is PathMatchType.REGULAR_EXPRESSION:
        return rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=path.value))
    prefix = path.normalized().value
    if prefix == "/":
        # Envoy's path_separated_prefix refuses "/" (it may not end with a slash).
        return rc.RouteMatch(prefix="/")
    return rc.RouteMatch(path_separated_prefix=prefix)


def _string_match(match: ValueMatch) -> Message:
    if match.type is ValueMatchType.REGULAR_EXPRESSION:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    return string_pb2.StringMatcher(exact=match.value)
