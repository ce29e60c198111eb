"""Gateway routes: HTTPRoute attachment, virtual hosts, match precedence and backends."""

from __future__ import annotations

from typing import Any

from xdsfleet.cache import typeurls
from xdsfleet.model.attachment import GATEWAY_GROUP, MCS_GROUP
from xdsfleet.model.fleet import (
    AllowedRoutes,
    BackendRef,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Gateway,
    GatewayListener,
    GrantFrom,
    GrantTo,
    HTTPRoute,
    Member,
    MemberState,
    ParentRef,
    PathMatch,
    PathMatchType,
    ReferenceGrant,
    RouteMatch,
    RouteNamespaces,
    RouteRule,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import translate
from xdsfleet.translate.rules import INVALID_BACKEND

GATEWAY = Gateway(
    "infra",
    "edge",
    "xdsfleet",
    (
        GatewayListener("http", 8080, allowed_routes=AllowedRoutes(RouteNamespaces.ALL)),
        GatewayListener(
            "shop",
            8081,
            hostname="shop.example.com",
            allowed_routes=AllowedRoutes(RouteNamespaces.ALL),
        ),
    ),
)
PORTS = {"http": 8080, "shop": 8081}
PROFILE = NodeProfile(role=Role.GATEWAY, gateway="infra/edge")
PARENT = ParentRef("infra", "edge")


def members(*services: str) -> tuple[MemberState, ...]:
    """One member exporting port 80 of each service, with one ready endpoint."""
    return (
        MemberState(
            Member("a", "r1", "z1"),
            services=tuple(Service("ns", s, (ServicePort("http", 80),)) for s in services),
            endpoint_slices=tuple(
                EndpointSlice(
                    "ns", f"{s}-1", s, (EndpointPort("http", 8080),), (Endpoint(("10.0.0.1",)),)
                )
                for s in services
            ),
            exports=tuple(("ns", s) for s in services),
        ),
    )


def http_route(
    name: str,
    *rules: RouteRule,
    hostnames: tuple[str, ...] = (),
    parents: tuple[ParentRef, ...] = (PARENT,),
    namespace: str = "ns",
) -> HTTPRoute:
    return HTTPRoute(namespace, name, parents, hostnames, rules)


def rule(*backends: BackendRef, path: str = "/", exact: bool = False) -> RouteRule:
    kind = PathMatchType.EXACT if exact else PathMatchType.PATH_PREFIX
    return RouteRule((RouteMatch(PathMatch(kind, path)),), backends)


def to(service: str, weight: int = 1, port: int = 80, kind: str = "Service") -> BackendRef:
    return BackendRef(service, "ns", port, weight=weight, kind=kind)


def translated(
    *routes: HTTPRoute,
    services: tuple[str, ...] = ("web",),
    grants: tuple[ReferenceGrant, ...] = (),
) -> dict[str, Any]:
    state = FleetState("f", members(*services), (GATEWAY,), routes, reference_grants=grants)
    return translate(state, PROFILE)


def route_config(*routes: HTTPRoute, listener: str = "http", **kw: Any) -> Any:
    return translated(*routes, **kw)[typeurls.ROUTE][f"infra/edge:{PORTS[listener]}"]


def only_route(*routes: HTTPRoute, **kw: Any) -> Any:
    [vhost] = route_config(*routes, **kw).virtual_hosts
    [route] = vhost.routes
    return route


def test_each_gateway_listener_has_a_route_configuration_of_the_same_name() -> None:
    assert set(translated()[typeurls.ROUTE]) == {"infra/edge:8080", "infra/edge:8081"}
    assert route_config().name == "infra/edge:8080"


def test_a_route_without_section_name_attaches_to_every_listener() -> None:
    resources = translated(http_route("r", rule(to("web"))))

    assert len(resources[typeurls.ROUTE]["infra/edge:8080"].virtual_hosts) == 1
    assert len(resources[typeurls.ROUTE]["infra/edge:8081"].virtual_hosts) == 1


def test_a_section_name_attaches_to_that_listener_only() -> None:
    pinned = http_route("r", rule(to("web")), parents=(ParentRef("infra", "edge", "shop"),))

    resources = translated(pinned)

    assert list(resources[typeurls.ROUTE]["infra/edge:8080"].virtual_hosts) == []
    assert len(resources[typeurls.ROUTE]["infra/edge:8081"].virtual_hosts) == 1


def test_a_parent_port_attaches_to_the_listener_on_that_port_only() -> None:
    pinned = http_route("r", rule(to("web")), parents=(ParentRef("infra", "edge", port=8080),))

    resources = translated(pinned)

    assert len(resources[typeurls.ROUTE]["infra/edge:8080"].virtual_hosts) == 1
    # The listener's own hostname answers 404 there.
    [empty] = resources[typeurls.ROUTE]["infra/edge:8081"].virtual_hosts
    assert list(empty.routes) == []


def test_a_route_for_another_gateway_does_not_attach() -> None:
    elsewhere = http_route("r", rule(to("web")), parents=(ParentRef("other", "edge"),))

    assert list(route_config(elsewhere).virtual_hosts) == []


def test_a_route_without_hostnames_takes_the_listener_hostname_or_any() -> None:
    route = http_route("r", rule(to("web")))

    [any_host] = route_config(route).virtual_hosts
    [shop] = route_config(route, listener="shop").virtual_hosts

    assert (any_host.name, list(any_host.domains)) == ("*", ["*"])
    assert (shop.name, list(shop.domains)) == ("shop.example.com", ["shop.example.com"])


def test_each_hostname_gets_its_own_virtual_host_sorted_by_name() -> None:
    a = http_route("a", rule(to("web"), path="/a"), hostnames=("b.example.com", "a.example.com"))
    b = http_route("b", rule(to("web"), path="/b"), hostnames=("b.example.com",))

    vhosts = route_config(a, b).virtual_hosts

    assert [(v.name, list(v.domains), len(v.routes)) for v in vhosts] == [
        ("a.example.com", ["a.example.com"], 1),
        ("b.example.com", ["b.example.com"], 2),
    ]


def test_exact_matches_come_before_prefixes_and_longer_prefixes_first() -> None:
    route = http_route(
        "r",
        rule(to("web"), path="/"),
        rule(to("web"), path="/api"),
        rule(to("web"), path="/api/v1/"),
        rule(to("web"), path="/z", exact=True),
    )

    [vhost] = route_config(route).virtual_hosts

    assert [r.match.WhichOneof("path_specifier") for r in vhost.routes] == [
        "path",
        "path_separated_prefix",
        "path_separated_prefix",
        "prefix",
    ]
    assert [
        r.match.path or r.match.path_separated_prefix or r.match.prefix for r in vhost.routes
    ] == [
        "/z",
        "/api/v1",
        "/api",
        "/",
    ]


def test_equal_matches_are_ordered_by_route_namespace_and_name_then_rule_order() -> None:
    routes = (
        http_route("b", rule(to("s3"), path="/x"), rule(to("s4"), path="/x")),
        http_route("z", rule(to("s1"), path="/x"), namespace="a"),
        http_route("a", rule(to("s2"), path="/x")),
    )
    grant = ReferenceGrant(
        "ns", "from-a", (GrantFrom(GATEWAY_GROUP, "HTTPRoute", "a"),), (GrantTo("", "Service"),)
    )

    services = ("s1", "s2", "s3", "s4")
    [vhost] = route_config(*routes, services=services, grants=(grant,)).virtual_hosts

    assert [r.route.cluster for r in vhost.routes] == [f"ns/s{i}:80" for i in (1, 2, 3, 4)]


def test_a_route_without_matches_matches_every_path() -> None:
    route = http_route("r", RouteRule((), (to("web"),)))

    assert only_route(route).match.prefix == "/"


def test_a_rule_with_several_matches_gives_one_route_per_match() -> None:
    two = RouteRule(
        (RouteMatch(PathMatch(PathMatchType.EXACT, "/a")), RouteMatch(PathMatch(value="/b/"))),
        (to("web"),),
    )

    [vhost] = route_config(http_route("r", two)).virtual_hosts

    assert [(r.match.path, r.match.path_separated_prefix) for r in vhost.routes] == [
        ("/a", ""),
        ("", "/b"),
    ]


def test_a_single_backend_routes_to_its_cluster() -> None:
    assert only_route(http_route("r", rule(to("web")))).route.cluster == "ns/web:80"


def test_several_backends_split_by_weight() -> None:
    route = http_route("r", rule(to("web", 9), to("api", 1)))

    action = only_route(route, services=("web", "api")).route

    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
        ("ns/web:80", 9),
        ("ns/api:80", 1),
    ]


