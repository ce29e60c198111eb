"""ClusterLoadAssignments: a service port's endpoints by locality, prioritised for one node.

Assignments are the hot path: they change with every endpoint event and are sent to every
client. Each is built once per (endpoints, priorities) and handed out as the same object, which
callers must never mutate; the cache then skips re-encoding it. Nodes in different places get
different priorities for the same localities, so each member's localities are serialized once
(by hand, byte for byte as protobuf would: building 100,000 endpoint messages only to serialize
them was most of a first publish), laid out once per service port (`_Layout`: weighted and
sorted), and a view only looks up the tier of each locality and joins bytes (protobuf's
repeated fields concatenate on the wire), never building a message.

A member lost changes every assignment of every view, and leaves the rest of each as it was: a
port's layout is then derived from the previous one by leaving the member's localities out, and
each view's assignment by cutting the member's blocks out of the previous bytes (`_spliced`),
as long as the priorities of the others stay the same. Byte for byte what a join gives
(tests/test_translate_splice.py). Layouts and their assignments are kept with the port's entry
(`ServicePortBackends.layouts`), so that the entry that replaces it finds them.
"""

from __future__ import annotations

import functools
import weakref
from array import array
from itertools import compress
from operator import add

from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from xdsfleet.cache import wire
from xdsfleet.model.fleet import Member
from xdsfleet.translate.localities import LocalityView, Place, compact
from xdsfleet.translate.memo import memoised
from xdsfleet.translate.names import pinned_cluster_name
from xdsfleet.translate.placement import (
    DEFAULT_PLACEMENT,
    Placement,
    member_tier,
    weights_and_whether_alone,
)
from xdsfleet.translate.proto import Message, Serialized
from xdsfleet.translate.services import Backend, MemberPort, ServicePortBackends


def assignment_name(port: ServicePortBackends, placement: Placement) -> str:
    """The cluster (and assignment) name: pinned placements have their own."""
    cluster = port.key.cluster
    return pinned_cluster_name(cluster, placement.pinned) if placement.pinned else cluster


@memoised
def assignment(
    port: ServicePortBackends, view: LocalityView, placement: Placement = DEFAULT_PLACEMENT
) -> Message:
    """The assignment of the service port's cluster as a node at `view` sees it."""
    layout = _layout(port, placement)
    table = _tier_table(view, placement.tiers, placement.pinned)
    # Many views give the same tiers (every node in a far region, say): they share one object.
    return _joined(layout, layout.tiers_at(table))


