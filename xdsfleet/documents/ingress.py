"""Ingresses, with the canary annotations of ingress-nginx, as HTTPRoutes: a compatibility source.

Users of ingress-nginx (and of Alibaba MSE, which reads the same annotations) describe a canary
as a second Ingress for the same host and path, annotated `nginx.ingress.kubernetes.io/canary:
"true"` and, in ingress-nginx's order of precedence:

- `canary-by-header: NAME`: `NAME: always` goes to the canary, `NAME: never` never does; with
  `canary-by-header-value: VALUE`, exactly `NAME: VALUE` goes to the canary instead;
- `canary-by-cookie: NAME`: the cookie `NAME=always` goes to the canary, `NAME=never` never;
- `canary-weight: N` (of `canary-weight-total`, default 100): N parts of the rest go to it.

Each host and path of a main Ingress becomes, in this order, rules matching the header, rules
matching the cookie (a regular expression on the Cookie header: Gateway API has no cookie match)
and the path itself with the weighted backends. An Ingress of class C (`spec.ingressClassName`,
or the older `kubernetes.io/ingress.class` annotation) is served by every Gateway whose
gatewayClassName is C, on all its listeners. Only the canary annotations are read: other
ingress-nginx annotations (rewrites, auth, ...) are not, and `spec.tls` is not served.

It must not do I/O: Ingress JSON in, model objects out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from xdsfleet.documents.reading import JsonObject, object_label
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.model.fleet import (
    BackendRef,
    Gateway,
    HTTPRoute,
    ParentRef,
    PathMatch,
    PathMatchType,
    RouteMatch,
    RouteRule,
    ValueMatch,
    ValueMatchType,
)

ORIGIN = "fleet cluster"
NGINX = "nginx.ingress.kubernetes.io/"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"


@dataclass(frozen=True, slots=True)
class Canary:
    header: str | None = None
    header_value: str | None = None
    cookie: str | None = None
    weight: int = 0
    weight_total: int = 100


@dataclass(frozen=True, slots=True)
class IngressPath:
    host: str | None
    path: PathMatch
    backend: BackendRef


@dataclass(frozen=True, slots=True)
class Ingress:
    namespace: str
    name: str
    class_name: str | None
    paths: tuple[IngressPath, ...]  # spec.defaultBackend last, as `/` for any host
    canary: Canary | None = None


class _Problems:
    def __init__(self, label: str) -> None:
        self.label = label
        self.found: list[Problem] = []

    def add(self, field: str, message: str) -> None:
        self.found.append(Problem(ORIGIN, self.label, field, message))


def _backend(entry: JsonObject, namespace: str, field: str, problems: _Problems) -> BackendRef:
    service = (entry or {}).get("service")
    if not isinstance(service, dict):
        problems.add(field, "only service backends are supported")
        return BackendRef("", namespace, 0)
    port = service.get("port") or {}
    if not isinstance(port.get("number"), int):
        problems.add(f"{field}.service.port", "only port numbers are supported (not names)")
    return BackendRef(str(service.get("name", "")), namespace, int(port.get("number") or 0))


def _path(entry: JsonObject, field: str, problems: _Problems) -> PathMatch:
    value = entry.get("path") or "/"
    kind = entry.get("pathType", "ImplementationSpecific")
    if kind == "Exact":
        return PathMatch(PathMatchType.EXACT, value)
    if kind not in ("Prefix", "ImplementationSpecific"):
        problems.add(f"{field}.pathType", f"unknown path type {kind!r}")
    # ingress-nginx reads ImplementationSpecific as a prefix (without use-regex).
    return PathMatch(PathMatchType.PATH_PREFIX, value)


def _canary(annotations: dict[str, str], problems: _Problems) -> Canary | None:
    if annotations.get(NGINX + "canary") != "true":
        return None

    def number(key: str, default: int) -> int:
        value = annotations.get(NGINX + key)
        if value is None:
            return default
        if not value.isdigit():
            problems.add(f'metadata.annotations["{NGINX}{key}"]', f"not a number: {value!r}")
            return default
        return int(value)

    total = number("canary-weight-total", 100)
    weight = number("canary-weight", 0)
    if total == 0 or weight > total:
        path = f'metadata.annotations["{NGINX}canary-weight"]'
        problems.add(path, f"must be between 0 and canary-weight-total ({total}); got {weight}")
    header = annotations.get(NGINX + "canary-by-header")
    return Canary(
        header=header.lower() if header else None,
        header_value=annotations.get(NGINX + "canary-by-header-value"),
        cookie=annotations.get(NGINX + "canary-by-cookie"),
        weight=weight,
        weight_total=total or 100,
    )


def parse_ingress(obj: JsonObject) -> Ingress:
    """Read an Ingress (networking.k8s.io/v1); raises `InvalidInput` for what cannot be served
    as written (backends by port name, resource backends, bad canary annotations)."""
    metadata = obj.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "default")), str(metadata.get("name", ""))
    problems = _Problems(object_label("Ingress", namespace, name))
    annotations = metadata.get("annotations") or {}
    spec = obj.get("spec") or {}
    paths = []
    for r, rule in enumerate(spec.get("rules") or []):
        for p, entry in enumerate((rule.get("http") or {}).get("paths") or []):
            field = f"spec.rules[{r}].http.paths[{p}]"
            backend = _backend(entry.get("backend"), namespace, f"{field}.backend", problems)
            paths.append(IngressPath(rule.get("host"), _path(entry, field, problems), backend))
    if spec.get("defaultBackend"):
        backend = _backend(spec["defaultBackend"], namespace, "spec.defaultBackend", problems)
        paths.append(IngressPath(None, PathMatch(), backend))
    canary = _canary(annotations, problems)
    if problems.found:
        raise InvalidInput(problems.found)
    class_name = spec.get("ingressClassName") or annotations.get(CLASS_ANNOTATION)
    return Ingress(namespace, name, class_name, tuple(paths), canary)


def _cookie(name: str, value: str) -> ValueMatch:
    """The Cookie header holding `name=value` (RE2 syntax, for Envoy)."""
    pattern = rf"^(.*;\s*)?{re.escape(name)}={re.escape(value)}(;.*)?$"
    return ValueMatch("cookie", pattern, ValueMatchType.REGULAR_EXPRESSION)


def _rules(
    path: PathMatch, main: BackendRef, canary_backend: BackendRef | None, canary: Canary | None
) -> list[RouteRule]:
    if canary is None or canary_backend is None:
        return [RouteRule((RouteMatch(path),), (main,))]

    def on(header: ValueMatch, to: BackendRef) -> RouteRule:
        return RouteRule((RouteMatch(path, headers=(header,)),), (to,))

    rules = []
    if canary.header is not None:
        rules.append(on(ValueMatch(canary.header, canary.header_value or "always"), canary_backend))
        if canary.header_value is None:
            rules.append(on(ValueMatch(canary.header, "never"), main))
    if canary.cookie is not None:
        rules += [on(_cookie(canary.cookie, "always"), canary_backend)]
        rules += [on(_cookie(canary.cookie, "never"), main)]
    backends = [main]
    if canary.weight:
        rest = canary.weight_total - canary.weight
        backends = [replace(main, weight=rest), replace(canary_backend, weight=canary.weight)]
    rules.append(RouteRule((RouteMatch(path),), tuple(backends)))
    return rules


def routes(ingresses: Iterable[Ingress], gateways: Iterable[Gateway]) -> tuple[HTTPRoute, ...]:
    """One HTTPRoute per host of each main Ingress (named after it, `-N` for the Nth host when
    there are several), its canary Ingresses merged in; Ingresses no Gateway serves are left
    out, and so are canaries without a main Ingress for their host and path (as ingress-nginx
    does)."""
    gateways = tuple(gateways)
    ingresses = tuple(ingresses)
    canaries = {
        (i.namespace, i.class_name, p.host, p.path): (i, p.backend)
        for i in ingresses
        if i.canary is not None
        for p in i.paths
    }
    found = []
    for main in sorted(
        (i for i in ingresses if i.canary is None), key=lambda i: (i.namespace, i.name)
    ):
        parents = tuple(
            ParentRef(g.namespace, g.name) for g in gateways if g.gateway_class == main.class_name
        )
        if not parents:
            continue
        hosts = list(dict.fromkeys(p.host for p in main.paths))
        for h, host in enumerate(hosts):
            rules = []
            for p in (p for p in main.paths if p.host == host):
                canary, backend = canaries.get(
                    (main.namespace, main.class_name, host, p.path), (None, None)
                )
                rules += _rules(p.path, p.backend, backend, canary.canary if canary else None)
            name = main.name if len(hosts) == 1 else f"{main.name}-{h}"
            found.append(
                HTTPRoute(main.namespace, name, parents, (host,) if host else (), tuple(rules))
            )
    return tuple(found)