def test_backends_weighted_zero_are_dropped() -> None:
    route = http_route("r", rule(to("web", 1), to("api", 0)))

    assert only_route(route, services=("web", "api")).route.cluster == "ns/web:80"


def test_a_rule_whose_backends_all_weigh_zero_answers_500() -> None:
    route = http_route("r", rule(to("web", 0)))

    action = only_route(route)

    assert action.WhichOneof("action") == "direct_response"
    assert action.direct_response.status == 500


def test_the_same_backend_twice_is_one_weighted_entry() -> None:
    route = http_route("r", rule(to("web", 2), to("api", 1), to("web", 3)))

    action = only_route(route, services=("web", "api")).route

    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
        ("ns/web:80", 5),
        ("ns/api:80", 1),
    ]


def test_an_unresolved_backend_keeps_its_share_which_is_answered_500() -> None:
    route = http_route("r", rule(to("web", 3), to("missing", 5), to("api", 1)))

    action = only_route(route, services=("web", "api")).route

    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
        ("ns/web:80", 3),
        (INVALID_BACKEND, 5),
        ("ns/api:80", 1),
    ]
    assert action.cluster_not_found_response_code == action.INTERNAL_SERVER_ERROR


def test_a_backend_on_a_port_nobody_exports_is_unresolved() -> None:
    action = only_route(http_route("r", rule(to("web", port=81))))

    assert action.direct_response.status == 500


def test_a_backend_of_an_unknown_kind_is_unresolved() -> None:
    action = only_route(http_route("r", rule(to("web", kind="Bucket"))))

    assert action.direct_response.status == 500


def test_a_service_import_backend_means_the_service_across_members() -> None:
    imported = BackendRef("web", "ns", 80, kind="ServiceImport", group=MCS_GROUP)
    action = only_route(http_route("r", rule(imported)))

    assert action.route.cluster == "ns/web:80"


def test_a_rule_without_backends_answers_500() -> None:
    assert only_route(http_route("r", rule())).direct_response.status == 500
