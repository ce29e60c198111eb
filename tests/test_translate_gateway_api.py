"""Gateway API semantics in translation: listeners sharing a port, hostname intersection and
listener precedence, allowedRoutes, ReferenceGrants, partial validity, redirects' ports, CORS,
backend filters and mirror fractions; and the reasons route status gives."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from test_translate_routes import members

from xdsfleet.cache import typeurls
from xdsfleet.model.attachment import GATEWAY_GROUP, intersection
from xdsfleet.model.fleet import (
    CORS,
    AllowedRoutes,
    BackendRef,
    FleetState,
    Gateway,
    GatewayListener,
    GrantFrom,
    GrantTo,
    HeaderModifier,
    HTTPRoute,
    LabelSelector,
    Namespace,
    ParentRef,
    PathMatch,
    ReferenceGrant,
    RequestMirror,
    RequestRedirect,
    RouteFilters,
    RouteGroupKind,
    RouteMatch,
    RouteNamespaces,
    RouteRule,
    SecretRef,
    TLSSecret,
)
from xdsfleet.model.node import NodeProfile
from xdsfleet.status.conditions import Programmed, gateway_verdict, route_verdict
from xdsfleet.translate import translate
from xdsfleet.translate.listeners import TLS_INSPECTOR
from xdsfleet.translate.routes import gateway_ports
from xdsfleet.translate.rules import INVALID_BACKEND

NS = "infra"
PROFILE = NodeProfile(gateway="infra/gw")
ALL = AllowedRoutes(RouteNamespaces.ALL)


def to(service: str, **kw: Any) -> BackendRef:
    return BackendRef(service, "ns", 80, **kw)


def rule(path: str, *backends: BackendRef, **kw: Any) -> RouteRule:
    return RouteRule((RouteMatch(PathMatch(value=path)),), backends, **kw)


def route(
    name: str,
    *rules: RouteRule,
    hostnames: tuple[str, ...] = (),
    namespace: str = "ns",
    **parent: Any,
) -> HTTPRoute:
    return HTTPRoute(namespace, name, (ParentRef(NS, "gw", **parent),), hostnames, rules)


def state(*routes: HTTPRoute, listeners: tuple[GatewayListener, ...], **kw: Any) -> FleetState:
    gateway = Gateway(NS, "gw", "xdsfleet", listeners)
    return FleetState("f", members("v1", "v2"), (gateway,), routes, **kw)


def hosts(resources: Any, port: int) -> dict[str, list[str]]:
    """Virtual host -> the names of its routes (the rules they come from)."""
    config = resources[typeurls.ROUTE][f"infra/gw:{port}"]
    return {h.name: [r.name.split()[1] for r in h.routes] for h in config.virtual_hosts}


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, "a.example.com", "a.example.com"),
        ("a.example.com", "a.example.com", "a.example.com"),
        ("a.example.com", "b.example.com", None),
        ("*.example.com", "a.example.com", "a.example.com"),
        ("*.example.com", "a.b.example.com", "a.b.example.com"),
        ("*.example.com", "example.com", None),
        ("a.example.com", "*.example.com", "a.example.com"),
        ("*.example.com", "*.a.example.com", "*.a.example.com"),
        ("*.a.example.com", "*.example.com", "*.a.example.com"),
        ("*.example.com", "*.example.org", None),
    ],
)
def test_route_and_listener_hostnames_intersect_as_the_spec_says(
    listener: str | None, route: str, expected: str | None
) -> None:
    assert intersection(listener, route) == expected


def test_listeners_sharing_a_port_are_one_envoy_listener_with_a_host_per_listener() -> None:
    listeners = (
        GatewayListener("exact", 80, hostname="a.example.com", allowed_routes=ALL),
        GatewayListener("wild", 80, hostname="*.example.com", allowed_routes=ALL),
        GatewayListener("any", 80, allowed_routes=ALL),
    )
    routes = (
        # No hostnames: on each listener it takes the listener's hostname.
        route("on-any", rule("/", to("v1"))),
        # Intersects "exact" as a.example.com, "wild" as *.example.com, and "any" as
        # *.example.com, which "wild" owns: a host belongs to the most specific listener.
        route("wide", rule("/w", to("v2")), hostnames=("*.example.com",)),
    )
    resources = translate(state(*routes, listeners=listeners), PROFILE)

    assert set(resources[typeurls.LISTENER]) == {"infra/gw:80"}
    assert hosts(resources, 80) == {
        "*": ["ns/on-any"],
        "*.example.com": ["ns/wide", "ns/on-any"],
        "a.example.com": ["ns/wide", "ns/on-any"],
    }


def test_an_exact_route_hostname_puts_its_rules_before_a_wildcard_routes() -> None:
    listeners = (GatewayListener("any", 80, allowed_routes=ALL),)
    routes = (
        route("wild", rule("/", to("v1")), rule("/longer/path", to("v1")), hostnames=("*.io",)),
        route("exact", rule("/", to("v2")), hostnames=("a.x.io",)),
    )
    found = hosts(translate(state(*routes, listeners=listeners), PROFILE), 80)

    assert found == {"*.io": ["ns/wild", "ns/wild"], "a.x.io": ["ns/exact", "ns/wild", "ns/wild"]}


def test_allowed_routes_take_routes_by_namespace_labels_and_kind() -> None:
    selector = LabelSelector((("team", "blue"),))
    listeners = (
        GatewayListener("same", 80),
        GatewayListener(
            "blue", 81, allowed_routes=AllowedRoutes(RouteNamespaces.SELECTOR, selector)
        ),
        GatewayListener(
            "grpc-only",
            82,
            allowed_routes=AllowedRoutes(
                RouteNamespaces.ALL, kinds=(RouteGroupKind(GATEWAY_GROUP, "GRPCRoute"),)
            ),
        ),
    )
    routes = (
        route("in-ns", rule("/", to("v1"))),
        route("in-infra", rule("/", to("v1")), namespace=NS),
    )
    labelled = (Namespace("ns", (("team", "blue"),)),)
    resources = translate(state(*routes, listeners=listeners, namespaces=labelled), PROFILE)

    assert hosts(resources, 80) == {"*": ["infra/in-infra"]}
    assert hosts(resources, 81) == {"*": ["ns/in-ns"]}
    assert hosts(resources, 82) == {}


def test_a_cross_namespace_backend_needs_a_grant_and_answers_500_without() -> None:
    listeners = (GatewayListener("any", 80, allowed_routes=ALL),)
    routes = (route("r", rule("/", to("v1")), namespace="other"),)
    grant = ReferenceGrant(
        "ns",
        "g",
        (GrantFrom(GATEWAY_GROUP, "HTTPRoute", "other"),),
        (GrantTo("", "Service", "v1"),),
    )

    refused = translate(state(*routes, listeners=listeners), PROFILE)
    granted = translate(state(*routes, listeners=listeners, reference_grants=(grant,)), PROFILE)

    [[no_grant]] = [h.routes for h in refused[typeurls.ROUTE]["infra/gw:80"].virtual_hosts]
    assert no_grant.direct_response.status == 500
    [[with_grant]] = [h.routes for h in granted[typeurls.ROUTE]["infra/gw:80"].virtual_hosts]
    assert with_grant.route.cluster == "ns/v1:80"


def test_https_listeners_sharing_a_port_get_one_sni_chain_each_with_their_certificates() -> None:
    listeners = tuple(
        GatewayListener(x, 443, "HTTPS", f"{x}.example.com", (SecretRef(NS, x),), ALL)
        for x in ("a", "b", "c")  # c's Secret is missing: a and b are served
    )
    secrets = tuple(TLSSecret(NS, x, "CERT", "KEY") for x in ("a", "b"))
    resources = translate(state(listeners=listeners, secrets=secrets), PROFILE)

    listener = resources[typeurls.LISTENER]["infra/gw:443"]
    assert [f.name for f in listener.listener_filters] == [TLS_INSPECTOR]
    served = {}
    for chain in listener.filter_chains:
        context = tls_pb2.DownstreamTlsContext()
        chain.transport_socket.typed_config.Unpack(context)
        configs = context.common_tls_context.tls_certificate_sds_secret_configs
        served[tuple(chain.filter_chain_match.server_names)] = [c.name for c in configs]
    assert served == {("a.example.com",): ["infra/a"], ("b.example.com",): ["infra/b"]}


def test_each_sni_chain_of_a_shared_https_port_answers_421_for_the_others_hosts() -> None:
    listeners = (
        GatewayListener("a", 443, "HTTPS", "a.example.com", (SecretRef(NS, "a"),), ALL),
        GatewayListener("rest", 443, "HTTPS", None, (SecretRef(NS, "a"),), ALL),
    )
    routes = (route("r", rule("/", to("v1")), hostnames=("a.example.com", "b.example.com")),)
    secrets = (TLSSecret(NS, "a", "CERT", "KEY"),)
    resources = translate(state(*routes, listeners=listeners, secrets=secrets), PROFILE)

    names = {c.name for c in resources[typeurls.ROUTE].values()}
    assert names == {"infra/gw:443/a", "infra/gw:443/rest"}
    served = {}
    for name in sorted(names):
        hosts = resources[typeurls.ROUTE][name].virtual_hosts
        served[name] = {
            domain: h.routes[0].direct_response.status or h.routes[0].route.cluster
            for h in hosts
            for domain in h.domains
        }
    assert served == {
        # Any other host belongs to the hostname-less listener: misdirected too.
        "infra/gw:443/a": {"a.example.com": "ns/v1:80", "b.example.com": 421, "*": 421},
        "infra/gw:443/rest": {"a.example.com": 421, "b.example.com": "ns/v1:80"},
    }


def test_a_protocol_conflict_on_a_port_serves_the_first_protocol_only() -> None:
    listeners = (
        GatewayListener("http", 80),
        GatewayListener("tls", 80, "HTTPS", "a.example.com", (SecretRef(NS, "a"),)),
    )
    [port] = gateway_ports(Gateway(NS, "gw", "xdsfleet", listeners))
    assert ([x.name for x in port.listeners], [x.name for x in port.conflicted]) == (
        ["http"],
        ["tls"],
    )


@pytest.mark.parametrize(
    ("listener_port", "redirect", "port"),
    [
        (8080, RequestRedirect(), 8080),  # the listener's port is kept
        (80, RequestRedirect(), 0),  # the default one is not written
        (8080, RequestRedirect(scheme="https"), 0),  # the new scheme's default: left out
        (8080, RequestRedirect(scheme="https", port=8443), 8443),
        (8080, RequestRedirect(hostname="b.example.com"), 8080),
    ],
)
def test_a_redirect_port_follows_the_spec(
    listener_port: int, redirect: RequestRedirect, port: int
) -> None:
    listeners = (GatewayListener("http", listener_port, allowed_routes=ALL),)
    moved = rule("/", filters=RouteFilters(redirect=replace(redirect, status_code=307)))
    resources = translate(state(route("r", moved), listeners=listeners), PROFILE)

    [host] = resources[typeurls.ROUTE][f"infra/gw:{listener_port}"].virtual_hosts
    [built] = host.routes
    assert built.redirect.port_redirect == port
    assert built.redirect.response_code == built.redirect.TEMPORARY_REDIRECT


def test_backend_filters_mirror_fractions_cors_and_unknown_kinds_in_one_rule() -> None:
    edits = HeaderModifier(set=(("x-backend", "v2"),))
    filters = RouteFilters(
        mirrors=(RequestMirror(to("v1"), 1, 1000),),
        cors=CORS(("https://*.example.com",), ("GET",)),
    )
    mixed = rule(
        "/",
        to("v1", weight=2),
        to("v2", request_headers=edits),
        BackendRef("b", "ns", 0, kind="Bucket", group="example.com"),
        filters=filters,
    )
    listeners = (GatewayListener("http", 80, allowed_routes=ALL),)
    resources = translate(state(route("r", mixed), listeners=listeners), PROFILE)

    [host] = resources[typeurls.ROUTE]["infra/gw:80"].virtual_hosts
    [built] = host.routes
    weighted = {c.name: c for c in built.route.weighted_clusters.clusters}
    assert list(weighted) == ["ns/v1:80", "ns/v2:80", INVALID_BACKEND]
    assert [h.header.key for h in weighted["ns/v2:80"].request_headers_to_add] == ["x-backend"]
    assert built.route.cluster_not_found_response_code == built.route.INTERNAL_SERVER_ERROR
    [mirror] = built.route.request_mirror_policies
    assert mirror.runtime_fraction.default_value.numerator == 1000  # per million
    assert "envoy.filters.http.cors" in built.typed_per_filter_config
    listener = resources[typeurls.LISTENER]["infra/gw:80"]
    assert "cors" in str(listener.filter_chains[0].filters[0].typed_config.value)


def test_route_status_names_the_spec_reasons() -> None:
    listeners = (GatewayListener("blue", 80, hostname="a.example.com"),)
    other_ns = route("r", rule("/", BackendRef("v1", "elsewhere", 80)), namespace=NS)
    wrong_host = replace(other_ns, hostnames=("b.example.com",))
    not_allowed = route("r", rule("/", BackendRef("p", "ns", 80, kind="Pod")))
    fleet = state(listeners=listeners)
    problems = {"spec.rules[0].backendRefs[0]": "does not resolve"}

    def reasons(found: HTTPRoute) -> tuple[str, str]:
        [(accepted, resolved, _)] = route_verdict(
            fleet, found, 1, problems, Programmed(0, 0)
        ).conditions
        return accepted.reason, resolved.reason

    assert reasons(other_ns) == ("Accepted", "RefNotPermitted")
    assert reasons(wrong_host) == ("NoMatchingListenerHostname", "RefNotPermitted")
    assert reasons(not_allowed) == ("NotAllowedByListeners", "InvalidKind")


def test_a_tls_listener_is_left_alone_and_its_gateways_http_listener_served() -> None:
    listeners = (
        GatewayListener("web", 80, "HTTP", allowed_routes=ALL),
        GatewayListener("tls", 443, "TLS"),  # passthrough, for TLSRoutes: not served
    )
    to_tls = route("to-tls", rule("/", to("v1")), section_name="tls")
    to_any = route("to-any", rule("/", to("v1")))
    fleet = state(to_tls, to_any, listeners=listeners)

    resources = translate(fleet, PROFILE)
    assert set(resources[typeurls.LISTENER]) == {"infra/gw:80"}
    assert [p.port for p in gateway_ports(fleet.gateways[0])] == [80]

    def accepted(found: HTTPRoute) -> tuple[str, str]:
        [(condition, _, _)] = route_verdict(fleet, found, 1, {}, Programmed(0, 0)).conditions
        return condition.status, condition.reason

    assert accepted(to_tls) == ("False", "NotAllowedByListeners")
    assert accepted(to_any) == ("True", "Accepted")
    verdict = gateway_verdict(fleet, fleet.gateways[0], 1, [])
    tls = next(x for x in verdict.listeners if x.name == "tls")
    assert (tls.attached_routes, tls.supported_kinds) == (0, ())
    accepted_condition = tls.conditions[0]
    assert (accepted_condition.type, accepted_condition.status) == ("Accepted", "False")
    assert accepted_condition.reason == "UnsupportedProtocol"
