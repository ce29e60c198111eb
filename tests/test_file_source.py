"""The file source: loading a fleet from disk, and following its edits file by file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from xdsfleet.documents.manifests import FileContents, parse_file
from xdsfleet.model.errors import InvalidInput
from xdsfleet.model.fleet import FleetState
from xdsfleet.sources.files import (
    FileSource,
    ParseCache,
    builtin_fleet_path,
    load_fleet,
    validate_fleet,
)

ROUTES = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: demo, namespace: default}
spec:
  gatewayClassName: xdsfleet
  listeners: [{name: http, port: 10080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: demo}]
  hostnames: [HOSTNAME]
  rules: [{backendRefs: [{name: shop, port: 80}]}]
"""


def fleet_text(*members: str) -> str:
    entries = "".join(
        f"  - {{name: {m}, region: eu, zone: {m}-1, source: {{manifests: members/{m}}}}}\n"
        for m in members
    )
    return (
        "apiVersion: xdsfleet.io/v1alpha1\nkind: Fleet\nmetadata: {name: test}\n"
        f"spec:\n  source: {{manifests: routes}}\n  members:\n{entries}"
    )


def service_text(name: str, *addresses: str) -> str:
    """A Service with an EndpointSlice of `addresses`, exported."""
    endpoints = "".join(f"  - addresses: [{a}]\n" for a in addresses) or "  []\n"
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
{endpoints}---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: default}}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_fleet(root: Path, members: Mapping[str, str] | None = None) -> Path:
    """A fleet in `root`: each member gets `shop.yaml` with the given text (by default zone-a
    runs shop at 10.0.0.1); the routes directory holds a Gateway and a route to shop."""
    members = members or {"zone-a": service_text("shop", "10.0.0.1")}
    for name, text in members.items():
        write(root / "members" / name / "shop.yaml", text)
    write(root / "routes" / "gateway.yaml", hostname_routes("shop.example.com"))
    return write(root / "fleet.yaml", fleet_text(*members))


def hostname_routes(hostname: str) -> str:
    return ROUTES.replace("HOSTNAME", hostname)


def addresses(state: FleetState, member: str = "zone-a") -> list[str]:
    (member_state,) = [m for m in state.members if m.member.name == member]
    return [
        address
        for endpoint_slice in member_state.endpoint_slices
        for endpoint in endpoint_slice.endpoints
        for address in endpoint.addresses
    ]


def hostnames(state: FleetState) -> list[str]:
    return [hostname for route in state.http_routes for hostname in route.hostnames]


# --- The parse cache -------------------------------------------------------------------------


def test_a_restart_reuses_the_parses_of_unchanged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    cache = ParseCache(tmp_path / "cache")
    first = load_fleet(fleet, cache)
    write(fleet.parent / "members" / "zone-a" / "shop.yaml", service_text("shop", "10.0.0.7"))
    parsed: list[str] = []

    def counting(text: str, file: str, *args: Any) -> FileContents:
        parsed.append(Path(file).name)
        return parse_file(text, file, *args)

    monkeypatch.setattr("xdsfleet.sources.files.parse_file", counting)
    again = load_fleet(fleet, ParseCache(tmp_path / "cache"))  # a new process would start so

    assert parsed == ["shop.yaml"]  # the edited file only
    assert addresses(again.state) == ["10.0.0.7"]
    assert again.state.http_routes == first.state.http_routes


