"""Gateway API documents beyond paths and weights, TLS Secrets and Nodes: what a valid document
becomes, and how each mistake is named."""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import pytest
from test_manifests import DELETE, FILE, ROUTE, SERVICE, edited, parse, problems_of, text_of

from xdsfleet.documents.manifests import Place
from xdsfleet.model.attachment import GATEWAY_GROUP
from xdsfleet.model.fleet import (
    CORS,
    AllowedRoutes,
    GrantFrom,
    GrantTo,
    GRPCMethodMatch,
    HeaderModifier,
    LabelSelector,
    Namespace,
    Node,
    PathMatch,
    PathMatchType,
    PathModifier,
    PathModifierType,
    ReferenceGrant,
    RequestRedirect,
    RouteGroupKind,
    RouteNamespaces,
    RouteRetry,
    RouteTimeouts,
    SecretRef,
    ValueMatch,
    ValueMatchType,
)

CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
HTTPS_GATEWAY: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "edge", "namespace": "infra"},
    "spec": {
        "gatewayClassName": "xdsfleet",
        "listeners": [
            {
                "name": "https",
                "port": 443,
                "protocol": "HTTPS",
                "tls": {
                    "mode": "Terminate",
                    "certificateRefs": [{"kind": "Secret", "name": "tls"}],
                },
            }
        ],
    },
}
RICH_RULE: dict[str, Any] = {
    "name": "api",
    "matches": [
        {
            "path": {"type": "RegularExpression", "value": "/api/v[0-9]+/.*"},
            "headers": [{"name": "X-Canary", "value": "true"}],
            "queryParams": [{"type": "RegularExpression", "name": "Lang", "value": "en|fr"}],
            "method": "POST",
        }
    ],
    "filters": [
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {
                "set": [{"name": "x-a", "value": "1"}],
                "add": [{"name": "x-b", "value": "2"}],
                "remove": ["x-c"],
            },
        },
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "shadow", "port": 80}, "percent": 5},
        },
    ],
    "timeouts": {"request": "10s", "backendRequest": "2s"},
    "retry": {"codes": [502, 503], "attempts": 3, "backoff": "100ms"},
    "backendRefs": [{"name": "shop", "port": 80}],
}
GRPC_ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "GRPCRoute",
    "metadata": {"name": "cart", "namespace": "default"},
    "spec": {
        "parentRefs": [{"name": "edge", "namespace": "infra"}],
        "rules": [
            {
                "name": "get",
                "matches": [{"method": {"service": "shop.Cart", "method": "Get"}}],
                "backendRefs": [{"name": "cart", "port": 50051}],
            }
        ],
    },
}
SECRET: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "tls", "namespace": "infra"},
    "type": "kubernetes.io/tls",
    "data": {
        "tls.crt": base64.b64encode(CERTIFICATE.encode()).decode(),
        "tls.key": base64.b64encode(KEY.encode()).decode(),
    },
}
CRT, KEY64 = SECRET["data"]["tls.crt"], SECRET["data"]["tls.key"]
NODE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "dc1-a"}},
    "status": {
        "addresses": [
            {"type": "Hostname", "address": "node-1"},
            {"type": "InternalIP", "address": "192.168.0.1"},
        ],
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def rich_route() -> dict[str, Any]:
    return edited(ROUTE, "spec.rules", [RICH_RULE])


def test_an_https_listener_names_its_certificates() -> None:
    [gateway] = parse(HTTPS_GATEWAY, place=Place.ROUTES).gateways
    [listener] = gateway.listeners
    assert listener.protocol == "HTTPS"
    assert listener.certificate_refs == (SecretRef("infra", "tls"),)


def test_another_controllers_gateway_is_left_alone_whatever_it_holds() -> None:
    # Istio's class, with what xdsfleet refuses on its own Gateways: an unknown spec field, a
    # TCP listener and a route kind it does not serve. None of it may refuse the file.
    foreign = edited(HTTPS_GATEWAY, "metadata.name", "mesh")
    foreign = edited(foreign, "spec.gatewayClassName", "istio")
    foreign = edited(foreign, "spec.infrastructure", {"labels": {"a": "b"}})
    tcp = {"name": "db", "port": 5432, "protocol": "TCP", "allowedRoutes": {"kinds": []}}
    foreign = edited(foreign, "spec.listeners", [tcp])
    contents = parse(foreign, HTTPS_GATEWAY, ROUTE, place=Place.ROUTES)
    assert [(g.name, g.gateway_class) for g in contents.gateways] == [("edge", "xdsfleet")]
    assert contents.foreign_gateways == (("infra", "mesh"),)
    assert len(contents.http_routes) == 1


def test_a_gateway_of_our_class_is_still_checked() -> None:
    ours = edited(HTTPS_GATEWAY, "spec.infrastructure", {"labels": {"a": "b"}})
    [problem] = problems_of(text_of(ours), Place.ROUTES)
    assert (problem.obj, problem.field) == ("Gateway infra/edge", "spec.infrastructure")


def test_a_tls_passthrough_listener_is_read_as_written_and_not_served() -> None:
    passthrough = {
        "name": "tls",
        "port": 8443,
        "protocol": "TLS",
        "tls": {"mode": "Passthrough"},
        "allowedRoutes": {"kinds": [{"kind": "TLSRoute"}]},
    }
    document = edited(HTTPS_GATEWAY, "spec.listeners", [passthrough])
    [gateway] = parse(document, place=Place.ROUTES).gateways
    [listener] = gateway.listeners
    assert (listener.protocol, listener.served) == ("TLS", False)


def test_a_rule_keeps_its_name_matches_filters_timeouts_and_retry() -> None:
    [route] = parse(rich_route(), place=Place.ROUTES).http_routes
    [rule] = route.rules
    [match] = rule.matches

    assert rule.name == "api"
    assert match.path == PathMatch(PathMatchType.REGULAR_EXPRESSION, "/api/v[0-9]+/.*")
    assert match.headers == (ValueMatch("x-canary", "true"),)
    assert match.query_params == (ValueMatch("Lang", "en|fr", ValueMatchType.REGULAR_EXPRESSION),)
    assert match.method == "POST"
    assert rule.filters.request_headers == HeaderModifier(
        set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",)
    )
    [mirror] = rule.filters.mirrors
    assert (mirror.backend.name, mirror.numerator, mirror.denominator) == ("shadow", 5, 100)
    assert rule.timeouts == RouteTimeouts(10_000, 2_000)
    assert rule.retry == RouteRetry((502, 503), 3, 100)


def test_a_redirect_keeps_its_path_modifier() -> None:
    rule = {
        "matches": [{"path": {"value": "/old"}}],
        "filters": [
            {
                "type": "RequestRedirect",
                "requestRedirect": {
                    "scheme": "https",
                    "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"},
                    "statusCode": 301,
                },
            }
        ],
    }
    [route] = parse(edited(ROUTE, "spec.rules", [rule]), place=Place.ROUTES).http_routes
    assert route.rules[0].filters.redirect == RequestRedirect(
        scheme="https",
        path=PathModifier(PathModifierType.REPLACE_PREFIX_MATCH, "/new"),
        status_code=301,
    )


