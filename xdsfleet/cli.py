"""The `xdsfleet` command line (docs/architecture.md, "CLI"): thin commands over the pipeline and
tools."""

from __future__ import annotations

import asyncio
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import grpc
import structlog
import typer
import yaml
from rich.console import Console

from xdsfleet.admin.client import AdminClient, Connection
from xdsfleet.documents.reading import did_you_mean
from xdsfleet.model.errors import InvalidInput, Problem, Severity
from xdsfleet.model.fleet import FleetState
from xdsfleet.model.node import (
    NodeProfile,
    ProfileError,
    Role,
    locality_warning,
    profile_from_fields,
)
from xdsfleet.pipeline.serve import Settings, serve
from xdsfleet.pipeline.supervisor import Crashed, Refused
from xdsfleet.server.tls import TlsFiles
from xdsfleet.sources.files import builtin_fleet_path, checked_fleet, load_fleet
from xdsfleet.telemetry import logs
from xdsfleet.tools.bootstrap import ClientTls, Target, bootstrap
from xdsfleet.tools.clients import as_data, config_rows, status_table
from xdsfleet.tools.drill.command import Drill, DrillError
from xdsfleet.tools.drill.command import run as run_drill
from xdsfleet.tools.drill.topology import Fault
from xdsfleet.tools.explain import Request, Scenario, explain, render_explanation
from xdsfleet.tools.render import Kind, redacted, render, select, summary, unnamed_gateway

