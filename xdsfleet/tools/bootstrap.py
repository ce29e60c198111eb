"""Bootstraps for clients: an Envoy bootstrap, or gRPC's xDS bootstrap for proxyless clients.

The node identity written here is what the server reads back as the node profile
(docs/architecture.md, "Node → profile"), so the two must agree; both use the keys of `model.node`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from xdsfleet.model.node import GATEWAY_KEY, MEMBER_KEY, ROLE_KEY, NodeProfile, Role

XDS_CLUSTER = "xdsfleet"
# How soon Envoy opens a new ADS stream after one ends (a replica restarting, a refusal with
# UNAVAILABLE): jittered exponential from the base up to the cap. Envoy's own default (500 ms to
# 30 s) left gateways up to 10.5 s without a control plane after a restart; the cap keeps a
# reconnecting fleet spread out all the same.
ADS_RETRY_BASE = "0.25s"
ADS_RETRY_MAX = "3s"


@dataclass(frozen=True, slots=True)
class ClientTls:
    """mTLS to the control plane: the client's certificate and key, and the CA that signed the
    server's certificate (paths as the client will see them)."""

    cert: str
    key: str
    ca: str


@dataclass(frozen=True, slots=True)
class Target:
    """Where the client finds the control plane, and how it talks to it."""

    host: str = "127.0.0.1"
    port: int = 18000
    delta: bool = False
    tls: ClientTls | None = None


def _node(node_id: str, cluster: str, profile: NodeProfile) -> dict[str, Any]:
    metadata = {ROLE_KEY: profile.role.value}
    if profile.gateway:
        metadata[GATEWAY_KEY] = profile.gateway
    if profile.member:
        metadata[MEMBER_KEY] = profile.member
    node: dict[str, Any] = {"id": node_id, "cluster": cluster, "metadata": metadata}
    locality = {k: v for k, v in (("region", profile.region), ("zone", profile.zone)) if v}
    if locality:
        node["locality"] = locality
    return node


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _upstream_tls(target: Target) -> dict[str, Any]:
    """The xDS cluster's transport socket: our certificate, and the server's checked against
    the CA (and its name, when the host is a DNS name, through SNI and SAN)."""
    assert target.tls is not None
    tls = target.tls
    validation: dict[str, Any] = {"trusted_ca": {"filename": tls.ca}}
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
            ],
            "validation_context": validation,
        },
    }
    if not _is_ip(target.host):
        context["sni"] = target.host
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "DNS", "matcher": {"exact": target.host}}
        ]
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def envoy_bootstrap(
    *, node_id: str, cluster: str, profile: NodeProfile, target: Target, admin_port: int
) -> dict[str, Any]:
    bootstrap = _envoy_bootstrap(
        node_id=node_id, cluster=cluster, profile=profile, target=target, admin_port=admin_port
    )
    if target.tls is not None:
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] = _upstream_tls(target)
    return bootstrap


def _envoy_bootstrap(
    *, node_id: str, cluster: str, profile: NodeProfile, target: Target, admin_port: int
) -> dict[str, Any]:
    return {
        "node": _node(node_id, cluster, profile),
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if target.delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            "retry_policy": {
                                "retry_back_off": {
                                    "base_interval": ADS_RETRY_BASE,
                                    "max_interval": ADS_RETRY_MAX,
                                }
                            },
                        }
                    }
                ],
            },
            # Separate dicts: a shared one would come out of the YAML dumper as an anchor.
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    # A DNS name (the Service of the control plane) is re-resolved, so Envoy
                    # follows replicas as they come and go.
                    "type": "STATIC" if _is_ip(target.host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {
                                "http2_protocol_options": {
                                    # Finds a dead control plane in seconds, not at the next
                                    # TCP timeout, so Envoy reconnects to another replica.
                                    "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                                }
                            },
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": target.host,
                                                    "port_value": target.port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
    }


def grpc_bootstrap(
    *, node_id: str, cluster: str, profile: NodeProfile, target: Target
) -> dict[str, Any]:
    """gRPC's own bootstrap format (the file GRPC_XDS_BOOTSTRAP names); mTLS as gRFC A65
    describes it (files re-read every 10 minutes by default)."""
    creds: dict[str, Any] = {"type": "insecure"}
    if target.tls is not None:
        creds = {
            "type": "tls",
            "config": {
                "ca_certificate_file": target.tls.ca,
                "certificate_file": target.tls.cert,
                "private_key_file": target.tls.key,
            },
        }
    return {
        "xds_servers": [
            {
                "server_uri": f"{target.host}:{target.port}",
                "channel_creds": [creds],
                "server_features": ["xds_v3"],
            }
        ],
        "node": _node(node_id, cluster, profile),
    }


def bootstrap(
    *, node_id: str, cluster: str, profile: NodeProfile, target: Target, admin_port: int
) -> dict[str, Any]:
    if profile.role is Role.PROXYLESS:
        return grpc_bootstrap(node_id=node_id, cluster=cluster, profile=profile, target=target)
    return envoy_bootstrap(
        node_id=node_id, cluster=cluster, profile=profile, target=target, admin_port=admin_port
    )