def test_entries_of_another_parser_are_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package version stays the same between commits; a changed model or parser must not
    read entries pickled by the old one."""
    fleet = make_fleet(tmp_path / "fleet")
    load_fleet(fleet, ParseCache(tmp_path / "cache"))
    monkeypatch.setattr("xdsfleet.sources.files._BUILD", "another parser")
    parsed: list[str] = []

    def counting(text: str, file: str, *args: Any) -> FileContents:
        parsed.append(Path(file).name)
        return parse_file(text, file, *args)

    monkeypatch.setattr("xdsfleet.sources.files.parse_file", counting)
    load_fleet(fleet, ParseCache(tmp_path / "cache"))

    assert "shop.yaml" in parsed


def test_the_parser_key_follows_the_model_and_parser_source(tmp_path: Path) -> None:
    import shutil

    from xdsfleet.sources import files

    package = Path(files.__file__).resolve().parent.parent
    copy = tmp_path / "xdsfleet"
    for name in ("model", "documents", "sources"):
        shutil.copytree(package / name, copy / name)
    assert files._build(copy) == files._BUILD
    model = copy / "model" / "fleet.py"
    model.write_text(model.read_text() + "\n# a field added\n")

    assert files._build(copy) != files._BUILD


def test_an_unreadable_cache_entry_is_parsed_again(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    cache = ParseCache(tmp_path / "cache")
    first = load_fleet(fleet, cache)
    for entry in (tmp_path / "cache").iterdir():
        entry.write_bytes(b"not a pickle")

    assert load_fleet(fleet, cache).state == first.state


def test_an_invalid_file_is_not_cached_and_still_rejected(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    write(fleet.parent / "routes" / "broken.yaml", "kind: HTTPRoute\nspec: [\n")
    cache = ParseCache(tmp_path / "cache")
    for _ in range(2):
        with pytest.raises(InvalidInput, match=r"broken\.yaml"):
            load_fleet(fleet, cache)


def test_worker_processes_parse_as_this_process_does_and_fill_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {f"zone-{c}": service_text("shop", f"10.0.0.{i}") for i, c in enumerate("abc", 1)}
    fleet = make_fleet(tmp_path / "fleet", members)
    broken = write(fleet.parent / "routes" / "broken.yaml", "kind: HTTPRoute\nspec: [\n")
    with pytest.raises(InvalidInput) as alone:
        load_fleet(fleet)
    broken.unlink()
    expected = load_fleet(fleet)
    # From here the files of the directories are parsed in worker processes (the Fleet file,
    # alone, here): a parse of one in this process would fail.

    def fleet_only(text: str, file: str, *args: Any) -> FileContents:
        assert file == str(fleet), f"{file} parsed in the server's process"
        return parse_file(text, file, *args)

    monkeypatch.setattr("xdsfleet.sources.files.POOL_MIN_BYTES", 0)
    monkeypatch.setattr("xdsfleet.sources.files.parse_file", fleet_only)
    write(broken, "kind: HTTPRoute\nspec: [\n")
    with pytest.raises(InvalidInput) as pooled:
        load_fleet(fleet)
    assert pooled.value.problems == alone.value.problems
    broken.unlink()
    cache = ParseCache(tmp_path / "cache")

    assert load_fleet(fleet, cache) == expected
    assert len(list((tmp_path / "cache").glob("*.pkl"))) == 5  # the workers kept theirs

    def no_workers(*args: Any) -> None:
        raise AssertionError("parsed again although every file is in the cache")

    monkeypatch.setattr("xdsfleet.sources.files._parse_in_workers", no_workers)
    assert load_fleet(fleet, cache) == expected  # from the cache


# --- Loading ---------------------------------------------------------------------------------


def test_load_fleet_reads_the_fleet_its_members_and_routes(tmp_path: Path) -> None:
    loaded = load_fleet(make_fleet(tmp_path))
    assert loaded.state.name == "test"
    assert addresses(loaded.state) == ["10.0.0.1"]
    assert loaded.state.members[0].member.manifests == str(tmp_path / "members" / "zone-a")
    assert hostnames(loaded.state) == ["shop.example.com"]
    route_file = str(tmp_path / "routes" / "gateway.yaml")
    assert loaded.origins["HTTPRoute default/shop"] == route_file


def test_a_symlinked_fleet_file_finds_the_directories_beside_its_target(tmp_path: Path) -> None:
    target = make_fleet(tmp_path / "real")
    link = tmp_path / "elsewhere" / "fleet.yaml"
    link.parent.mkdir()
    link.symlink_to(target)
    assert addresses(load_fleet(link).state) == ["10.0.0.1"]


def test_load_fleet_reports_every_problem_in_every_file(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"zone-a": "kind: Service\n", "zone-b": "a: [\n"})
    with pytest.raises(InvalidInput) as raised:
        load_fleet(fleet)
    assert {p.file for p in raised.value.problems} == {
        str(tmp_path / "members" / "zone-a" / "shop.yaml"),
        str(tmp_path / "members" / "zone-b" / "shop.yaml"),
    }


def test_a_missing_member_directory_is_reported_on_the_fleet_file(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    shutil.rmtree(tmp_path / "members" / "zone-a")
    with pytest.raises(InvalidInput) as raised:
        load_fleet(fleet)
    (problem,) = raised.value.problems
    assert (problem.file, problem.obj, problem.field) == (
        str(fleet),
        "Fleet test",
        "spec.members[0].source.manifests",
    )


def test_a_missing_fleet_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as raised:
        load_fleet(tmp_path / "fleet.yaml")
    (problem,) = raised.value.problems
    assert problem.file == str(tmp_path / "fleet.yaml")
    assert "cannot read" in problem.message


def test_only_visible_yaml_files_are_read(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    directory = tmp_path / "members" / "zone-a"
    write(directory / "cart.yml", service_text("cart", "10.0.0.2"))
    write(directory / "notes.txt", "not yaml: [")
    write(directory / ".shop.yaml.swp.yaml", "not yaml: [")
    assert addresses(load_fleet(fleet).state) == ["10.0.0.2", "10.0.0.1"]


def test_an_object_defined_in_two_files_is_reported_on_the_later_one(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    copy = write(tmp_path / "members" / "zone-a" / "z.yaml", service_text("shop", "10.0.0.9"))
    with pytest.raises(InvalidInput) as raised:
        load_fleet(fleet)
    assert {(p.file, p.field) for p in raised.value.problems} == {(str(copy), "metadata.name")}


def test_validate_fleet_reports_references_with_the_route_file(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"zone-a": service_text("cart", "10.0.0.1")})
    (problem,) = validate_fleet(fleet)
    assert (problem.file, problem.obj, problem.field) == (
        str(tmp_path / "routes" / "gateway.yaml"),
        "HTTPRoute default/shop",
        "spec.rules[0].backendRefs[0]",
    )


def test_a_route_may_also_attach_to_another_controllers_gateway(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    # Envoy Gateway's, with a listener xdsfleet would refuse; the route also names it.
    routes = tmp_path / "routes" / "gateway.yaml"
    istio = ROUTES.split("---")[0].replace("demo", "mesh").replace("xdsfleet", "eg")
    istio = istio.replace("protocol: HTTP", "protocol: HTTP, tls: {mode: Passthrough}")
    text = hostname_routes("shop.example.com").replace(
        "[{name: demo}]", "[{name: demo}, {name: mesh}]"
    )
    write(routes, f"{istio}---\n{text}")
    assert validate_fleet(fleet) == []
    state = load_fleet(fleet).state
    assert [g.name for g in state.gateways] == ["demo"]
    assert state.foreign_gateways == (("default", "mesh"),)


def test_validate_fleet_returns_parse_problems(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"zone-a": "kind: Service\n"})
    assert [p.field for p in validate_fleet(fleet)] == ["apiVersion", "metadata", "spec"]


def test_the_builtin_fleet_is_valid() -> None:
    assert validate_fleet(builtin_fleet_path()) == []


def test_the_builtin_fleet_runs_shop_in_three_members() -> None:
    state = load_fleet(builtin_fleet_path()).state
    assert [(m.member.name, m.member.region, m.member.zone) for m in state.members] == [
        ("idc", "on-prem", "dc1"),
        ("zone-a", "eu-west", "eu-west-1a"),
        ("zone-b", "eu-west", "eu-west-1b"),
    ]
    assert addresses(state, "zone-a") == ["127.0.1.1", "127.0.1.2"]
    assert addresses(state, "zone-b") == ["127.0.2.1", "127.0.2.2"]
    assert addresses(state, "idc") == ["127.0.3.1"]
    assert all(m.exports == (("default", "shop"),) for m in state.members)


def test_the_example_fleet_is_the_builtin_fleet() -> None:
    example = Path(__file__).parent.parent / "examples" / "fleet.yaml"
    assert load_fleet(example).state == load_fleet(builtin_fleet_path()).state


# --- Following -------------------------------------------------------------------------------


class States:
    """Collects what the source hands over; `next` waits for one, with a deadline."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[FleetState] = asyncio.Queue()

    def __call__(self, state: FleetState) -> None:
        self._queue.put_nowait(state)

    async def next(self) -> FleetState:
        return await asyncio.wait_for(self._queue.get(), timeout=10)