app = typer.Typer(
    name="xdsfleet",
    help="An Envoy xDS control plane that serves many Kubernetes clusters as one pool.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
log = structlog.get_logger("xdsfleet.cli")


class Output(StrEnum):
    JSON = "json"
    YAML = "yaml"


class RenderOutput(StrEnum):
    JSON = "json"
    YAML = "yaml"
    SUMMARY = "summary"


class Report(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


FleetOption = Annotated[
    Path | None,
    typer.Option(
        "--fleet",
        "-f",
        help="Fleet file (kind: Fleet). Without it, the built-in demo fleet.",
        exists=True,
        dir_okay=False,
    ),
]
RoleOption = Annotated[Role, typer.Option("--role", help="What the client is.")]
GatewayOption = Annotated[
    str | None, typer.Option("--gateway", help="The Gateway a gateway serves, as NS/NAME.")
]
MemberOption = Annotated[
    str | None, typer.Option("--member", help="The member cluster the client runs in.")
]
RegionOption = Annotated[str, typer.Option("--region", help="The client's locality region.")]
ZoneOption = Annotated[str, typer.Option("--zone", help="The client's locality zone.")]


def _fleet_path(fleet: Path | None) -> Path:
    return fleet if fleet is not None else builtin_fleet_path()


def _profile(
    role: Role, gateway: str | None, member: str | None, region: str, zone: str
) -> NodeProfile:
    try:
        return profile_from_fields(
            role=role.value, gateway=gateway, member=member, region=region, zone=zone
        )
    except ProfileError as error:
        raise typer.BadParameter(str(error)) from None


def _check_gateway(state: FleetState, profile: NodeProfile) -> None:
    if (problem := unnamed_gateway(state, profile)) is not None:
        err.print(f"[red]error[/red] {problem}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2)


def _headers(pairs: list[str] | None) -> dict[str, str]:
    """`--header NAME=VALUE` options as a mapping."""
    headers = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--header")
        headers[name] = value
    return headers


def _fail(error: InvalidInput) -> typer.Exit:
    _print_problems(error.problems)
    return typer.Exit(1)


def _print_problems(problems: tuple[Problem, ...] | list[Problem]) -> None:
    for problem in problems:
        color = "red" if problem.severity is Severity.ERROR else "yellow"
        label = f"[{color}]{problem.severity}[/{color}]"
        err.print(f"{label} {problem}", highlight=False, markup=True, soft_wrap=True)


def _load(fleet: Path | None) -> FleetState:
    try:
        return load_fleet(_fleet_path(fleet)).state
    except InvalidInput as error:
        raise _fail(error) from None


@app.command("serve")
def serve_command(
    fleet: FleetOption = None,
    xds_port: Annotated[int, typer.Option(help="Port of the ADS gRPC server.")] = 18000,
    metrics_port: Annotated[
        int, typer.Option(help="Port of /metrics, /healthz, /readyz and /debug/clients.")
    ] = 9102,
    admin_port: Annotated[
        int, typer.Option(help="Port of the admin gRPC server (health, reflection).")
    ] = 18001,
    address: Annotated[str, typer.Option(help="Address every server listens on.")] = "0.0.0.0",
    fleet_resource: Annotated[
        str | None,
        typer.Option(
            help="Serve the Fleet custom resource of this name from the fleet cluster (the pod's "
            "own cluster, or --kubeconfig) instead of a Fleet file."
        ),
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option(help="With --fleet-resource: the fleet cluster's kubeconfig file."),
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="With --kubeconfig: the context to use.")
    ] = None,
    namespace: Annotated[
        str,
        typer.Option(
            envvar="POD_NAMESPACE",
            help="The server's namespace in the fleet cluster: member Secrets, status Lease.",
        ),
    ] = "xdsfleet-system",
    status_seconds: Annotated[
        float,
        typer.Option(help="How often status is written back to the fleet cluster (if changed)."),
    ] = 5.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="TLS on the xDS port: the server's certificate (PEM), reloaded on change."
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="With --tls-cert: its private key (PEM).")
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(
            help="mTLS: clients must present a certificate this CA signed; its identity must "
            "be allowed the profile it claims (the Fleet's spec.identities)."
        ),
    ] = None,
    insecure_secrets: Annotated[
        bool,
        typer.Option(
            "--insecure-secrets",
            help="Serve TLS Secrets to clients without mTLS on a non-loopback address.",
        ),
    ] = False,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the bearer token the admin API requires."),
    ] = None,
    drain_seconds: Annotated[
        float,
        typer.Option(
            help="On SIGTERM: how long open streams are still served after GOAWAY, before "
            "they are closed and their clients reconnect to another replica."
        ),
    ] = 5.0,
    admit_rate: Annotated[
        float,
        typer.Option(
            help="New ADS streams admitted per second after a burst of 200 (a reconnect storm "
            "waits its turn; established streams never wait); 0: no limit."
        ),
    ] = 500.0,
    parse_cache: Annotated[
        Path | None,
        typer.Option(
            help="A directory of the server's own where parsed fleet files are kept, so that "
            "a restart parses only the files that changed."
        ),
    ] = None,
    log_format: Annotated[LogFormat, typer.Option(help="Log output.")] = LogFormat.JSON,
    log_level: Annotated[str, typer.Option(help="Lowest level logged.")] = "info",
) -> None:
    """Serve a fleet to Envoys over ADS (SotW and Delta), following its sources live."""
    logs.configure(fmt=log_format.value, level=log_level)
    if fleet_resource is not None and fleet is not None:
        raise typer.BadParameter("give --fleet or --fleet-resource, not both")
    if fleet_resource is None and (kubeconfig or context):
        raise typer.BadParameter("--kubeconfig and --context go with --fleet-resource")
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    if client_ca is not None and tls_cert is None:
        raise typer.BadParameter("--client-ca needs --tls-cert and --tls-key")
    files = TlsFiles(tls_cert, tls_key, client_ca) if tls_cert and tls_key else None
    settings = Settings(
        fleet=None if fleet_resource else _fleet_path(fleet),
        xds_port=xds_port,
        metrics_port=metrics_port,
        admin_port=admin_port,
        host=address,
        fleet_resource=fleet_resource,
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        status_seconds=status_seconds,
        tls=files,
        insecure_secrets=insecure_secrets,
        admin_token=admin_token_file,
        drain_seconds=drain_seconds,
        admit_rate=admit_rate,
        parse_cache=parse_cache,
    )
    try:
        asyncio.run(serve(settings))
    except InvalidInput as error:
        raise _fail(error) from None
    except Refused as error:
        # One line, in the log stream the operator already reads.
        log.error("start_refused", error=str(error))
        raise typer.Exit(1) from None
    except Crashed:
        raise typer.Exit(1) from None  # `task_failed` logged what, with its traceback