class _Layout:
    """A service port's localities under one placement, in every view's order but the tiers:
    serialized once, sorted by (region, zone, member), without the weight-0 ones (Envoy wants
    locality weights of at least 1: a drained member, a member weighted 0 and a locality with
    only draining endpoints are left out). Each view then only looks up the tier of each place
    and joins bytes: a port's change costs one layout and a join per view, not a build per view.
    Kept with its port's entry, and its assignments with it (`joins`): they live as long as
    the entry (a view no longer asked for keeps its assignment until the port changes)."""

    __slots__ = (
        "__weakref__",
        "alone",
        "blocks",
        "cut",
        "heads",
        "joins",
        "looked_up",
        "members",
        "name",
        "places",
        "policy",
        "sizes",
        "weights",
    )

    def __init__(self, port: ServicePortBackends, placement: Placement) -> None:
        weights, alone = weights_and_whether_alone(port, placement)
        check = placement.health_check_port
        found: list[tuple[Place, bytes, bytes]] = []
        for member_port, member_weights in zip(port.members, weights, strict=True):
            places, blocks = _member_localities(member_port, check)
            for place, data, weight in zip(places, blocks, member_weights, strict=True):
                if weight:
                    found.append((place, data, _weight(weight)))
        found.sort()  # by place (region, zone, member): unique, so the bytes are never compared
        self.places: tuple[Place, ...] = tuple(f[0] for f in found)
        self.blocks: tuple[bytes, ...] = tuple(f[1] for f in found)
        self.weights: tuple[bytes, ...] = tuple(f[2] for f in found)
        self.sizes = tuple(map(add, map(len, self.blocks), map(len, self.weights)))
        self.heads = tuple(map(_head, self.sizes))  # framing without a priority
        self.name = wire.text(_CLUSTER_NAME, assignment_name(port, placement))
        self.policy = b""
        if placement.overprovisioning_factor is not None:
            policy = endpoint_pb2.ClusterLoadAssignment.Policy()
            policy.overprovisioning_factor.value = placement.overprovisioning_factor
            self.policy = wire.length_delimited(
                _POLICY, policy.SerializeToString(deterministic=True)
            )
        # Whether each member's weights are its own alone: only then can a member be left out
        # without laying the others out again.
        self.alone = alone
        self.members = port.members  # what it was laid out from
        self.cut: _Cut | None = None  # set on a layout derived by leaving members out
        # Its assignments by tiers: views with the same tiers share one; a derived layout's
        # are cut out of these.
        self.joins: dict[tuple[int, ...], _Joined] = {}
        # The tiers each view's table gave its places (id of the table -> the table, those
        # tiers): a derived layout's are the source's less the places it leaves out.
        self.looked_up: dict[int, tuple[_TierTable, tuple[int, ...]]] = {}

    def tiers_at(self, table: _TierTable) -> tuple[int, ...]:
        """The tier of each place for the view of `table`."""
        known = self.looked_up.get(id(table))
        if known is not None and known[0] is table:
            return known[1]
        cut = self.cut
        source = cut.source() if cut is not None else None
        before = source.looked_up.get(id(table)) if source is not None else None
        if cut is not None and before is not None and before[0] is table:
            tiers = tuple(compress(before[1], cut.keep))
        else:
            tiers = tuple(map(table.__getitem__, self.places))
        self.looked_up[id(table)] = (table, tiers)
        return tiers

    def without(self, port: ServicePortBackends) -> _Layout | None:
        """The layout of `port` made from this one, when `port` has the very members this one
        was laid out from less some (a member lost), and their weights do not depend on each
        other; else None. Leaves the lost members' localities out: nothing is serialized,
        weighed nor sorted again."""
        members, now = self.members, port.members
        if not self.alone or len(now) >= len(members):
            return None
        gone = set()
        found = 0
        for member_port in members:
            if found < len(now) and now[found] is member_port:
                found += 1
            else:
                gone.add(member_port.member.name)
        if found < len(now):
            return None  # a member changed, or came: lay it out anew
        keep = tuple([place.member not in gone for place in self.places])
        derived: _Layout = _Layout.__new__(_Layout)
        derived.places = tuple(compress(self.places, keep))
        derived.blocks = tuple(compress(self.blocks, keep))
        derived.weights = tuple(compress(self.weights, keep))
        derived.sizes = tuple(compress(self.sizes, keep))
        derived.heads = tuple(compress(self.heads, keep))
        derived.name, derived.policy = self.name, self.policy
        derived.alone, derived.members = True, now
        derived.cut = _Cut(weakref.ref(self), keep)
        derived.joins = {}
        derived.looked_up = {}
        return derived


class _Cut:
    """How a layout was derived from another (`_Layout.without`): which of its localities it
    keeps."""

    __slots__ = ("_sources", "keep", "left_out", "source")

    def __init__(self, source: weakref.ref[_Layout], keep: tuple[bool, ...]) -> None:
        self.source = source
        self.keep = keep
        self.left_out = tuple(i for i, kept in enumerate(keep) if not kept)
        # The source's tiers that give the kept localities these tiers, at the same priorities.
        self._sources: dict[tuple[int, ...], tuple[int, ...]] | None = None

    def source_at(self, tiers: tuple[int, ...]) -> _Joined | None:
        """An assignment of the source layout that gives each kept locality `tiers`, at the
        same priorities (no tier in use that only a lost locality had: compacting would move
        the others), if the source lives."""
        source = self.source()
        if source is None:
            return None
        if self._sources is None:
            self._sources = {}
            for joined in source.joins:
                kept = tuple(compress(joined, self.keep))
                if set(kept) == set(joined):
                    self._sources[kept] = joined
        found = self._sources.get(tiers)
        return source.joins.get(found) if found is not None else None


