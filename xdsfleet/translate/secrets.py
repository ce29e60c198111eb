"""SDS secrets: the TLS certificates gateway listeners terminate with, served over ADS.

A listener names its certificates and Envoy fetches them as separate resources, so rotating a
certificate changes only its Secret: the listener stays the same and keeps its connections.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from xdsfleet.model.fleet import TLSSecret
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.names import secret_name
from xdsfleet.translate.proto import Message


@memoised
def tls_secret(secret: TLSSecret) -> Message:
    return secret_pb2.Secret(
        name=secret_name(secret.namespace, secret.name),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=secret.certificate),
            private_key=base_pb2.DataSource(inline_string=secret.private_key),
        ),
    )