@contextlib.asynccontextmanager
async def following(fleet: Path) -> AsyncIterator[tuple[FileSource, States, FleetState]]:
    """A running source, its states, and the first one."""
    source = FileSource(fleet)
    states = States()
    task = asyncio.create_task(source.run(states), name="file-source")
    try:
        yield source, states, await states.next()
    finally:
        source.stop()
        await asyncio.wait_for(task, timeout=10)


async def test_the_source_hands_over_the_loaded_state_first(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    with capture_logs() as logs:
        async with following(fleet) as (_, _, first):
            assert first == load_fleet(fleet).state
    assert {"event": "source_loaded", "fleet": str(fleet), "members": 1, "files": 3}.items() <= (
        logs[0].items()
    )


async def test_the_source_does_not_start_on_an_invalid_fleet(tmp_path: Path) -> None:
    source = FileSource(make_fleet(tmp_path, {"zone-a": "kind: Service\n"}))
    try:
        with pytest.raises(InvalidInput):
            await source.run(States())
    finally:
        source.stop()


async def test_an_edited_member_file_changes_the_state(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    shop = tmp_path / "members" / "zone-a" / "shop.yaml"
    with capture_logs() as logs:
        async with following(fleet) as (_, states, _):
            write(shop, service_text("shop", "10.0.0.1", "10.0.0.2"))
            assert addresses(await states.next()) == ["10.0.0.1", "10.0.0.2"]
    (changed,) = [e for e in logs if e["event"] == "source_changed"]
    assert changed["files"] == [str(shop)]


async def test_an_edited_routes_file_changes_the_routes(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    async with following(fleet) as (_, states, _):
        write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
        assert hostnames(await states.next()) == ["www.example.com"]


async def test_an_invalid_edit_is_rejected_while_other_files_still_apply(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    shop = tmp_path / "members" / "zone-a" / "shop.yaml"
    with capture_logs() as logs:
        async with following(fleet) as (source, states, _):
            write(shop, service_text("shop", "10.0.0.300"))
            # Written after the bad edit, so its state shows that the bad edit was handled.
            write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
            state = await states.next()
            assert hostnames(state) == ["www.example.com"]
            assert addresses(state) == ["10.0.0.1"]
            assert [(p.file, p.field) for p in source.problems] == [
                (str(shop), "endpoints[0].addresses[0]")
            ]
    (rejected,) = [e for e in logs if e["event"] == "source_rejected"]
    assert rejected["file"] == str(shop)
    assert rejected["problems"] == [str(p) for p in source.problems]


async def test_a_rejected_file_is_used_again_once_fixed(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    shop = tmp_path / "members" / "zone-a" / "shop.yaml"
    with capture_logs() as logs:
        async with following(fleet) as (source, states, _):
            write(shop, "apiVersion: v1\nkind: Service\nspec: [\n")
            write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
            await states.next()
            assert source.problems
            write(shop, service_text("shop", "10.0.0.7"))
            assert addresses(await states.next()) == ["10.0.0.7"]
            assert source.problems == ()
    assert [e["file"] for e in logs if e["event"] == "source_recovered"] == [str(shop)]


async def test_an_added_file_adds_its_objects(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    async with following(fleet) as (_, states, _):
        write(tmp_path / "members" / "zone-a" / "cart.yaml", service_text("cart", "10.0.0.5"))
        state = await states.next()
        assert [s.name for s in state.members[0].services] == ["cart", "shop"]


async def test_a_removed_file_removes_its_objects(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    async with following(fleet) as (_, states, _):
        (tmp_path / "members" / "zone-a" / "shop.yaml").unlink()
        state = await states.next()
        assert state.members[0].services == ()


async def test_a_member_added_to_the_fleet_is_loaded_and_followed(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    zone_b = write(tmp_path / "members" / "zone-b" / "shop.yaml", service_text("shop", "10.0.1.1"))
    async with following(fleet) as (_, states, _):
        write(fleet, fleet_text("zone-a", "zone-b"))
        assert addresses(await states.next(), "zone-b") == ["10.0.1.1"]
        write(zone_b, service_text("shop", "10.0.1.2"))
        assert addresses(await states.next(), "zone-b") == ["10.0.1.2"]


async def test_a_member_directory_created_after_the_fleet_names_it_is_read(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    async with following(fleet) as (source, states, _):
        write(fleet, fleet_text("zone-a", "zone-b"))
        assert addresses(await states.next(), "zone-b") == []
        assert [p.field for p in source.problems] == ["spec.members[1].source.manifests"]
        write(tmp_path / "members" / "zone-b" / "shop.yaml", service_text("shop", "10.0.1.1"))
        assert addresses(await states.next(), "zone-b") == ["10.0.1.1"]
        assert source.problems == ()


async def test_a_member_removed_from_the_fleet_disappears(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, {"zone-a": service_text("shop", "10.0.0.1"), "zone-b": ""})
    async with following(fleet) as (_, states, _):
        write(fleet, fleet_text("zone-a"))
        state = await states.next()
        assert [m.member.name for m in state.members] == ["zone-a"]


async def test_a_deleted_member_directory_keeps_the_members_objects(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    with capture_logs() as logs:
        async with following(fleet) as (source, states, _):
            shutil.rmtree(tmp_path / "members" / "zone-a")
            write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
            state = await states.next()
            assert addresses(state) == ["10.0.0.1"]
            assert [p.field for p in source.problems] == ["spec.members[0].source.manifests"]
    assert [e["file"] for e in logs if e["event"] == "source_inconsistent"] == [str(fleet)]


async def test_an_invalid_fleet_file_keeps_the_last_good_fleet(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    async with following(fleet) as (source, states, _):
        write(fleet, fleet_text("Zone-A"))
        write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
        state = await states.next()
        assert [m.member.name for m in state.members] == ["zone-a"]
        assert [(p.file, p.field) for p in source.problems] == [
            (str(fleet), "spec.members[0].name")
        ]


async def test_an_edit_that_changes_nothing_is_not_handed_over(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    shop = tmp_path / "members" / "zone-a" / "shop.yaml"
    async with following(fleet) as (_, states, _):
        write(shop, "# a comment changes no object\n" + shop.read_text())
        write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
        # The first state handed over after both edits is the route's.
        assert hostnames(await states.next()) == ["www.example.com"]


async def test_a_new_file_that_redefines_an_object_is_rejected(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    copy = tmp_path / "members" / "zone-a" / "a-copy.yaml"
    async with following(fleet) as (source, states, _):
        write(copy, service_text("shop", "10.0.0.9"))
        write(tmp_path / "routes" / "gateway.yaml", hostname_routes("www.example.com"))
        state = await states.next()
        assert addresses(state) == ["10.0.0.1"]
        assert {(p.file, p.field) for p in source.problems} == {(str(copy), "metadata.name")}


async def test_a_service_removed_from_under_its_slice_is_applied_and_reported(
    tmp_path: Path,
) -> None:
    text = service_text("shop", "10.0.0.1").split("---\n")
    fleet = make_fleet(tmp_path, {"zone-a": "---\n".join(text[1:])})
    service = write(tmp_path / "members" / "zone-a" / "service.yaml", text[0])
    slices = tmp_path / "members" / "zone-a" / "shop.yaml"
    with capture_logs() as logs:
        async with following(fleet) as (source, states, _):
            service.unlink()
            state = await states.next()
            assert state.members[0].services == ()
            assert addresses(state) == ["10.0.0.1"]
            assert [(p.file, p.field) for p in source.problems] == [
                (str(slices), 'metadata.labels["kubernetes.io/service-name"]')
            ]
    assert [e["file"] for e in logs if e["event"] == "source_inconsistent"] == [str(slices)]
