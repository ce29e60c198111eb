"""`xdsfleet bootstrap` writes mTLS bootstraps: Envoy's xDS cluster with its certificate, key
and the server's CA; gRPC's `tls` channel credentials (gRFC A65) for proxyless clients."""

from __future__ import annotations

from typing import Any

import yaml
from typer.testing import CliRunner

from xdsfleet.cli import app

TLS = ["--tls-cert", "/etc/xds/tls.crt", "--tls-key", "/etc/xds/tls.key"]
TLS += ["--tls-ca", "/etc/xds/ca.crt"]


def bootstrap(*args: str) -> Any:
    result = CliRunner().invoke(app, ["bootstrap", *args])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


def test_envoy_bootstrap_over_mtls_to_a_dns_name_checks_the_server_name() -> None:
    boot = bootstrap("--gateway", "infra/edge", "--xds-address", "xds.example:18000", *TLS)
    [cluster] = boot["static_resources"]["clusters"]
    context = cluster["transport_socket"]["typed_config"]
    assert context["sni"] == "xds.example"
    common = context["common_tls_context"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/etc/xds/tls.crt"},
            "private_key": {"filename": "/etc/xds/tls.key"},
        }
    ]
    validation = common["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/xds/ca.crt"}
    assert validation["match_typed_subject_alt_names"][0]["matcher"] == {"exact": "xds.example"}


def test_proxyless_bootstrap_over_mtls_uses_grpc_tls_credentials() -> None:
    boot = bootstrap("--role", "proxyless", *TLS)
    [server] = boot["xds_servers"]
    assert server["channel_creds"] == [
        {
            "type": "tls",
            "config": {
                "ca_certificate_file": "/etc/xds/ca.crt",
                "certificate_file": "/etc/xds/tls.crt",
                "private_key_file": "/etc/xds/tls.key",
            },
        }
    ]


def test_without_tls_flags_the_bootstrap_is_plaintext() -> None:
    boot = bootstrap("--gateway", "infra/edge")
    assert "transport_socket" not in boot["static_resources"]["clusters"][0]


def test_half_the_tls_flags_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["bootstrap", "--tls-cert", "/etc/xds/tls.crt"])
    assert result.exit_code == 2
