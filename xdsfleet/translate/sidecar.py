"""Sidecar outbound routes: one listener per service port number, one virtual host per service.

An application reaches a service through its sidecar at 127.0.0.1 on the service's port, naming
the service in the Host header (`SVC.NS.svc.clusterset.local`, the Multi-Cluster Services name,
or a shorter form). Which services a sidecar gets is the Fleet's TrafficPolicy scope, or every
exported service. Plans only: messages come from `routes` and `listeners`.
"""

from __future__ import annotations

from collections.abc import Iterable

from xdsfleet.model.fleet import RouteMatch
from xdsfleet.translate.rules import Planner, RoutePlan, VirtualHostPlan
from xdsfleet.translate.services import ServicePortKey
from xdsfleet.translate.steps import Steps

# Services planned between two yields (~10 us each).
SERVICES_STEP = 128


def service_domains(key: ServicePortKey) -> tuple[str, ...]:
    """The names an application may call a service by (without port: the listener strips it)."""
    base = f"{key.service}.{key.namespace}"
    return (f"{base}.svc.clusterset.local", f"{base}.svc.cluster.local", f"{base}.svc", base)


def plan_outbound(
    keys: Iterable[ServicePortKey], planner: Planner
) -> Steps[dict[int, tuple[VirtualHostPlan, ...]]]:
    """Port -> the virtual hosts of the services on that port. Yields every `SERVICES_STEP`
    services."""
    by_port: dict[int, list[VirtualHostPlan]] = {}
    for done, key in enumerate(sorted(keys), 1):
        plan = RoutePlan(RouteMatch(), planner.service(key), f"Service {key.cluster}")
        host = VirtualHostPlan(key.cluster, service_domains(key), (plan,))
        by_port.setdefault(key.port, []).append(host)
        if done % SERVICES_STEP == 0:
            yield
    return {port: tuple(hosts) for port, hosts in sorted(by_port.items())}
