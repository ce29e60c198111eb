"""One node profile's complete resource set: which resources a role gets, from the builders.

This module only selects and assembles; every message comes from a memoised builder, so an
unchanged resource is the same object as in the previous generation.
"""

from __future__ import annotations

from xdsfleet.cache import types
from xdsfleet.model.fleet import FleetState, Gateway
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.translate import routes
from xdsfleet.translate.clusters import cluster
from xdsfleet.translate.endpoints import assignment
from xdsfleet.translate.listeners import gateway_listener, proxyless_listener
from xdsfleet.translate.localities import view_of
from xdsfleet.translate.memo import start_generation
from xdsfleet.translate.names import gateway_listener_name, proxyless_listener_name
from xdsfleet.translate.proto import Message
from xdsfleet.translate.services import ServiceIndex, ServicePortKey, service_index

Resources = dict[str, dict[str, Message]]


def translate(state: FleetState, profile: NodeProfile) -> Resources:
    """Type URL -> resource name -> message, for every type of `cache.types.ORDER`.

    Pure and deterministic. The messages are shared with other profiles and generations:
    callers must never mutate them.
    """
    start_generation(state)
    index = service_index(state)
    resources: Resources = {type_url: {} for type_url in types.ORDER}
    if profile.role is Role.GATEWAY:
        gateway = _gateway(state, profile.gateway)
        if gateway is None:
            return resources
        keys = _add_gateway(resources, state, gateway, index)
    else:
        keys = set(index)
        if profile.role is Role.PROXYLESS:
            _add_proxyless(resources, index)
    view = view_of(profile)
    for key in sorted(keys):
        port = index[key]
        resources[types.CLUSTER][key.cluster] = cluster(key.cluster, port.http2)
        resources[types.ENDPOINT][key.cluster] = assignment(port, view)
    return resources


def _gateway(state: FleetState, ref: str | None) -> Gateway | None:
    if ref is None:
        return None
    namespace, _, name = ref.partition("/")
    return next((g for g in state.gateways if (g.namespace, g.name) == (namespace, name)), None)


def _add_gateway(
    resources: Resources, state: FleetState, gateway: Gateway, index: ServiceIndex
) -> set[ServicePortKey]:
    """Add the gateway's listeners and routes; return the service ports they send to."""
    used: set[ServicePortKey] = set()
    for listener in gateway.listeners:
        # Only plaintext HTTP for now: HTTPS and TLS listeners need certificates we do not
        # serve yet, and serving them in plaintext would be worse than not at all.
        if listener.protocol != "HTTP":
            continue
        name = gateway_listener_name(gateway.namespace, gateway.name, listener.name)
        attached = routes.attached(gateway, listener, state.http_routes)
        resolved = frozenset(k for k in routes.referenced(attached) if k in index)
        resources[types.LISTENER][name] = gateway_listener(name, listener.port)
        resources[types.ROUTE][name] = routes.route_configuration(
            name, listener.hostname, attached, resolved
        )
        used |= routes.used_service_ports(attached, resolved)
    return used


def _add_proxyless(resources: Resources, index: ServiceIndex) -> None:
    """Add one listener per service port: the targets gRPC clients dial."""
    for key in index:
        name = proxyless_listener_name(key.service, key.namespace, key.port)
        resources[types.LISTENER][name] = proxyless_listener(name, key.cluster)