@app.command("validate")
def validate_command(
    fleet: FleetOption = None,
    output: Annotated[
        Report,
        typer.Option(
            "--output",
            "-o",
            help="text: problems on stderr, a summary on stdout; json: one document on stdout "
            "with every problem (file, object, field, message, severity).",
        ),
    ] = Report.TEXT,
) -> None:
    """Check a fleet and every file it names, TLS certificates included; exit 1 on any error
    (warnings alone exit 0)."""
    path = _fleet_path(fleet)
    problems, loaded = checked_fleet(path)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    state = None if errors or loaded is None else loaded.state
    if output is Report.JSON:
        document = {
            "fleet": str(path),
            "valid": not errors,
            "problems": [
                {
                    "file": p.file,
                    "object": p.obj,
                    "field": p.field,
                    "message": p.message,
                    "severity": p.severity.value,
                }
                for p in problems
            ],
        }
        if state is not None:
            document["counts"] = {key: n for key, (_, _, n) in _counts(state).items()}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        if errors:
            raise typer.Exit(1)
        return
    _print_problems(problems)
    if state is None:
        raise typer.Exit(1)
    counts = ", ".join(f"{n} {one if n == 1 else many}" for one, many, n in _counts(state).values())
    plural = "s" if len(problems) > 1 else ""
    warned = f" ({len(problems)} warning{plural})" if problems else ""
    sys.stdout.write(f"valid {path}: {counts}{warned}\n")


def _counts(state: FleetState) -> dict[str, tuple[str, str, int]]:
    """JSON key -> (what a person reads for one, for several; how many)."""
    return {
        "members": ("member", "members", len(state.members)),
        "gateways": ("gateway", "gateways", len(state.gateways)),
        "httpRoutes": ("HTTP route", "HTTP routes", len(state.http_routes)),
        "grpcRoutes": ("gRPC route", "gRPC routes", len(state.grpc_routes)),
        "trafficPolicies": ("traffic policy", "traffic policies", len(state.policies)),
    }


@app.command("render")
def render_command(
    fleet: FleetOption = None,
    role: RoleOption = Role.GATEWAY,
    gateway: GatewayOption = None,
    member: MemberOption = None,
    region: RegionOption = "",
    zone: ZoneOption = "",
    output: Annotated[
        RenderOutput,
        typer.Option("--output", "-o", help="Output format; summary: one line per resource."),
    ] = RenderOutput.YAML,
    kind: Annotated[
        list[Kind] | None,
        typer.Option("--type", "-t", help="Only resources of this type; repeatable."),
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name", help="Only resources of this name (a glob, like 'default/*'); repeatable."
        ),
    ] = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print private keys instead of redacting them.")
    ] = False,
) -> None:
    """Print the resources a node would be served, sorted by type and name."""
    profile = _profile(role, gateway, member, region, zone)
    state = _load(fleet)
    _check_gateway(state, profile)
    every = render(state, profile)
    rows = select(every, kinds=kind or (), names=name or ())
    if every and not rows:
        # As kubectl: nothing found is not an error, but say so (a mistyped --name is silent
        # otherwise), with the names there are.
        names = ", ".join(sorted({row["name"] for row in select(every, kinds=kind or ())}))
        message = f"no resource matches --type/--name (names: {names or 'none'})"
        err.print(message, markup=False, highlight=False, soft_wrap=True)
    if not show_secrets:
        rows = redacted(rows)
    if output is RenderOutput.SUMMARY:
        sys.stdout.write("".join(line + "\n" for line in summary(rows)))
    else:
        _print(rows, Output(output.value))


@app.command("explain")
def explain_command(
    host: Annotated[str, typer.Option("--host", help="The request's Host.")],
    path: Annotated[str, typer.Option("--path", help="The request's path and query.")] = "/",
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="A request header as NAME=VALUE; repeatable."),
    ] = None,
    method: Annotated[str, typer.Option("--method", help="The request's method.")] = "GET",
    listener: Annotated[
        str | None, typer.Option("--listener", help="Only this gateway listener (NAME).")
    ] = None,
    fail: Annotated[
        list[str] | None,
        typer.Option(
            "--fail",
            help="What if these members fail (their endpoints fail Envoy's health checks): "
            "MEMBER[,MEMBER...]; repeatable.",
        ),
    ] = None,
    drain: Annotated[
        list[str] | None,
        typer.Option(
            "--drain", help="What if these members are drained: MEMBER[,MEMBER...]; repeatable."
        ),
    ] = None,
    fleet: FleetOption = None,
    role: RoleOption = Role.GATEWAY,
    gateway: GatewayOption = None,
    member: MemberOption = None,
    region: RegionOption = "",
    zone: ZoneOption = "",
) -> None:
    """Show the route a request takes and each member's share: now, per failover tier, or
    with --fail/--drain, after those members fail or are drained."""
    profile = _profile(role, gateway, member, region, zone)
    headers = _headers(header)
    state = _load(fleet)
    _check_gateway(state, profile)
    scenario = None
    if fail or drain:
        known = [m.member.name for m in state.members]
        failed = _members(fail or [], known, "--fail")
        scenario = Scenario(failed=failed, drained=_members(drain or [], known, "--drain"))
    request = Request(host=host, path=path, headers=headers, method=method.upper())
    found = explain(state, profile, request, listener, scenario)
    if found is None:
        err.print(f"no route matches {method.upper()} {host}{path}", highlight=False)
        raise typer.Exit(1)
    Console(width=160).print(render_explanation(found))


