"""Small fleet states for translation tests: members running one service, policies, a gateway."""

from __future__ import annotations

from typing import Any

from xdsfleet.model.fleet import (
    BackendRef,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Gateway,
    GatewayListener,
    HTTPRoute,
    Member,
    MemberState,
    Node,
    ParentRef,
    RouteRule,
    Service,
    ServicePort,
)
from xdsfleet.model.node import NodeProfile
from xdsfleet.model.policy import PolicySpec, PolicyTarget, TargetKind, TrafficPolicy

NS = "ns"
EAST = Member("east", "r1", "z-east")
WEST = Member("west", "r1", "z-west")
FAR = Member("far", "r2", "z-far")
GATEWAY = Gateway(NS, "gw", "xdsfleet", (GatewayListener("http", 8080),))
# A gateway in r1 without a zone: east and west share its tier, far is the next.
AT_GATEWAY = NodeProfile(gateway=f"{NS}/gw", region="r1")


def running(
    member: Member,
    *addresses: str,
    service: str = "web",
    port_name: str = "http",
    app_protocol: str | None = None,
    node_port: int | None = None,
    nodes: tuple[Node, ...] = (),
    ready: bool = True,
) -> MemberState:
    """`member` exporting port 80 of `service`, with a ready endpoint at each address."""
    service_port = ServicePort(port_name, 80, app_protocol=app_protocol, node_port=node_port)
    return MemberState(
        member,
        services=(Service(NS, service, (service_port,)),),
        endpoint_slices=(
            EndpointSlice(
                NS,
                f"{service}-1",
                service,
                (EndpointPort(port_name, 8080),),
                tuple(Endpoint((a,), ready=ready) for a in addresses),
            ),
        ),
        exports=((NS, service),),
        nodes=nodes,
    )


def serving(
    member: Member, *services: Service, endpoints: tuple[Endpoint, ...] | None = None
) -> MemberState:
    """`member` exporting `services`, each with one slice on port 8000 + the service port:
    `endpoints`, or one ready endpoint of its own."""
    return MemberState(
        member,
        services=services,
        endpoint_slices=tuple(
            EndpointSlice(
                s.namespace,
                f"{s.name}-1",
                s.name,
                tuple(
                    EndpointPort(p.name, 8000 + p.port, p.protocol, p.app_protocol) for p in s.ports
                ),
                endpoints or (Endpoint((f"10.0.0.{len(s.name)}",)),),
            )
            for s in services
        ),
        exports=tuple((s.namespace, s.name) for s in services),
    )


def policy(
    name: str, target: PolicyTarget | None = None, namespace: str = NS, **spec: Any
) -> TrafficPolicy:
    """A policy on Service `web` unless another target is given."""
    target = target or PolicyTarget(TargetKind.SERVICE, "web")
    return TrafficPolicy(namespace, name, (target,), PolicySpec(**spec))


def route(*rules: RouteRule, name: str = "web") -> HTTPRoute:
    return HTTPRoute(NS, name, (ParentRef(NS, "gw"),), (), rules)


def to(service: str = "web", weight: int = 1) -> BackendRef:
    return BackendRef(service, NS, 80, weight=weight)


def fleet(*members: MemberState, **parts: Any) -> FleetState:
    """A fleet of `members` with the gateway and, unless given, a route to `web`."""
    parts.setdefault("http_routes", (route(RouteRule((), (to(),))),))
    return FleetState("f", members, gateways=(GATEWAY,), **parts)
