"""The command line as a user meets it: exit codes, output formats, and the files it generated."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from xdsfleet.cache import typeurls
from xdsfleet.cli import app
from xdsfleet.documents.manifests import parse_file

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "fleet.yaml"
runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "render", "validate", "bootstrap"):
        assert command in result.output


def test_validate_accepts_the_example_fleet() -> None:
    result = runner.invoke(app, ["validate", "--fleet", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "3 members" in result.output


def test_validate_parses_each_file_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # At 50,000 endpoints parsing is all validate costs: it must not parse the fleet again
    # to count what it holds.
    parsed: list[str] = []

    def counting(text: str, path: str, *args: object) -> object:
        parsed.append(path)
        return parse_file(text, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("xdsfleet.sources.files.parse_file", counting)

    assert runner.invoke(app, ["validate", "--fleet", str(EXAMPLE)]).exit_code == 0
    assert parsed
    assert len(parsed) == len(set(parsed))


def test_validate_without_a_fleet_checks_the_built_in_one() -> None:
    assert runner.invoke(app, ["validate"]).exit_code == 0


def test_validate_names_file_object_and_field_and_exits_non_zero(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "apiVersion: xdsfleet.io/v1alpha1\nkind: Fleet\nmetadata: {name: broken}\n"
        "spec:\n  members:\n  - {name: a, region: r, zone: z, wieght: 2}\n"
    )
    result = runner.invoke(app, ["validate", "--fleet", str(fleet)])
    assert result.exit_code == 1
    assert str(fleet) in result.output
    assert "Fleet broken" in result.output
    assert "wieght" in result.output


def test_validate_prints_its_success_on_stdout_and_json_for_pipelines() -> None:
    text = runner.invoke(app, ["validate", "--fleet", str(EXAMPLE)])
    assert text.stdout.startswith(f"valid {EXAMPLE}: 3 members")
    assert text.stderr == ""

    result = runner.invoke(app, ["validate", "--fleet", str(EXAMPLE), "-o", "json"])
    report = json.loads(result.stdout)
    assert (report["valid"], report["problems"], report["counts"]["members"]) == (True, [], 3)


def test_validate_json_lists_every_problem_with_its_place_and_a_suggestion(
    tmp_path: Path,
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "apiVersion: xdsfleet.io/v1alpha1\nkind: Fleet\nmetadata: {name: broken}\n"
        "spec:\n  members:\n  - {name: a, region: r, zone: z, wieght: 2}\n"
    )
    result = runner.invoke(app, ["validate", "--fleet", str(fleet), "-o", "json"])

    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert {
        "file": str(fleet),
        "object": "Fleet broken",
        "field": "spec.members[0].wieght",
        "message": "unknown field; did you mean weight?",
        "severity": "error",
    } in problems


def test_render_json_lists_resources_sorted_by_type_and_name() -> None:
    result = runner.invoke(
        app, ["render", "--fleet", str(EXAMPLE), "--gateway", "default/demo", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["typeUrl"], r["name"]) for r in rows] == sorted(
        (r["typeUrl"], r["name"]) for r in rows
    )
    # The demo fleet has no HTTPS listener, so no certificates.
    assert {r["typeUrl"] for r in rows} == set(typeurls.ORDER) - {typeurls.SECRET}
    assert all(set(r) == {"typeUrl", "name", "version", "resource"} for r in rows)
    clusters = [r for r in rows if r["typeUrl"] == typeurls.CLUSTER]
    assert [c["name"] for c in clusters] == ["default/shop:80"]


def test_render_yaml_carries_the_same_rows_as_json() -> None:
    args = ["render", "--fleet", str(EXAMPLE), "--role", "sidecar", "--zone", "eu-west-1a"]
    as_yaml = yaml.safe_load(runner.invoke(app, [*args, "-o", "yaml"]).output)
    as_json = json.loads(runner.invoke(app, [*args, "-o", "json"]).output)
    assert as_yaml == as_json


def test_render_refuses_a_malformed_gateway_reference() -> None:
    result = runner.invoke(app, ["render", "--gateway", "no-namespace"])
    assert result.exit_code == 2
    assert "NAMESPACE/NAME" in result.output


def test_render_without_gateway_uses_the_fleets_only_gateway() -> None:
    unnamed = runner.invoke(app, ["render", "--fleet", str(EXAMPLE), "-o", "json"])
    named = runner.invoke(
        app, ["render", "--fleet", str(EXAMPLE), "--gateway", "default/demo", "-o", "json"]
    )
    assert unnamed.exit_code == 0, unnamed.output
    assert json.loads(unnamed.output) == json.loads(named.output)


def test_render_and_explain_name_the_gateways_when_the_one_asked_for_is_missing() -> None:
    for command in (["render"], ["explain", "--host", "shop.example.com"]):
        result = runner.invoke(app, [*command, "--fleet", str(EXAMPLE), "--gateway", "x/y"])
        assert result.exit_code == 2
        assert "no Gateway x/y" in result.output
        assert "default/demo" in result.output


def test_render_says_when_its_filters_match_nothing_and_names_what_there_is() -> None:
    args = ["render", "--fleet", str(EXAMPLE), "--type", "lds", "--name", "default/dmeo*"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == []
    assert "no resource matches --type/--name (names: default/demo:10080)" in result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_envoy_bootstraps_are_what_bootstrap_prints(path: Path) -> None:
    header, _, body = path.read_text().partition("\n")
    command = header.removeprefix("# Generated: xdsfleet ")
    result = runner.invoke(app, shlex.split(command))
    assert result.exit_code == 0, result.output
    assert result.stdout == body


def test_proxyless_bootstrap_is_grpc_format() -> None:
    result = runner.invoke(
        app,
        ["bootstrap", "--role", "proxyless", "--xds-address", "xds.example:18000", "-o", "json"],
    )
    boot = json.loads(result.stdout)
    assert boot["xds_servers"][0]["server_uri"] == "xds.example:18000"
    assert boot["node"]["metadata"]["xdsfleet.io/role"] == "proxyless"


def test_validate_counts_one_of_each_in_the_singular(tmp_path: Path) -> None:
    from fleets import FleetFiles, MemberSpec, Pod

    files = FleetFiles(
        root=tmp_path,
        members=[MemberSpec("east", "eu-west", "eu-west-1a", {"shop": [Pod("10.0.0.1")]})],
        target_port=8080,
        listener_port=8000,
        policies={
            "shop": {
                "targetRefs": [{"group": "", "kind": "Service", "name": "shop"}],
                "members": [{"name": "east", "weight": 2}],
            }
        },
    )
    files.write()
    text = runner.invoke(app, ["validate", "--fleet", str(files.fleet)])

    assert "1 member, 1 gateway, 1 HTTP route, 0 gRPC routes, 1 traffic policy" in text.stdout
