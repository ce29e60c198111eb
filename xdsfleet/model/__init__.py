"""The model: immutable descriptions of members, services, endpoints and routes.

Everything here is a frozen dataclass with tuple fields, so a whole `FleetState` is hashable
and can key translation memos. Nothing here does I/O or knows about Envoy.
"""