def _layout(port: ServicePortBackends, placement: Placement) -> _Layout:
    """The port's layout under `placement`, kept with the port's entry (as long as it lives),
    and derived from the layout of the entry it replaced when a member was lost."""
    found = port.layouts.get(placement)
    if isinstance(found, _Layout):
        return found
    replaced = port.replaced() if port.replaced is not None else None
    before = replaced.layouts.get(placement) if replaced is not None else None
    derived = before.without(port) if isinstance(before, _Layout) else None
    layout = derived or _Layout(port, placement)
    port.layouts[placement] = layout
    return layout


class _TierTable(dict[Place, int]):
    """Place -> tier for one view and one placement's tiers and pins, filled as places are
    looked up: the same few places recur in every service port."""

    def __init__(
        self, view: LocalityView, tiers: tuple[tuple[str, ...], ...], pinned: tuple[str, ...]
    ) -> None:
        super().__init__()
        self._rule = (view, tiers, pinned)

    def __missing__(self, place: Place) -> int:
        found = self[place] = member_tier(*self._rule, place)
        return found


@memoised
def _tier_table(
    view: LocalityView, tiers: tuple[tuple[str, ...], ...], pinned: tuple[str, ...]
) -> _TierTable:
    return _TierTable(view, tiers, pinned)


class _Joined(Serialized):
    """An assignment joined from a layout at `tiers`, and each block's length in the order
    they are sent (that order follows from the tiers): what `_spliced` cuts a lost member's
    blocks out by. Two bytes a block when every block is under 64 KiB: kept with every
    assignment, so they count."""

    __slots__ = ("_cut", "_lengths", "tiers")

    def __init__(
        self,
        data: bytes,
        tiers: tuple[int, ...],
        lengths: array[int],
        cut: list[int] | None = None,
    ) -> None:
        super().__init__(endpoint_pb2.ClusterLoadAssignment, data)
        self.tiers = tiers
        self._lengths = lengths
        # Spliced: the lengths are those of the source less the blocks at these positions,
        # made when a later splice asks (`lengths`); most never are.
        self._cut = cut

    def lengths(self) -> array[int]:
        """Each block's length, in the order they are sent."""
        if self._cut is not None:
            lengths = array(self._lengths.typecode, self._lengths)
            for position in reversed(self._cut):
                del lengths[position]
            self._lengths, self._cut = lengths, None
        return self._lengths


def _order(tiers: tuple[int, ...]) -> list[int]:
    """The layout's index of each block in the order they are sent: by tier, and within a
    tier in the layout's (region, zone, member) order (a stable sort)."""
    return sorted(range(len(tiers)), key=tiers.__getitem__)


def _joined(layout: _Layout, tiers: tuple[int, ...]) -> _Joined:
    """The assignment of `layout` with each locality at its tier: serialized as deterministic
    serialization lays the message out: fields in number order, the repeated `endpoints` one
    framed block after another, and each block's `priority` (field 5) after its locality,
    endpoints and weight (fields 1-3). Proto3 leaves a 0 priority out. Cut out of an assignment
    of the layout this one was derived from, when there is one at the same priorities."""
    found = layout.joins.get(tiers)
    if found is not None:
        return found
    previous = layout.cut.source_at(tiers) if layout.cut is not None else None
    if previous is not None and layout.cut is not None:
        found = _spliced(previous, layout, layout.cut, tiers)
    else:
        # Compact only the tiers still in use, or a dropped locality would leave a gap.
        priority = compact(tiers)
        parts = [layout.name]
        blocks, weights, heads, sizes = layout.blocks, layout.weights, layout.heads, layout.sizes
        lengths = array("I")
        for index in _order(tiers):
            tier = priority[tiers[index]]
            if tier:
                suffix = _priority(tier)
                head = _head(sizes[index] + len(suffix))
                parts += (head, blocks[index], weights[index], suffix)
                lengths.append(len(head) + sizes[index] + len(suffix))
            else:
                parts += (heads[index], blocks[index], weights[index])
                lengths.append(len(heads[index]) + sizes[index])
        parts.append(layout.policy)
        if max(lengths, default=0) < 0x10000:
            lengths = array("H", lengths)
        found = _Joined(b"".join(parts), tiers, lengths)
    layout.joins[tiers] = found
    return found


