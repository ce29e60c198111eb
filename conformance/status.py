"""The status assertions of an upstream test, checked against what xdsfleet would write.

Upstream asserts route and Gateway status through a cluster; here the converted fleet is loaded
as `serve` loads files, and the conditions come from the same functions the status writer uses
(`status/conditions.py`), so no cluster is needed. Programmed counts no Envoys here (it is not
asserted by the tests read).
"""

from __future__ import annotations

from pathlib import Path

from conformance.gocases import StatusCheck
from xdsfleet.documents.reading import object_label
from xdsfleet.documents.references import reference_problems
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.fleet import FleetState
from xdsfleet.sources.files import load_fleet
from xdsfleet.status.conditions import Programmed, gateway_verdict, route_affects, route_verdict


def check(checks: list[StatusCheck], fleet: Path) -> list[str]:
    """What is wrong, one line per failed assertion ([] = all hold)."""
    if not checks:
        return []
    try:
        state = load_fleet(fleet).state
    except InvalidInput as error:
        return [f"status: the fleet is refused: {error}"]
    problems: dict[str, dict[str, str]] = {}
    for problem in reference_problems(state, {}):
        problems.setdefault(problem.obj, {})[problem.field] = problem.message
    return [f"status: {wrong}" for c in checks if (wrong := _one(c, state, problems))]


def _one(check: StatusCheck, state: FleetState, problems: dict[str, dict[str, str]]) -> str:
    if check.what == "routes":
        gateway = next((g for g in state.gateways if _key(g) == check.gateway), None)
        if gateway is None:
            return f"Gateway {check.gateway} is not in the fleet"
        attached = sum(x.attached_routes for x in gateway_verdict(state, gateway, 1, []).listeners)
        return "" if attached == check.want else f"{check.gateway}: {attached} routes attached"
    route = next((r for r in state.http_routes if _key(r) == check.route), None)
    if route is None:
        return f"HTTPRoute {check.route} is not in the fleet"
    label = object_label("HTTPRoute", route.namespace, route.name)
    programmed = Programmed.count([], route_affects(state, route))
    verdict = route_verdict(state, route, 1, problems.get(label, {}), programmed)
    parents = list(zip(route.parent_refs, verdict.conditions, strict=True))
    if check.what == "accepted":
        accepted = [
            p.name
            for p, conditions in parents
            for c in conditions
            if c.type == "Accepted" and c.status == "True"
        ]
        return f"{check.route} Accepted by {accepted}" if accepted else ""
    wanted_type, wanted_status, wanted_reason = check.condition or ("", "", "")
    for parent, conditions in parents:
        if f"{parent.namespace}/{parent.name}" != check.gateway:
            continue
        for c in conditions:
            if c.type == wanted_type:
                if c.status == wanted_status and wanted_reason in ("", c.reason):
                    return ""
                return f"{check.route} {c.type}={c.status} ({c.reason}: {c.message})"
    return f"{check.route}: no {wanted_type} condition for {check.gateway}"


def _key(obj: object) -> str:
    return f"{getattr(obj, 'namespace', '')}/{getattr(obj, 'name', '')}"