def test_a_grpc_route_matches_methods() -> None:
    [route] = parse(GRPC_ROUTE, place=Place.ROUTES).grpc_routes
    assert route.rules[0].matches[0].method == GRPCMethodMatch("shop.Cart", "Get")


def test_a_tls_secret_is_read_from_data_or_string_data() -> None:
    [from_data] = parse(SECRET, place=Place.ROUTES).secrets
    plain = {**SECRET, "data": {"tls.crt": CERTIFICATE}}
    plain["stringData"] = {"tls.key": KEY}
    plain["data"] = {"tls.crt": SECRET["data"]["tls.crt"]}
    [mixed] = parse(plain, place=Place.ROUTES).secrets
    assert (from_data.certificate, from_data.private_key) == (CERTIFICATE, KEY)
    assert mixed == from_data


def test_a_secret_value_outside_ascii_is_reported_as_not_base64() -> None:
    broken = {**SECRET, "data": {**SECRET["data"], "tls.crt": "\x80"}}
    [problem] = problems_of(text_of(broken), Place.ROUTES)
    assert problem.field == 'data["tls.crt"]'
    assert problem.message == "not base64-encoded PEM text"


def test_a_node_gives_its_internal_addresses_zone_and_readiness() -> None:
    [node] = parse(NODE).nodes
    assert node == Node("node-1", ("192.168.0.1",), zone="dc1-a", ready=True)


def test_a_node_without_a_ready_condition_counts_as_ready_and_a_false_one_not() -> None:
    unready = edited(NODE, "status.conditions", [{"type": "Ready", "status": "False"}])
    assert parse(edited(NODE, "status.conditions", [])).nodes[0].ready
    assert not parse(unready).nodes[0].ready


