"""The admin API (protos/xdsfleet/admin/v1/admin.proto): who holds what, read off the ADS
server's stream registry and the snapshots served; and the members' states.

Read-only, and never a Secret's content: GetClientConfig names Secrets with their versions
only. Behind mTLS (the admin port's credentials) or a bearer token, checked here on every call.
It must not change a stream or a snapshot.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2

from xdsfleet.admin import sync
from xdsfleet.admin.v1 import admin_pb2
from xdsfleet.cache import typeurls
from xdsfleet.cache.snapshot import Snapshot
from xdsfleet.model.node import NodeProfile
from xdsfleet.server.ads import AdsService, StreamInfo
from xdsfleet.server.protocol import TypeStatus

SERVICE = "xdsfleet.admin.v1.Admin"


class MemberView(Protocol):
    """A member as the pipeline reports it (status.reports.MemberReport)."""

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def stale(self) -> bool: ...
    @property
    def settled(self) -> bool: ...
    @property
    def message(self) -> str: ...
    @property
    def stale_since(self) -> float | None: ...
    @property
    def services(self) -> int: ...
    @property
    def endpoints(self) -> int: ...


class AdminService:
    def __init__(
        self,
        ads: AdsService,
        *,
        snapshot_of: Callable[[NodeProfile], Snapshot],
        members: Callable[[], Sequence[MemberView]],
        token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ads = ads
        self._snapshot_of = snapshot_of
        self._members = members
        self._token = token
        self._clock = clock

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(method: Callable[[Any], Any], request: Any) -> grpc.RpcMethodHandler:
            async def call(message: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._check(context)
                return method(message)

            return grpc.unary_unary_rpc_method_handler(
                call,
                request_deserializer=request.FromString,
                response_serializer=lambda response: response.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ListClients": unary(self.list_clients, admin_pb2.ListClientsRequest),
                "ListMembers": unary(self.list_members, admin_pb2.ListMembersRequest),
                "GetClientConfig": unary(self.client_config, admin_pb2.GetClientConfigRequest),
            },
        )

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if self._token is None:
            return  # mTLS (or loopback only) guards the port
        given = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not hmac.compare_digest(str(given).encode(), f"Bearer {self._token}".encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is needed")

    # --- Methods (plain functions of the registry: the tests call them too) ---

    def list_clients(self, _: Any = None) -> admin_pb2.ListClientsResponse:
        now = self._clock()
        streams = sorted(self._ads.streams.values(), key=lambda s: (s.node_id, s.stream_id))
        return admin_pb2.ListClientsResponse(clients=[self._listed(s, now) for s in streams])

    def list_members(self, _: Any = None) -> admin_pb2.ListMembersResponse:
        return admin_pb2.ListMembersResponse(
            members=[
                admin_pb2.Member(
                    name=m.name,
                    source=m.source,
                    stale=m.stale,
                    settled=m.settled,
                    message=m.message,
                    stale_since=m.stale_since or 0.0,
                    services=m.services,
                    endpoints=m.endpoints,
                )
                for m in self._members()
            ]
        )

    def client_config(self, request: Any) -> admin_pb2.GetClientConfigResponse:
        now = self._clock()
        configs = []
        for info in sorted(self._ads.streams.values(), key=lambda s: s.stream_id):
            if info.node_id != request.node_id:
                continue
            snapshot = self._snapshot_of(info.profile)
            resources = []
            statuses = info.machine.status()
            for type_url in typeurls.ORDER:
                status = statuses.get(type_url)
                if status is None:
                    continue
                served = snapshot.of(type_url)
                for name, version in sorted(status.held.items()):
                    encoded = served.get(name)
                    current = encoded is not None and encoded.version == version
                    resource = admin_pb2.Resource(
                        type_url=type_url, name=name, version=version, current=current
                    )
                    if current and encoded is not None and type_url != typeurls.SECRET:
                        resource.resource.CopyFrom(
                            any_pb2.Any(type_url=type_url, value=encoded.body)
                        )
                    resources.append(resource)
            configs.append(
                admin_pb2.ClientConfig(
                    client=self._client(info, now, snapshot, statuses), resources=resources
                )
            )
        return admin_pb2.GetClientConfigResponse(configs=configs)

    def _listed(self, info: StreamInfo, now: float) -> admin_pb2.Client:
        return self._client(info, now, self._snapshot_of(info.profile), info.machine.status())

    def _client(
        self,
        info: StreamInfo,
        now: float,
        snapshot: Snapshot,
        statuses: Mapping[str, TypeStatus],
    ) -> admin_pb2.Client:
        types = []
        for type_url in typeurls.ORDER:
            status = statuses.get(type_url)
            if status is None:
                continue
            sent_at = info.sent_at.get(type_url, 0.0)
            types.append(
                admin_pb2.TypeStatus(
                    type_url=type_url,
                    short_name=typeurls.SHORT_NAMES[type_url],
                    state=sync.type_state(status, snapshot.of(type_url), sent_at, now),
                    served_version=snapshot.versions.get(type_url, ""),
                    sent_version=status.sent_version,
                    acked_version=status.acked_version,
                    nacked_version=status.nack_version,
                    nack_message=status.nack_message,
                    sent_at=sent_at,
                    resources=len(status.holding),
                )
            )
        return admin_pb2.Client(
            stream_id=info.stream_id,
            node_id=info.node_id,
            node_cluster=info.node_cluster,
            protocol=info.protocol,
            peer=info.peer,
            identity=info.identity or "",
            profile=info.profile.describe(),
            connected_at=info.started,
            state=sync.worst(t.state for t in types),
            types=types,
        )