def _spliced(previous: _Joined, layout: _Layout, cut: _Cut, tiers: tuple[int, ...]) -> _Joined:
    """`previous` without the blocks of the localities `cut` leaves out: the bytes between
    them are copied as they are, since every other block keeps its priority and its framing."""
    data = memoryview(previous.SerializeToString())  # slices of it copy nothing
    lengths = previous.lengths()
    before = previous.tiers
    # Where each block left out is sent: after every block of a lower tier, and after those of
    # its tier that come before it in the layout (the order is a stable sort by tier).
    positions = sorted(
        sum(map(before[index].__gt__, before)) + before[:index].count(before[index])
        for index in cut.left_out
    )
    pieces = []
    at = 0  # where the next piece kept starts
    begin = len(layout.name)  # where block `done` starts: the name comes first
    done = 0
    for position in positions:
        begin += sum(lengths[done:position])
        pieces.append(data[at:begin])
        at = begin = begin + lengths[position]
        done = position + 1
    pieces.append(data[at:])
    return _Joined(b"".join(pieces), tiers, lengths, positions)


# Field numbers of envoy.config.endpoint.v3 (checked against the descriptors in the tests).
_CLUSTER_NAME = 1  # ClusterLoadAssignment.cluster_name
_ENDPOINTS = 2  # ClusterLoadAssignment.endpoints
_POLICY = 4  # ClusterLoadAssignment.policy
_LOCALITY = 1  # LocalityLbEndpoints.locality
_LB_ENDPOINTS = 2  # LocalityLbEndpoints.lb_endpoints
_WEIGHT = 3  # LocalityLbEndpoints.load_balancing_weight
_PRIORITY = 5  # LocalityLbEndpoints.priority
_VALUE = 1  # google.protobuf.UInt32Value.value
_REGION, _ZONE, _SUB_ZONE = 1, 2, 3  # Locality
_ENDPOINT = 1  # LbEndpoint.endpoint
_HEALTH_STATUS = 2  # LbEndpoint.health_status
_ENDPOINT_ADDRESS = 1  # Endpoint.address
_HEALTH_CHECK_CONFIG = 2  # Endpoint.health_check_config
_PORT_VALUE = 1  # Endpoint.HealthCheckConfig.port_value
_SOCKET_ADDRESS = 1  # Address.socket_address
_ADDRESS, _SOCKET_PORT = 2, 3  # SocketAddress.address, .port_value


@functools.cache
def _priority(tier: int) -> bytes:
    return wire.varint(_PRIORITY << 3) + wire.varint(tier)


@functools.lru_cache(maxsize=4096)
def _head(size: int) -> bytes:
    """The tag and length of an `endpoints` block of `size` bytes."""
    return wire.header(_ENDPOINTS, size)


def _member_localities(
    member_port: MemberPort, health_check_port: int | None
) -> tuple[tuple[Place, ...], tuple[bytes, ...]]:
    """The member's zones, in zone order: the place of each, and its locality serialized
    without weight nor priority (fields 1-2): every view and every weight shares it, and
    joining its bytes costs a fraction of building and encoding it again. Kept with the
    member port (`MemberPort.serialized`), for the health-check port last asked."""
    kept = member_port.serialized
    if isinstance(kept, _Localities) and kept.health_check_port == health_check_port:
        return kept.places, kept.blocks
    found = _Localities(member_port, health_check_port)
    object.__setattr__(member_port, "serialized", found)
    return found.places, found.blocks


class _Localities:
    __slots__ = ("blocks", "health_check_port", "places")

    def __init__(self, member_port: MemberPort, health_check_port: int | None) -> None:
        self.health_check_port = health_check_port
        self.places, self.blocks = _serialized_localities(member_port, health_check_port)


def _serialized_localities(
    member_port: MemberPort, health_check_port: int | None
) -> tuple[tuple[Place, ...], tuple[bytes, ...]]:
    member = member_port.member
    check = b""
    if health_check_port is not None:
        check = wire.length_delimited(_HEALTH_CHECK_CONFIG, _uint32(_PORT_VALUE, health_check_port))
    places = tuple(
        _place(member.region, zone.zone, member.name, member.zone) for zone in member_port.zones
    )
    blocks = tuple(_locality(member, zone.zone, zone.backends, check) for zone in member_port.zones)
    return places, blocks