def test_a_service_port_may_name_its_node_port() -> None:
    [service] = parse(edited(SERVICE, "spec.ports[0].nodePort", 30080)).services
    assert service.ports[0].node_port == 30080


def test_allowed_routes_are_read_with_their_selector_and_kinds() -> None:
    allowed = {
        "namespaces": {
            "from": "Selector",
            "selector": {
                "matchLabels": {"team": "blue"},
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}],
            },
        },
        "kinds": [{"kind": "HTTPRoute"}],
    }
    [gateway] = parse(edited(HTTPS_GATEWAY, f"{L}.allowedRoutes", allowed), place=ROUTES).gateways
    [listener] = gateway.listeners
    selector = LabelSelector((("team", "blue"),), (("env", "NotIn", ("dev",)),))
    assert listener.allowed_routes == AllowedRoutes(
        RouteNamespaces.SELECTOR, selector, (RouteGroupKind(GATEWAY_GROUP, "HTTPRoute"),)
    )
    assert selector.matches({"team": "blue"})
    assert not selector.matches({"team": "blue", "env": "dev"})
    assert not selector.matches({"team": "red"})


def test_a_reference_grant_and_a_namespace_are_read() -> None:
    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "web"},
        "spec": {
            "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": "infra"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    labelled = edited(namespace, "metadata.labels", {"team": "blue"})
    contents = parse(grant, labelled, place=ROUTES)
    [found] = contents.reference_grants
    assert found == ReferenceGrant(
        "web", "g", (GrantFrom(GATEWAY_GROUP, "HTTPRoute", "infra"),), (GrantTo("", "Service"),)
    )
    assert contents.namespaces == (Namespace("web", (("team", "blue"),)),)


def test_a_backend_ref_keeps_an_unknown_kind_and_its_own_header_filters() -> None:
    backends = [
        {"group": "example.com", "kind": "Bucket", "name": "b"},
        {
            "name": "shop",
            "port": 80,
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"set": [{"name": "x-b", "value": "1"}]},
                }
            ],
        },
    ]
    route = edited(ROUTE, "spec.rules", [{"backendRefs": backends}])
    [rule] = parse(route, place=ROUTES).http_routes[0].rules
    bucket, shop = rule.backend_refs
    assert (bucket.group, bucket.kind, bucket.port) == ("example.com", "Bucket", 0)
    assert shop.request_headers == HeaderModifier(set=(("x-b", "1"),))


def test_mirror_fractions_cors_and_the_newer_redirect_codes_are_read() -> None:
    rule = {
        "filters": [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {"name": "shadow", "port": 80},
                    "fraction": {"numerator": 1, "denominator": 1000},
                },
            },
            {
                "type": "CORS",
                "cors": {"allowOrigins": ["https://*.example.com"], "allowMethods": ["GET"]},
            },
        ],
        **BACKEND,
    }
    route = edited(ROUTE, "spec.rules", [rule, _redirect_rule(308)])
    first, second = parse(route, place=ROUTES).http_routes[0].rules
    [mirror] = first.filters.mirrors
    assert (mirror.numerator, mirror.denominator) == (1, 1000)
    assert first.filters.cors == CORS(("https://*.example.com",), ("GET",))
    assert second.filters.redirect == RequestRedirect(status_code=308)


def test_a_sole_backend_rewrite_or_redirect_acts_as_the_rules() -> None:
    rewrite = {"type": "URLRewrite", "urlRewrite": {"hostname": "internal.example.com"}}
    redirect = {"type": "RequestRedirect", "requestRedirect": {"statusCode": 301}}
    rules = [
        {"backendRefs": [{"name": "shop", "port": 80, "filters": [rewrite]}]},
        {"backendRefs": [{"name": "shop", "port": 80, "filters": [redirect]}]},
    ]
    rewritten, redirected = (
        parse(edited(ROUTE, "spec.rules", rules), place=ROUTES).http_routes[0].rules
    )
    assert rewritten.filters.rewrite is not None
    assert rewritten.filters.rewrite.hostname == "internal.example.com"
    assert [b.name for b in rewritten.backend_refs] == ["shop"]
    assert redirected.filters.redirect == RequestRedirect(status_code=301)
    assert redirected.backend_refs == ()  # the redirect answers


def _redirect_rule(code: int) -> dict[str, Any]:
    return {"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": code}}]}


# --- Bad documents: each names file, object and field ----------------------------------------


