"""Ingresses with ingress-nginx canary annotations become the routes their HTTPRoute equivalent
would: the same Envoy RouteConfiguration, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from xdsfleet.cache import typeurls
from xdsfleet.documents.ingress import parse_ingress, routes
from xdsfleet.documents.manifests import Place, parse_file
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.fleet import FleetState, HTTPRoute, Member, MemberState, Service, ServicePort
from xdsfleet.model.node import NodeProfile
from xdsfleet.translate import translate

NGINX = "nginx.ingress.kubernetes.io/"
GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: xdsfleet
  listeners: [{name: http, port: 10080, protocol: HTTP}]
"""
PROFILE = NodeProfile(gateway="default/gw", region="eu")


def ingress(
    name: str, service: str, *, canary: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    annotations = {NGINX + k: v for k, v in (canary or {}).items()}
    if canary is not None:
        annotations[NGINX + "canary"] = "true"
    path = {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"number": 80}}},
    }
    return {
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {
            "ingressClassName": "xdsfleet",
            "rules": [{"host": "shop.example.com", "http": {"paths": [path]}}],
            **spec,
        },
    }


def served(http_routes: tuple[HTTPRoute, ...]) -> Any:
    """The gateway's RouteConfiguration for a fleet of two services and these routes."""
    services = tuple(Service("default", n, (ServicePort("http", 80),)) for n in ("shop", "shop-v2"))
    member = MemberState(
        Member("east", "eu", "eu-1"),
        services=services,
        exports=(("default", "shop"), ("default", "shop-v2")),
    )
    gateways = parse_file(GATEWAY, "gateway.yaml", Place.ROUTES).gateways
    state = FleetState("test", (member,), gateways=gateways, http_routes=http_routes)
    return translate(state, PROFILE)[typeurls.ROUTE]["default/gw:10080"]


def equivalent(rules: str) -> tuple[HTTPRoute, ...]:
    route = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [shop.example.com]
  rules:
{rules}"""
    return parse_file(route, "route.yaml", Place.ROUTES).http_routes


CASES = {
    "header with a value, and a weight": (
        {"canary-by-header": "X-Canary", "canary-by-header-value": "yes", "canary-weight": "20"},
        """\
  - matches: [{path: {value: /}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: shop-v2, port: 80}]
  - matches: [{path: {value: /}}]
    backendRefs: [{name: shop, port: 80, weight: 80}, {name: shop-v2, port: 80, weight: 20}]
""",
    ),
    "header always or never, a cookie, and a weight out of 1000": (
        {
            "canary-by-header": "X-Canary",
            "canary-by-cookie": "canary",
            "canary-weight": "5",
            "canary-weight-total": "1000",
        },
        r"""
  - matches: [{path: {value: /}, headers: [{name: x-canary, value: always}]}]
    backendRefs: [{name: shop-v2, port: 80}]
  - matches: [{path: {value: /}, headers: [{name: x-canary, value: never}]}]
    backendRefs: [{name: shop, port: 80}]
  - matches:
    - path: {value: /}
      headers: [{name: cookie, type: RegularExpression, value: '^(.*;\s*)?canary=always(;.*)?$'}]
    backendRefs: [{name: shop-v2, port: 80}]
  - matches:
    - path: {value: /}
      headers: [{name: cookie, type: RegularExpression, value: '^(.*;\s*)?canary=never(;.*)?$'}]
    backendRefs: [{name: shop, port: 80}]
  - matches: [{path: {value: /}}]
    backendRefs: [{name: shop, port: 80, weight: 995}, {name: shop-v2, port: 80, weight: 5}]
""",
    ),
    "no canary": (
        None,
        """\
  - matches: [{path: {value: /}}]
    backendRefs: [{name: shop, port: 80}]
""",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_canary_annotations_give_the_routes_of_the_httproute_equivalent(case: str) -> None:
    annotations, rules = CASES[case]
    ingresses = [parse_ingress(ingress("shop", "shop"))]
    if annotations is not None:
        ingresses.append(parse_ingress(ingress("shop-canary", "shop-v2", canary=annotations)))
    gateways = parse_file(GATEWAY, "gateway.yaml", Place.ROUTES).gateways
    from_ingress = routes(ingresses, gateways)
    assert served(from_ingress) == served(equivalent(rules))


def test_an_ingress_no_gateway_serves_is_left_out_and_so_is_a_lonely_canary() -> None:
    gateways = parse_file(GATEWAY, "gateway.yaml", Place.ROUTES).gateways
    other = ingress("other", "shop")
    other["spec"]["ingressClassName"] = "nginx"
    canary = ingress("canary", "shop-v2", canary={"canary-weight": "50"})
    assert routes([parse_ingress(other), parse_ingress(canary)], gateways) == ()


def test_the_class_annotation_still_counts_and_a_default_backend_serves_any_host() -> None:
    gateways = parse_file(GATEWAY, "gateway.yaml", Place.ROUTES).gateways
    old = ingress(
        "old", "shop", defaultBackend={"service": {"name": "shop-v2", "port": {"number": 80}}}
    )
    del old["spec"]["ingressClassName"]
    old["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "xdsfleet"
    by_host, any_host = routes([parse_ingress(old)], gateways)
    assert (by_host.name, by_host.hostnames) == ("old-0", ("shop.example.com",))
    assert (any_host.name, any_host.hostnames) == ("old-1", ())
    assert any_host.rules[0].backend_refs[0].name == "shop-v2"


def test_what_cannot_be_served_as_written_is_refused_with_its_field() -> None:
    bad = ingress("shop", "shop", canary={"canary-weight": "lots"})
    bad["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "http"}
    with pytest.raises(InvalidInput) as refused:
        parse_ingress(bad)
    assert [str(p) for p in refused.value.problems] == [
        "fleet cluster: Ingress default/shop: spec.rules[0].http.paths[0].backend.service.port: "
        "only port numbers are supported (not names)",
        'fleet cluster: Ingress default/shop: metadata.annotations["'
        f"{NGINX}canary-weight\"]: not a number: 'lots'",
    ]
