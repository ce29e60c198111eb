"""gRPC's own xDS client over mTLS, bootstrapped as `xdsfleet bootstrap --tls-*` writes it (the
`tls` channel credentials of gRFC A65): it reaches the backends, and the server knows it by its
certificate's SPIFFE ID."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_grpc_proxyless import ask_who, backends, two_members

from harness.certs import Authority
from harness.local import Server
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.tools.bootstrap import ClientTls, Target, grpc_bootstrap

__all__ = ["backends"]

SPIFFE = "spiffe://test.example/ns/default/sa/who-client"


def test_grpc_xds_client_over_mtls_reaches_every_member(tmp_path: Path, backends: int) -> None:
    ca = Authority(tmp_path)
    server_pair, client = ca.issue("xds", server=True), ca.issue("client", spiffe=SPIFFE)
    files = two_members(tmp_path / "fleet", backends)
    fleet = yaml.safe_load(files.fleet.read_text())
    fleet["spec"]["identities"] = [{"identity": SPIFFE, "roles": ["proxyless"]}]
    files.fleet.write_text(yaml.safe_dump(fleet))
    tls = ["--tls-cert", str(server_pair.cert), "--tls-key", str(server_pair.key)]
    with Server(files.fleet, args=(*tls, "--client-ca", str(ca.ca))) as server:
        server.start()
        boot = grpc_bootstrap(
            node_id="proxyless-mtls",
            cluster="test",
            profile=NodeProfile(role=Role.PROXYLESS, region="eu-west"),
            target=Target(
                host="localhost",
                port=server.xds_port,
                tls=ClientTls(str(client.cert), str(client.key), str(ca.ca)),
            ),
        )
        done = ask_who(tmp_path / "grpc-bootstrap.json", boot, 200, until=("east", "west"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert set(json.loads(done.stdout)) == {"east", "west"}
        [opened] = server.events("stream_opened")
        assert (opened["node_id"], opened["identity"]) == ("proxyless-mtls", SPIFFE)