class Case(NamedTuple):
    base: dict[str, Any]
    place: Place
    path: str
    value: object
    field: str
    message: str


RULE = "spec.rules[0]"
HOST_X = {"hostname": "x"}
BACKEND = {"backendRefs": [{"name": "shop", "port": 80}]}
G, RT, GR, SE, N = HTTPS_GATEWAY, rich_route(), GRPC_ROUTE, SECRET, NODE
L = "spec.listeners[0]"
ROUTES, MEMBER = Place.ROUTES, Place.MEMBER
CASES = [
    Case(
        G,
        ROUTES,
        f"{L}.allowedRoutes",
        {"namespaces": {"from": "Selector"}},
        f"{L}.allowedRoutes.namespaces.selector",
        "from: Selector needs one",
    ),
    Case(
        G,
        ROUTES,
        f"{L}.allowedRoutes",
        {"kinds": [{"kind": "TCPRoute"}]},
        f"{L}.allowedRoutes.kinds[0].kind",
        "HTTP and HTTPS listeners take HTTPRoute, GRPCRoute; got 'TCPRoute'",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.matches[0].path.value",
        "/(?=x)",
        f"{RULE}.matches[0].path.value",
        "not a valid RE2 regular expression: invalid perl operator: (?=",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.filters",
        [{"type": "CORS", "cors": {"allowOrigins": ["example.com"]}}],
        f"{RULE}.filters[0].cors.allowOrigins[0]",
        "is not '*' or SCHEME://HOST[:PORT]",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.backendRefs[0].filters",
        [{"type": "RequestMirror"}],
        f"{RULE}.backendRefs[0].filters[0].type",
        "must be one of RequestHeaderModifier, ResponseHeaderModifier, URLRewrite,"
        " RequestRedirect; got 'RequestMirror'",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.backendRefs",
        [
            {"name": "a", "port": 80},
            {"name": "b", "port": 80, "filters": [{"type": "URLRewrite", "urlRewrite": HOST_X}]},
        ],
        f"{RULE}.backendRefs[1].filters",
        "need it to be the rule's only one",
    ),
    Case(G, ROUTES, f"{L}.tls", DELETE, f"{L}.tls", "HTTPS needs tls.certificateRefs"),
    Case(G, ROUTES, f"{L}.protocol", "HTTP", f"{L}.tls", "an HTTP listener has no TLS"),
    Case(G, ROUTES, f"{L}.tls.mode", "Passthrough", f"{L}.tls.mode", "only 'Terminate'"),
    Case(G, ROUTES, f"{L}.tls.certificateRefs", [], f"{L}.tls.certificateRefs", "not be empty"),
    Case(
        G,
        ROUTES,
        f"{L}.tls.certificateRefs[0].kind",
        "ConfigMap",
        f"{L}.tls.certificateRefs[0].kind",
        "only 'Secret'",
    ),
    Case(RT, ROUTES, f"{RULE}.name", "API", f"{RULE}.name", "DNS-1123 subdomain"),
    Case(
        RT,
        ROUTES,
        "spec.rules",
        [{"name": "a"}, {"name": "a"}],
        "spec.rules[1].name",
        "duplicate rule name a",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.matches[0].path.value",
        "/api/(",
        f"{RULE}.matches[0].path.value",
        "not a valid RE2 regular expression: missing )",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.matches[0].headers[0].name",
        "x canary",
        f"{RULE}.matches[0].headers[0].name",
        "not a valid header name",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.matches[0].headers",
        [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}],
        f"{RULE}.matches[0].headers[1].name",
        "duplicate name x-a",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.matches[0].headers[0].value",
        DELETE,
        f"{RULE}.matches[0].headers[0].value",
        "missing required field",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.matches[0].method",
        "FETCH",
        f"{RULE}.matches[0].method",
        "must be one of GET",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.filters[0].type",
        "ExtensionRef",
        f"{RULE}.filters[0].type",
        "must be one of",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.filters[1]",
        RICH_RULE["filters"][0],
        f"{RULE}.filters[1].type",
        "RequestHeaderModifier given twice",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.filters[0].requestHeaderModifier",
        {},
        f"{RULE}.filters[0].requestHeaderModifier",
        "must set, add or remove at least one header",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.filters[0].requestMirror",
        {"backendRef": {"name": "x", "port": 80}},
        f"{RULE}.filters[0].requestMirror",
        "does not go with type RequestHeaderModifier",
    ),
    Case(
        RT,
        ROUTES,
        RULE,
        {
            "filters": [
                {"type": "RequestRedirect", "requestRedirect": {"hostname": "a.example.com"}},
                {"type": "URLRewrite", "urlRewrite": {"hostname": "b.example.com"}},
            ]
        },
        f"{RULE}.filters",
        "cannot both be used",
    ),
    Case(
        RT,
        ROUTES,
        RULE,
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 304}}]},
        f"{RULE}.filters[0].requestRedirect.statusCode",
        "must be one of 301, 302, 303, 307, 308; got 304",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.filters",
        [
            {
                "type": "URLRewrite",
                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
            }
        ],
        f"{RULE}.filters",
        "ReplacePrefixMatch needs every match to be a PathPrefix",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.timeouts.backendRequest",
        "1m",
        f"{RULE}.timeouts.backendRequest",
        "must not be longer than request",
    ),
    Case(RT, ROUTES, f"{RULE}.timeouts.request", "10", f"{RULE}.timeouts.request", "duration"),
    Case(RT, ROUTES, f"{RULE}.retry.codes", [302], f"{RULE}.retry.codes[0]", "between 400"),
    Case(
        RT,
        ROUTES,
        RULE,
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"port": 8443}}], **BACKEND},
        f"{RULE}.backendRefs",
        "a rule with a RequestRedirect sends requests nowhere else",
    ),
    Case(
        RT,
        ROUTES,
        f"{RULE}.backendRefs",
        [{"name": "a", "port": 80, "weight": 0}, {"name": "b", "port": 80, "weight": 0}],
        f"{RULE}.backendRefs",
        "weights sum to zero",
    ),
    Case(
        GR,
        ROUTES,
        f"{RULE}.matches[0].method",
        {"type": "Exact"},
        f"{RULE}.matches[0].method",
        "needs a service, a method or both",
    ),
    Case(
        GR,
        ROUTES,
        f"{RULE}.matches[0].method.method",
        "get/all",
        f"{RULE}.matches[0].method.method",
        "not a gRPC method name",
    ),
    Case(
        GR,
        ROUTES,
        f"{RULE}.filters",
        [{"type": "URLRewrite"}],
        f"{RULE}.filters[0].type",
        "must be one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror",
    ),
    Case(SE, ROUTES, "type", "Opaque", "type", "only kubernetes.io/tls Secrets"),
    Case(SE, ROUTES, "data", {"tls.crt": CRT}, 'data["tls.key"]', "missing required key"),
    Case(SE, ROUTES, "data", {"tls.crt": "x!", "tls.key": KEY64}, 'data["tls.crt"]', "not base64"),
    Case(SE, ROUTES, "data", {"tls.crt": KEY64, "tls.key": KEY64}, 'data["tls.crt"]', "not a PEM"),
    Case(
        SE,
        ROUTES,
        "data",
        {**SECRET["data"], "password": "eA=="},
        'data["password"]',
        "unknown key",
    ),
    Case(
        N,
        MEMBER,
        "status.addresses",
        [{"type": "Hostname", "address": "n"}],
        "status.addresses",
        "needs an InternalIP",
    ),
    Case(
        N,
        MEMBER,
        "status.addresses[1].address",
        "node-1.local",
        "status.addresses[1].address",
        "not an IP address",
    ),
    Case(
        N,
        MEMBER,
        "status.conditions[0].status",
        "Yes",
        "status.conditions[0].status",
        "must be one of True, False, Unknown",
    ),
    Case(N, MEMBER, "spec", {}, "spec", "unknown field"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.base['kind']}:{c.path}={c.value!r}")
def test_a_bad_document_is_reported_with_file_object_and_field(case: Case) -> None:
    document = edited(case.base, case.path, case.value)
    problems = problems_of(text_of(document), case.place)
    metadata = case.base["metadata"]
    namespace = metadata.get("namespace")
    label = f"{case.base['kind']} {namespace + '/' if namespace else ''}{metadata['name']}"
    assert [(p.file, p.obj, p.field) for p in problems] == [(FILE, label, case.field)]
    assert case.message in problems[0].message


@pytest.mark.parametrize("kind", ["GRPCRoute", "Secret", "TrafficPolicy"])
def test_fleet_level_kinds_do_not_belong_in_a_member_directory(kind: str) -> None:
    document = {**GRPC_ROUTE, "kind": kind}
    [problem] = problems_of(text_of(document), Place.MEMBER)
    assert problem.field == "kind"
    assert "does not belong in a member directory" in problem.message
