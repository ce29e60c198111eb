"""References to nothing while serving: the document still applies, and the reference is logged
once when it appears and once when it goes, and counted by where its object came from."""

from __future__ import annotations

from pathlib import Path

from states import EAST, fleet, route, running, to
from structlog.testing import capture_logs
from test_file_source import ROUTES, following, make_fleet, write

from xdsfleet.model.fleet import RouteRule
from xdsfleet.pipeline.unresolved import UnresolvedReporter
from xdsfleet.telemetry import metrics


def counted(source: str) -> float:
    return float(metrics.UNRESOLVED_REFERENCES.labels(source)._value.get())


async def test_a_route_to_a_service_nobody_runs_applies_and_is_reported_with_its_file(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes" / "gateway.yaml"
    async with following(make_fleet(tmp_path)) as (source, states, first):
        reporter = UnresolvedReporter(lambda: source.origins)
        with capture_logs() as logs:
            reporter.check(first)
            write(
                routes,
                ROUTES.replace("HOSTNAME", "shop.example.com").replace("shop, port", "cart, port"),
            )
            broken = await states.next()
            reporter.check(broken)
            assert counted("files") == 1
            write(routes, ROUTES.replace("HOSTNAME", "shop.example.com"))
            reporter.check(await states.next())

        assert [r.backend_refs[0].name for r in broken.http_routes[0].rules] == ["cart"]
        assert source.problems == ()
    assert counted("files") == 0
    unresolved, resolved = [
        e for e in logs if e["event"] in ("source_unresolved", "source_resolved")
    ]
    assert unresolved == {
        "event": "source_unresolved",
        "log_level": "warning",
        "file": str(routes),
        "object": "HTTPRoute default/shop",
        "field": "spec.rules[0].backendRefs[0]",
        "message": "Service default/cart is not defined by any member",
    }
    assert resolved == {**unresolved, "event": "source_resolved", "log_level": "info"}


def test_a_reference_is_logged_once_however_many_states_carry_it() -> None:
    state = fleet(running(EAST, "10.0.0.1"), http_routes=(route(RouteRule((), (to("nope"),))),))
    reporter = UnresolvedReporter(dict)
    with capture_logs() as logs:
        reporter.check(state)
        reporter.check(fleet(running(EAST, "10.0.0.2"), http_routes=state.http_routes))

    assert [e["event"] for e in logs] == ["source_unresolved"]


def test_an_object_no_file_names_counts_as_from_kubernetes() -> None:
    routes = (route(RouteRule((), (to("nope"),))),)
    UnresolvedReporter(dict).check(fleet(running(EAST, "10.0.0.1"), http_routes=routes))

    assert (counted("kubernetes"), counted("files")) == (1, 0)


def test_endpoint_changes_do_not_check_references_again() -> None:
    asked: list[None] = []

    def origins() -> dict[str, str]:
        asked.append(None)
        return {}

    reporter = UnresolvedReporter(origins)
    reporter.check(fleet(running(EAST, "10.0.0.1")))
    reporter.check(fleet(running(EAST, "10.0.0.1", "10.0.0.2")))
    assert len(asked) == 1
