"""Routes under Gateway API and policy: matches, precedence, retries, timeouts, filters, session
persistence and gRPC methods, as the Envoy routes a gateway gets."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from states import AT_GATEWAY, EAST, FAR, NS, WEST, fleet, policy, route, running, to

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import (
    BackendRef,
    GRPCMethodMatch,
    GRPCRoute,
    GRPCRouteMatch,
    GRPCRouteRule,
    HeaderModifier,
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
    URLRewrite,
    ValueMatch,
    ValueMatchType,
)
from xdsfleet.model.policy import (
    ConsistentHash,
    Cookie,
    PolicyTarget,
    Retry,
    SessionPersistence,
    TargetKind,
)
from xdsfleet.translate import translate
from xdsfleet.translate.actions import PREVIOUS_HOSTS, PREVIOUS_PRIORITIES, STATEFUL_SESSION

MEMBERS = (running(EAST, "10.0.0.1"), running(WEST, "10.1.0.1"))


def envoy_routes(*rules: RouteRule, policies: tuple[Any, ...] = (), **parts: Any) -> list[Any]:
    state = fleet(*MEMBERS, http_routes=(route(*rules),), policies=policies, **parts)
    config = translate(state, AT_GATEWAY)[typeurls.ROUTE]["ns/gw:8080"]
    [host] = config.virtual_hosts
    return list(host.routes)


def only(*rules: RouteRule, **kw: Any) -> Any:
    [found] = envoy_routes(*rules, **kw)
    return found


def rule(*matches: RouteMatch, **fields: Any) -> RouteRule:
    return RouteRule(matches or (RouteMatch(),), fields.pop("backends", (to(),)), **fields)


def test_header_query_and_method_matches_become_envoy_matchers() -> None:
    match = RouteMatch(
        headers=(ValueMatch("x-canary", "true"),),
        query_params=(ValueMatch("lang", "en|fr", ValueMatchType.REGULAR_EXPRESSION),),
        method="POST",
    )
    built = only(rule(match)).match

    headers = {h.name: h.string_match for h in built.headers}
    assert headers["x-canary"].exact == "true"
    assert headers[":method"].exact == "POST"
    [query] = built.query_parameters
    assert (query.name, query.string_match.safe_regex.regex) == ("lang", "en|fr")


def test_a_regular_expression_path_is_a_safe_regex() -> None:
    match = RouteMatch(PathMatch(PathMatchType.REGULAR_EXPRESSION, "/v[0-9]+/.*"))
    assert only(rule(match)).match.safe_regex.regex == "/v[0-9]+/.*"


def test_precedence_is_path_then_method_then_headers_then_query_parameters() -> None:
    header = ValueMatch("x", "1")
    rules = [
        rule(RouteMatch(query_params=(header,)), name="query"),
        rule(RouteMatch(headers=(header, ValueMatch("y", "2"))), name="two-headers"),
        rule(RouteMatch(headers=(header,)), name="one-header"),
        rule(RouteMatch(method="GET"), name="method"),
        rule(RouteMatch(PathMatch(value="/a")), name="longer-path"),
    ]
    names = [r.name for r in envoy_routes(*rules)]
    assert names == [f"HTTPRoute ns/web rules[{i}].matches[0]" for i in (4, 3, 1, 2, 0)]


def test_by_default_a_retry_goes_to_another_host_and_another_priority() -> None:
    retry = only(rule()).route.retry_policy

    assert retry.num_retries.value == 2
    assert (
        retry.retry_on
        == "connect-failure,refused-stream,reset,unavailable,cancelled,retriable-status-codes"
    )
    assert list(retry.retriable_status_codes) == [503]
    assert [p.name for p in retry.retry_host_predicate] == [PREVIOUS_HOSTS]
    assert retry.retry_priority.name == PREVIOUS_PRIORITIES
    assert retry.host_selection_retry_max_attempts == 5


def test_by_default_a_try_without_an_answer_is_hedged_on_another_host() -> None:
    # A hung host accepts and never answers: only a per-try timeout moves the request off it,
    # and hedging keeps a slow but live host's answer in the race (docs/failover.md).
    action = only(rule()).route

    assert action.retry_policy.per_try_timeout.ToMilliseconds() == 250
    assert action.hedge_policy.hedge_on_per_try_timeout


def test_a_policy_can_turn_the_per_try_timeout_or_hedging_off() -> None:
    no_timeout = Retry(per_try_timeout_ms=0)
    action = only(rule(), policies=(policy("p", retry=no_timeout),)).route
    assert not action.retry_policy.HasField("per_try_timeout")
    assert not action.HasField("hedge_policy")

    cancel = Retry(hedge=False)
    action = only(rule(), policies=(policy("p", retry=cancel),)).route
    assert action.retry_policy.per_try_timeout.ToMilliseconds() == 250
    assert not action.HasField("hedge_policy")


def test_a_service_policy_retry_applies_to_routes_to_that_service() -> None:
    given = Retry(attempts=4, per_try_timeout_ms=250, retry_on=("5xx",), other_priority=False)
    retry = only(rule(), policies=(policy("p", retry=given),)).route.retry_policy

    assert (retry.num_retries.value, retry.retry_on) == (4, "5xx")
    assert retry.per_try_timeout.ToMilliseconds() == 250
    assert not retry.HasField("retry_priority")
    assert [p.name for p in retry.retry_host_predicate] == [PREVIOUS_HOSTS]


def test_the_rule_retry_and_backend_timeout_beat_the_service_policy() -> None:
    gateway_api = rule(
        retry=RouteRetry(codes=(502,), attempts=3, backoff_ms=100),
        timeouts=RouteTimeouts(request_ms=5000, backend_request_ms=1000),
    )
    built = only(gateway_api, policies=(policy("p", retry=Retry(attempts=1)),)).route

    assert built.timeout.ToMilliseconds() == 5000
    retry = built.retry_policy
    assert retry.num_retries.value == 3
    assert list(retry.retriable_status_codes) == [502]
    assert retry.per_try_timeout.ToMilliseconds() == 1000
    assert retry.retry_back_off.base_interval.ToMilliseconds() == 100


def test_a_rule_policy_beats_the_rule_itself() -> None:
    target = PolicyTarget(TargetKind.HTTP_ROUTE, "web", "api")
    rule_policy = policy("r", target, retry=Retry(attempts=5))
    built = only(rule(name="api", retry=RouteRetry(attempts=3)), policies=(rule_policy,))
    assert built.route.retry_policy.num_retries.value == 5


def test_zero_attempts_sends_no_retry_policy() -> None:
    built = only(rule(), policies=(policy("p", retry=Retry(attempts=0)),))
    assert not built.route.HasField("retry_policy")


def test_header_edits_mirrors_and_rewrites() -> None:
    filters = RouteFilters(
        request_headers=HeaderModifier(set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",)),
        response_headers=HeaderModifier(remove=("server",)),
        mirrors=(RequestMirror(BackendRef("shadow", NS, 80), numerator=10),),
        rewrite=URLRewrite(
            hostname="internal.example.com",
            path=PathModifier(PathModifierType.REPLACE_PREFIX_MATCH, "/v2"),
        ),
    )
    shadow = running(FAR, "10.2.0.9", service="shadow")
    routes = (route(rule(RouteMatch(PathMatch(value="/v1")), filters=filters)),)
    resources = translate(fleet(*MEMBERS, shadow, http_routes=routes), AT_GATEWAY)
    [built] = resources[typeurls.ROUTE]["ns/gw:8080"].virtual_hosts[0].routes

    added = {(h.header.key, h.append_action) for h in built.request_headers_to_add}
    assert added == {
        ("x-a", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        ("x-b", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    }
    assert list(built.request_headers_to_remove) == ["x-c"]
    assert list(built.response_headers_to_remove) == ["server"]
    [mirror] = built.route.request_mirror_policies
    fraction = mirror.runtime_fraction.default_value
    assert (mirror.cluster, fraction.numerator, fraction.denominator) == (
        "ns/shadow:80",
        100_000,
        fraction.MILLION,
    )
    assert "ns/shadow:80" in resources[typeurls.CLUSTER]
    assert built.route.host_rewrite_literal == "internal.example.com"
    rewrite = built.route.regex_rewrite
    assert (rewrite.pattern.regex, rewrite.substitution) == ("^/v1(/|$)", "/v2\\1")


def test_a_redirect_answers_instead_of_routing() -> None:
    redirect = RequestRedirect(
        scheme="https",
        hostname="new.example.com",
        port=8443,
        path=PathModifier(PathModifierType.REPLACE_FULL_PATH, "/moved"),
        status_code=301,
    )
    built = only(rule(filters=RouteFilters(redirect=redirect), backends=()))

    assert built.WhichOneof("action") == "redirect"
    assert (built.redirect.scheme_redirect, built.redirect.host_redirect) == (
        "https",
        "new.example.com",
    )
    assert built.redirect.port_redirect == 8443
    assert built.redirect.regex_rewrite.substitution == "/moved"
    assert built.redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY


def test_a_consistent_hash_of_the_service_hashes_each_route_to_it() -> None:
    for hashed, check in (
        (ConsistentHash(header="x-user"), lambda h: h.header.header_name == "x-user"),
        (ConsistentHash(source_ip=True), lambda h: h.connection_properties.source_ip),
        (
            ConsistentHash(cookie=Cookie("sid", ttl_ms=3_600_000, path="/")),
            lambda h: (h.cookie.name, h.cookie.ttl.seconds, h.cookie.path) == ("sid", 3600, "/"),
        ),
    ):
        session = SessionPersistence(consistent_hash=hashed)
        [hash_policy] = only(
            rule(), policies=(policy("p", session_persistence=session),)
        ).route.hash_policy
        assert check(hash_policy)


def test_a_stateful_session_cookie_is_set_per_route_and_the_listener_gets_the_filter() -> None:
    session = SessionPersistence(cookie=Cookie("xdsfleet-session", ttl_ms=60_000))
    state = fleet(*MEMBERS, policies=(policy("p", session_persistence=session),))
    resources = translate(state, AT_GATEWAY)

    [built] = resources[typeurls.ROUTE]["ns/gw:8080"].virtual_hosts[0].routes
    assert STATEFUL_SESSION in built.typed_per_filter_config
    assert filters_of(resources[typeurls.LISTENER]["ns/gw:8080"]) == [
        STATEFUL_SESSION,
        "envoy.filters.http.router",
    ]
    assert filters_of(translate(fleet(*MEMBERS), AT_GATEWAY)[typeurls.LISTENER]["ns/gw:8080"]) == [
        "envoy.filters.http.router"
    ]


def filters_of(listener: Any) -> list[str]:
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def grpc_route(*matches: GRPCRouteMatch) -> GRPCRoute:
    rules = (GRPCRouteRule(matches, (BackendRef("web", NS, 80),), name="m"),)
    return GRPCRoute(NS, "cart", (ParentRef(NS, "gw"),), ("cart.example.com",), rules)


def test_a_grpc_method_is_a_path() -> None:
    cases = {
        GRPCMethodMatch("shop.Cart", "Get"): ("path", "/shop.Cart/Get"),
        GRPCMethodMatch("shop.Cart"): ("path_separated_prefix", "/shop.Cart"),
        GRPCMethodMatch(method="Get"): ("safe_regex", "/[^/]+/Get"),
        GRPCMethodMatch("shop\\..*", None, ValueMatchType.REGULAR_EXPRESSION): (
            "safe_regex",
            "/shop\\..*/[^/]+",
        ),
    }
    for method, (kind, value) in cases.items():
        state = fleet(*MEMBERS, http_routes=(), grpc_routes=(grpc_route(GRPCRouteMatch(method)),))
        config = translate(state, AT_GATEWAY)[typeurls.ROUTE]["ns/gw:8080"]
        [built] = config.virtual_hosts[0].routes
        specifier = built.match.WhichOneof("path_specifier")
        found = built.match.safe_regex.regex if kind == "safe_regex" else getattr(built.match, kind)
        assert (specifier, found) == (kind, value)
        assert built.name == "GRPCRoute ns/cart rules[0].matches[0]"
