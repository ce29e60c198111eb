"""`validate` checks TLS Secrets before Envoy does: key against certificate, expiry, and the
listener hostnames the certificate must cover."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from states import GATEWAY, fleet
from typer.testing import CliRunner

from harness.certs import NOW, certificate
from xdsfleet.cli import app
from xdsfleet.documents.certificates import certificate_problems
from xdsfleet.model.errors import Severity
from xdsfleet.model.fleet import FleetState, GatewayListener, SecretRef, TLSSecret

ORIGINS = {"Secret ns/tls": "tls.yaml", "Gateway ns/gw": "gw.yaml"}
FULL = Path(__file__).parent.parent / "examples" / "full"


def served(cert: str, key: str, hostname: str | None = "shop.example.com") -> FleetState:
    listener = GatewayListener(
        "https", 443, "HTTPS", hostname, certificate_refs=(SecretRef("ns", "tls"),)
    )
    return replace(
        fleet(),
        gateways=(replace(GATEWAY, listeners=(listener,)),),
        secrets=(TLSSecret("ns", "tls", cert, key),),
    )


def problems(state: FleetState) -> list[tuple[str, str, str, Severity]]:
    return [
        (p.file, p.field, p.message, p.severity) for p in certificate_problems(state, ORIGINS, NOW)
    ]


def test_a_good_certificate_has_no_problem() -> None:
    assert problems(served(*certificate())) == []


def test_a_key_of_another_certificate_is_an_error() -> None:
    cert, _ = certificate()
    _, other = certificate()
    [(file, field, message, severity)] = problems(served(cert, other))
    assert (file, field, severity) == ("tls.yaml", 'data["tls.key"]', Severity.ERROR)
    assert "does not match the certificate" in message


def test_a_corrupt_key_and_a_corrupt_certificate_are_errors() -> None:
    found = problems(served("-----BEGIN CERTIFICATE-----\nAAAA\n", "not a key"))
    assert [(f, s) for _, f, _, s in found] == [
        ('data["tls.crt"]', Severity.ERROR),
        ('data["tls.key"]', Severity.ERROR),
    ]


def test_an_expired_certificate_is_an_error() -> None:
    [(_, field, message, severity)] = problems(served(*certificate(valid_for=-timedelta(days=1))))
    assert (field, severity) == ('data["tls.crt"]', Severity.ERROR)
    assert message.startswith("expired on 2026-11-25")


@pytest.mark.parametrize(("days", "warned"), [(13, True), (15, False)])
def test_a_certificate_expiring_within_14_days_is_a_warning(days: int, warned: bool) -> None:
    found = problems(served(*certificate(valid_for=timedelta(days=days))))
    assert [(s, "expires on" in m) for _, _, m, s in found] == (
        [(Severity.WARNING, True)] if warned else []
    )


@pytest.mark.parametrize(
    ("hostname", "covered"),
    [
        ("shop.example.com", True),
        ("example.com", True),
        ("*.example.com", True),
        ("a.b.example.com", False),  # a wildcard stands for one label only
        ("shop.example.org", False),
        (None, True),  # no hostname: nothing to compare
    ],
)
def test_a_listener_hostname_must_be_covered_by_the_certificate(
    hostname: str | None, covered: bool
) -> None:
    found = problems(served(*certificate(), hostname=hostname))
    if covered:
        assert found == []
    else:
        [(file, field, message, severity)] = found
        assert (file, field, severity) == ("gw.yaml", "spec.listeners[0].hostname", Severity.ERROR)
        assert "not covered by its certificate (names: *.example.com, example.com)" in message


def test_the_key_may_be_rsa_or_ec() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    assert problems(served(*certificate(key=key))) == []


def write_fleet(root: Path, cert: str, key: str) -> Path:
    """The full example with its TLS Secret replaced."""
    fleet_dir = root / "full"
    for path in FULL.rglob("*.yaml"):
        target = fleet_dir / path.relative_to(FULL)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    tls = fleet_dir / "routes" / "tls.yaml"
    secret = yaml.safe_load(tls.read_text())
    secret["data"] = {
        "tls.crt": base64.b64encode(cert.encode()).decode(),
        "tls.key": base64.b64encode(key.encode()).decode(),
    }
    tls.write_text(yaml.safe_dump(secret))
    return fleet_dir / "fleet.yaml"


def test_validate_reports_a_mismatched_key_as_json_and_exits_1(tmp_path: Path) -> None:
    cert, _ = certificate()
    _, other = certificate()
    path = write_fleet(tmp_path, cert, other)

    result = CliRunner().invoke(app, ["validate", "--fleet", str(path), "-o", "json"])

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    [problem] = report["problems"]
    assert problem == {
        "file": str(path.parent / "routes" / "tls.yaml"),
        "object": "Secret default/example-tls",
        "field": 'data["tls.key"]',
        "message": "does not match the certificate (Envoy rejects it: KEY_VALUES_MISMATCH)",
        "severity": "error",
    }


def test_validate_passes_with_a_warning_for_a_certificate_about_to_expire(tmp_path: Path) -> None:
    # validate reads the clock: this certificate expires 5 days from the real now.
    cert = certificate(valid_for=timedelta(days=5), now=datetime.now(UTC))
    path = write_fleet(tmp_path, *cert)

    result = CliRunner().invoke(app, ["validate", "--fleet", str(path)])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"valid {path}: 4 members")
    assert "(1 warning)" in result.stdout
    assert "warning" in result.stderr
    assert "expires on" in result.stderr
