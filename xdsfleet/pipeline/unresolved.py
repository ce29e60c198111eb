"""Unresolved references in the served fleet, reported while serving as `validate` reports them.

A route to a service no member exports, a policy naming a member not in the Fleet, a parentRef
to no Gateway: such a reference does not reject its document (docs/architecture.md, decision
5), translation skips it. It is still a mistake someone should see: each is logged once when it
appears (`source_unresolved`) and once when it goes (`source_resolved`), and counted in
`xdsfleet_unresolved_references{source}`. The check runs on the state served rather than in
each source, because a reference resolves against all of them at once: a route in a file may
name a Service of a Kubernetes member.

It must not change what is served.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import structlog

from xdsfleet.documents.references import reference_problems
from xdsfleet.model.errors import Problem
from xdsfleet.model.fleet import FleetState
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

# Where the referring object comes from: a file names it (origins), or else the fleet cluster or
# a Kubernetes member.
SOURCES = ("files", "kubernetes")


def _referable(state: FleetState) -> object:
    """All that `reference_problems` reads: everything but endpoints and ramps, which change
    most often and never change what a reference points at."""
    members = tuple((m.member, m.services, m.exports, m.nodes) for m in state.members)
    return (
        state.name,
        state.export_all,
        members,
        state.gateways,
        state.http_routes,
        state.grpc_routes,
        state.policies,
        state.secrets,
    )


class UnresolvedReporter:
    """`check` each state served; `origins` names the file of each object (`LoadedFleet`)."""

    def __init__(self, origins: Callable[[], Mapping[str, str]]) -> None:
        self._origins = origins
        self._checked: object = None
        self._reported: dict[Problem, None] = {}  # ordered, as `reference_problems` found them

    def check(self, state: FleetState) -> None:
        referable = _referable(state)
        if referable == self._checked:
            return
        self._checked = referable
        problems = dict.fromkeys(reference_problems(state, self._origins()))
        for problem in (p for p in problems if p not in self._reported):
            log.warning("source_unresolved", **_fields(problem))
        for problem in (p for p in self._reported if p not in problems):
            log.info("source_resolved", **_fields(problem))
        self._reported = problems
        counts = Counter(SOURCES[0] if p.file else SOURCES[1] for p in problems)
        for source in SOURCES:
            metrics.UNRESOLVED_REFERENCES.labels(source).set(counts[source])


def _fields(problem: Problem) -> dict[str, str]:
    return {
        "file": problem.file,
        "object": problem.obj,
        "field": problem.field,
        "message": problem.message,
    }
