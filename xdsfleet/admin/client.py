"""A client of the admin API, for `xdsfleet status` and `xdsfleet config`.

Blocking (the CLI makes one call and prints); the methods are registered by path as the
servicer registers them, so no generated gRPC code is needed on either side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from xdsfleet.admin.service import SERVICE
from xdsfleet.admin.v1 import admin_pb2

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the admin API is and how to prove who we are: a bearer token, and/or a client
    certificate (mTLS) with the CA of the server's certificate."""

    server: str
    token: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def channel(self) -> grpc.Channel:
        if self.ca is None:
            return grpc.insecure_channel(self.server)
        credentials = grpc.ssl_channel_credentials(
            self.ca.read_bytes(),
            self.key.read_bytes() if self.key else None,
            self.cert.read_bytes() if self.cert else None,
        )
        return grpc.secure_channel(self.server, credentials)


class AdminClient:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._channel = connection.channel()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any, response: Any) -> Any:
        call = self._channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response.FromString,
        )
        token = self._connection.token
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        return call(request, timeout=TIMEOUT_SECONDS, metadata=metadata)

    def list_clients(self) -> admin_pb2.ListClientsResponse:
        request = admin_pb2.ListClientsRequest()
        found: admin_pb2.ListClientsResponse = self._call(
            "ListClients", request, admin_pb2.ListClientsResponse
        )
        return found

    def list_members(self) -> admin_pb2.ListMembersResponse:
        request = admin_pb2.ListMembersRequest()
        found: admin_pb2.ListMembersResponse = self._call(
            "ListMembers", request, admin_pb2.ListMembersResponse
        )
        return found

    def client_config(self, node_id: str) -> admin_pb2.GetClientConfigResponse:
        request = admin_pb2.GetClientConfigRequest(node_id=node_id)
        found: admin_pb2.GetClientConfigResponse = self._call(
            "GetClientConfig", request, admin_pb2.GetClientConfigResponse
        )
        return found