def _members(items: list[str], known: list[str], option: str) -> frozenset[str]:
    """The members named by a repeatable option, each use a name or a comma-separated list."""
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    for name in names:
        if name not in known:
            hint = did_you_mean(name, known)
            raise typer.BadParameter(f"no member {name!r} in the fleet{hint}", param_hint=option)
    return frozenset(names)


@app.command("bootstrap")
def bootstrap_command(
    node_id: Annotated[
        str, typer.Option("--node-id", help="The node id the client uses.")
    ] = "envoy",
    role: RoleOption = Role.GATEWAY,
    gateway: GatewayOption = None,
    member: MemberOption = None,
    region: RegionOption = "",
    zone: ZoneOption = "",
    cluster: Annotated[
        str, typer.Option(help="The node's cluster (Envoy's service cluster).")
    ] = "xdsfleet",
    xds_address: Annotated[
        str, typer.Option(help="HOST:PORT of the xdsfleet ADS server.")
    ] = "127.0.0.1:18000",
    delta: Annotated[bool, typer.Option("--delta", help="Use Delta (incremental) ADS.")] = False,
    envoy_admin_port: Annotated[int, typer.Option(help="Port of Envoy's admin interface.")] = 9901,
    tls_cert: Annotated[
        str | None,
        typer.Option(help="mTLS to the server: the client's certificate file, as it sees it."),
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="mTLS: the client's key file.")] = None,
    tls_ca: Annotated[
        str | None, typer.Option(help="mTLS: the CA file that signed the server's certificate.")
    ] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="Output format.")] = Output.YAML,
) -> None:
    """Print a bootstrap for a client: Envoy's, or gRPC's for --role proxyless."""
    profile = _profile(role, gateway, member, region, zone)
    host, _, port = xds_address.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(
            f"expected HOST:PORT, got {xds_address!r}", param_hint="--xds-address"
        )
    given = [tls_cert, tls_key, tls_ca]
    if any(given) and not all(given):
        raise typer.BadParameter("--tls-cert, --tls-key and --tls-ca go together")
    tls = ClientTls(tls_cert, tls_key, tls_ca) if tls_cert and tls_key and tls_ca else None
    _print(
        bootstrap(
            node_id=node_id,
            cluster=cluster,
            profile=profile,
            target=Target(host=host.strip("[]"), port=int(port), delta=delta, tls=tls),
            admin_port=envoy_admin_port,
        ),
        output,
    )
    if warning := locality_warning(profile):
        err.print(f"[yellow]warning[/yellow] {warning}", highlight=False, soft_wrap=True)


ServerOption = Annotated[
    str, typer.Option("--server", help="HOST:PORT of the server's admin port.")
]
TokenFileOption = Annotated[
    Path | None, typer.Option(help="A file holding the admin API's bearer token.")
]
CaOption = Annotated[
    Path | None, typer.Option("--tls-ca", help="TLS: the CA of the server's certificate.")
]
CertOption = Annotated[Path | None, typer.Option("--tls-cert", help="mTLS: our certificate.")]
KeyOption = Annotated[Path | None, typer.Option("--tls-key", help="mTLS: our key.")]


