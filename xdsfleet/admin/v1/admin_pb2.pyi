from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyncState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATE_UNSPECIFIED: _ClassVar[SyncState]
    NOT_SENT: _ClassVar[SyncState]
    SYNCED: _ClassVar[SyncState]
    PENDING: _ClassVar[SyncState]
    STALE: _ClassVar[SyncState]
    NACKED: _ClassVar[SyncState]
SYNC_STATE_UNSPECIFIED: SyncState
NOT_SENT: SyncState
SYNCED: SyncState
PENDING: SyncState
STALE: SyncState
NACKED: SyncState

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "short_name", "state", "served_version", "sent_version", "acked_version", "nacked_version", "nack_message", "sent_at", "resources")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    SHORT_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SERVED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    NACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    NACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    short_name: str
    state: SyncState
    served_version: str
    sent_version: str
    acked_version: str
    nacked_version: str
    nack_message: str
    sent_at: float
    resources: int
    def __init__(self, type_url: _Optional[str] = ..., short_name: _Optional[str] = ..., state: _Optional[_Union[SyncState, str]] = ..., served_version: _Optional[str] = ..., sent_version: _Optional[str] = ..., acked_version: _Optional[str] = ..., nacked_version: _Optional[str] = ..., nack_message: _Optional[str] = ..., sent_at: _Optional[float] = ..., resources: _Optional[int] = ...) -> None: ...

class Client(_message.Message):
    __slots__ = ("stream_id", "node_id", "node_cluster", "protocol", "peer", "identity", "profile", "connected_at", "state", "types")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    node_id: str
    node_cluster: str
    protocol: str
    peer: str
    identity: str
    profile: str
    connected_at: float
    state: SyncState
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    def __init__(self, stream_id: _Optional[int] = ..., node_id: _Optional[str] = ..., node_cluster: _Optional[str] = ..., protocol: _Optional[str] = ..., peer: _Optional[str] = ..., identity: _Optional[str] = ..., profile: _Optional[str] = ..., connected_at: _Optional[float] = ..., state: _Optional[_Union[SyncState, str]] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ...) -> None: ...

class ListClientsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListClientsResponse(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[Client]
    def __init__(self, clients: _Optional[_Iterable[_Union[Client, _Mapping]]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("name", "source", "stale", "settled", "message", "stale_since", "services", "endpoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STALE_SINCE_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    stale: bool
    settled: bool
    message: str
    stale_since: float
    services: int
    endpoints: int
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., stale: _Optional[bool] = ..., settled: _Optional[bool] = ..., message: _Optional[str] = ..., stale_since: _Optional[float] = ..., services: _Optional[int] = ..., endpoints: _Optional[int] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class GetClientConfigRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class Resource(_message.Message):
    __slots__ = ("type_url", "name", "version", "current", "resource")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    name: str
    version: str
    current: bool
    resource: _any_pb2.Any
    def __init__(self, type_url: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., current: _Optional[bool] = ..., resource: _Optional[_Union[_any_pb2.Any, _Mapping]] = ...) -> None: ...

class ClientConfig(_message.Message):
    __slots__ = ("client", "resources")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    client: Client
    resources: _containers.RepeatedCompositeFieldContainer[Resource]
    def __init__(self, client: _Optional[_Union[Client, _Mapping]] = ..., resources: _Optional[_Iterable[_Union[Resource, _Mapping]]] = ...) -> None: ...

class GetClientConfigResponse(_message.Message):
    __slots__ = ("configs",)
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[ClientConfig]
    def __init__(self, configs: _Optional[_Iterable[_Union[ClientConfig, _Mapping]]] = ...) -> None: ...