@memoised
def _place(region: str, zone: str, member: str, member_zone: str) -> Place:
    """One object per place: every service port of a member has a locality there, and a fleet
    of 100,000 endpoints would otherwise hold a place per locality for the collector to walk."""
    return Place(region, zone, member, member_zone)


@functools.lru_cache(maxsize=4096)
def _weight(weight: int) -> bytes:
    """A locality's `load_balancing_weight` (field 3, a UInt32Value), serialized."""
    return wire.length_delimited(_WEIGHT, _uint32(_VALUE, weight))


def _locality(member: Member, zone: str, backends: tuple[Backend, ...], check: bytes) -> bytes:
    """A LocalityLbEndpoints' `locality` and `lb_endpoints` (fields 1-2), serialized by hand as
    deterministic serialization lays them out (fields in number order, proto3 defaults left
    out; tests/test_translate_endpoints.py holds the protobuf-built reference): building 100,000
    messages only to serialize them was most of a first publish at E = 100,000, and left the
    collector half a million objects to walk."""
    locality = (
        wire.text(_REGION, member.region)
        + wire.text(_ZONE, zone)
        + wire.text(_SUB_ZONE, member.name)
    )
    parts = [wire.length_delimited(_LOCALITY, locality)]
    endings: dict[tuple[int, bool], _Ending] = {}
    for backend in backends:
        key = (backend.port, backend.draining)
        ending = endings.get(key)
        if ending is None:
            ending = endings[key] = _Ending(backend.port, backend.draining, check)
        address = backend.address.encode()
        size = len(address)
        if 0 < size < 0x80 - ending.entry:
            # Every length fits one byte: the five nested headers are written at once.
            headers = (
                _LB_ENDPOINTS_TAG,
                size + ending.entry,
                _ENDPOINT_TAG,
                size + ending.endpoint,
                _ADDRESS_TAG,
                size + ending.address,
                _SOCKET_ADDRESS_TAG,
                size + ending.socket,
                _HOST_TAG,
                size,
            )
            parts.append(bytes(headers) + address + ending.tail)
        else:
            # An empty address is left out, as proto3 leaves out empty strings.
            host = wire.length_delimited(_ADDRESS, address) if address else b""
            socket = host + ending.port
            endpoint = (
                wire.length_delimited(
                    _ENDPOINT_ADDRESS, wire.length_delimited(_SOCKET_ADDRESS, socket)
                )
                + check
            )
            entry = wire.length_delimited(_ENDPOINT, endpoint) + ending.status
            parts.append(wire.length_delimited(_LB_ENDPOINTS, entry))
    return b"".join(parts)


class _Ending:
    """What follows the address in an `lb_endpoints` entry of a given port and health (its
    port, the health check, the status), and the sizes of the nested messages around the
    address, less the address's own length."""

    __slots__ = ("address", "endpoint", "entry", "port", "socket", "status", "tail")

    def __init__(self, port: int, draining: bool, check: bytes) -> None:
        # `port_value` is in a oneof: present, so serialized, even when 0.
        self.port = wire.varint(_SOCKET_PORT << 3) + wire.varint(port)
        self.status = _DRAINING if draining else _HEALTHY
        self.tail = self.port + check + self.status
        self.socket = 2 + len(self.port)  # the address's tag and length, then the port
        self.address = 2 + self.socket
        self.endpoint = 2 + self.address + len(check)
        self.entry = 2 + self.endpoint + len(self.status)


def _uint32(field_number: int, value: int) -> bytes:
    """A varint field; proto3 leaves 0 out."""
    return wire.varint(field_number << 3) + wire.varint(value) if value else b""


# Tags (field number, wire type 2) of the nested messages of an `lb_endpoints` entry.
_LB_ENDPOINTS_TAG = _LB_ENDPOINTS << 3 | 2
_ENDPOINT_TAG = _ENDPOINT << 3 | 2
_ADDRESS_TAG = _ENDPOINT_ADDRESS << 3 | 2
_SOCKET_ADDRESS_TAG = _SOCKET_ADDRESS << 3 | 2
_HOST_TAG = _ADDRESS << 3 | 2
_HEALTHY = _uint32(_HEALTH_STATUS, health_check_pb2.HEALTHY)
_DRAINING = _uint32(_HEALTH_STATUS, health_check_pb2.DRAINING)