def _admin(
    server: str, token_file: Path | None, ca: Path | None, cert: Path | None, key: Path | None
) -> AdminClient:
    if (cert is None) != (key is None) or (cert is not None and ca is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together, with --tls-ca")
    token = token_file.read_text().strip() if token_file is not None else None
    return AdminClient(Connection(server, token=token, ca=ca, cert=cert, key=key))


def _asking(call: Any) -> Any:
    """The admin API's answer, or one line saying why there is none (exit 1)."""
    try:
        return call()
    except grpc.RpcError as error:
        err.print(f"[red]error[/red] {error.code().name}: {error.details()}", highlight=False)
        raise typer.Exit(1) from None


@app.command("status")
def status_command(
    server: ServerOption = "127.0.0.1:18001",
    token_file: TokenFileOption = None,
    tls_ca: CaOption = None,
    tls_cert: CertOption = None,
    tls_key: KeyOption = None,
    output: Annotated[
        Output | None, typer.Option("--output", "-o", help="json or yaml instead of a table.")
    ] = None,
) -> None:
    """One row per connected client: per type SYNCED, PENDING, STALE or NACKED (with why)."""
    client = _admin(server, token_file, tls_ca, tls_cert, tls_key)
    try:
        clients = _asking(client.list_clients)
    finally:
        client.close()
    if output is not None:
        _print(as_data(clients).get("clients", []), output)
        return
    Console(width=200).print(status_table(clients))


@app.command("config")
def config_command(
    node: Annotated[str, typer.Option("--node", help="The client's node id.")],
    server: ServerOption = "127.0.0.1:18001",
    token_file: TokenFileOption = None,
    tls_ca: CaOption = None,
    tls_cert: CertOption = None,
    tls_key: KeyOption = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="Output format.")] = Output.YAML,
) -> None:
    """What a connected client holds, as `render` prints it (Secrets by name only)."""
    client = _admin(server, token_file, tls_ca, tls_cert, tls_key)
    try:
        configs = _asking(lambda: client.client_config(node))
    finally:
        client.close()
    if not configs.configs:
        err.print(f"no client with node id {node!r} is connected", highlight=False)
        raise typer.Exit(1)
    _print(config_rows(configs), output)


@app.command("drill")
def drill_command(
    gateway: Annotated[str, typer.Option("--gateway", help="The Gateway to drive, as NS/NAME.")],
    member: Annotated[
        list[str], typer.Option("--member", help="A member the fault hits; repeatable.")
    ],
    fault: Annotated[
        str, typer.Option("--fault", help="kill (refused), hang (SIGSTOP) or cut (dropped).")
    ],
    fleet: FleetOption = None,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 200,
    seconds: Annotated[float, typer.Option(help="How long the load lasts.")] = 12,
    fault_at: Annotated[float, typer.Option(help="When the fault hits (s).")] = 3,
    restore_at: Annotated[
        float | None, typer.Option(help="When the members recover (s); none: never.")
    ] = 6,
    host: Annotated[str | None, typer.Option(help="Host header (default: a route's).")] = None,
    path: Annotated[str, typer.Option(help="Request path.")] = "/",
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", help="A request header as NAME=VALUE; repeatable."),
    ] = None,
    region: RegionOption = "",
    zone: ZoneOption = "",
    loopback: Annotated[
        bool, typer.Option(help="Members on loopback addresses, not network namespaces.")
    ] = False,
) -> None:
    """Rehearse a failure: local backends for every endpoint of the fleet, its own routes and
    policies served to a real Envoy, a fault under load, the figures; exit 1 if a request
    failed."""
    if fault not in {f.value for f in Fault}:
        raise typer.BadParameter("kill, hang or cut", param_hint="--fault")
    drill = Drill(
        fleet=_fleet_path(fleet),
        gateway=gateway,
        members=tuple(member),
        fault=Fault(fault),
        rate=rate,
        seconds=seconds,
        fault_at=fault_at,
        restore_at=restore_at,
        host=host,
        path=path,
        headers=tuple(_headers(header).items()),
        region=region,
        zone=zone,
        namespaces=not loopback,
    )
    try:
        ok = run_drill(drill, Console(width=160))
    except DrillError as error:
        err.print(f"[red]error[/red] {error}", highlight=False)
        raise typer.Exit(2) from None
    except InvalidInput as error:
        raise _fail(error) from None
    if not ok:
        raise typer.Exit(1)


def _print(data: Any, output: Output) -> None:
    if output is Output.JSON:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def main() -> None:
    app()
