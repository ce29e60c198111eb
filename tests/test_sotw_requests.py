"""SotW requests read from their bytes (`server/requests.py`): an unchanged list of names is told
by comparing bytes, and the shortcut never answers differently from decoding the request whole.

The property drives one stream's reader through sequences of requests written in any field
order, with names in one run or split, unknown fields anywhere, lengths written long, and
garbage, over a few types and lists of names that come back: whatever it reads must be what
protobuf decodes, and when it says the names are those of the last request of the type, they
are, in the same order.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT, ROUTE
from xdsfleet.server.requests import Runs, SotwRequests

Request = discovery_pb2.DiscoveryRequest
UNKNOWN_TYPE = "type.googleapis.com/unknown.Type"


def varint(value: int, extra: int = 0) -> bytes:
    """`value` as a varint, written `extra` bytes longer than it needs (protobuf accepts it)."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    for _ in range(extra):
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def field(number: int, payload: bytes, *, long_length: int = 0) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload), long_length) + payload


def without_node(data: bytes) -> bytes:
    """`data` without a `node` right after a leading `version_info` (each if there): what the
    reader decodes of a request it reads by its names' bytes."""

    def skip(pos: int) -> int:  # past the length-delimited field at `pos`
        length, shift = 0, 0
        pos += 1
        while data[pos] & 0x80:
            length |= (data[pos] & 0x7F) << shift
            shift += 7
            pos += 1
        return pos + 1 + (length | data[pos] << shift)

    start = skip(0) if data[:1] == b"\x0a" else 0
    if data[start : start + 1] != b"\x12":
        return data
    return data[:start] + data[skip(start) :]


def names_run(names: list[str]) -> bytes:
    return b"".join(field(3, name.encode()) for name in names)


def request(
    names: list[str],
    type_url: str = ENDPOINT,
    version: str = "",
    nonce: str = "",
    node: bool = False,
) -> bytes:
    """A request as protobuf writes it (field-number order)."""
    message = Request(
        version_info=version, resource_names=names, type_url=type_url, response_nonce=nonce
    )
    if node:
        message.node.CopyFrom(base_pb2.Node(id="n", cluster="c"))
    return bytes(message.SerializeToString())


def read_all(reader: SotwRequests, requests: list[bytes]) -> list[bool]:
    return [reader.read(data)[1] for data in requests]


# Names: short ones, long ones (a two-byte length), one not ASCII, an empty one.
NAMES = ("a", "b", "cluster-" + "x" * 140, "c\u00e9", "", "d")
NAME_LISTS = st.lists(st.sampled_from(NAMES), max_size=5)
# How a request's fields are ordered: mostly as protobuf writes them, where the shortcut is.
ORDERS = ("protobuf", "protobuf", "protobuf", "names first", "names split", "shuffled")


@st.composite
def written(
    draw: st.DrawFn, lists: list[list[str]], again: tuple[list[str], str] | None
) -> tuple[bytes, tuple[list[str], str]]:
    """A request's bytes, written in any of the ways a client could, and its names and type:
    those of `again` half the time (an ACK, as most requests are)."""
    if again is not None and draw(st.booleans()):
        names, type_url = again
    else:
        names = draw(st.sampled_from(lists))
        type_url = draw(st.sampled_from((ENDPOINT, ROUTE, CLUSTER, UNKNOWN_TYPE)))
    fields: list[bytes] = []
    if draw(st.booleans()):
        fields.append(field(1, draw(st.sampled_from(("", "v1", "v" * 200))).encode()))
    if draw(st.booleans()):
        node = base_pb2.Node(id=draw(st.sampled_from(("n", "n" * 300))), cluster="c")
        fields.append(field(2, node.SerializeToString(), long_length=draw(st.integers(0, 1))))
    long_names = draw(st.integers(0, 1)) if draw(st.integers(0, 9)) == 0 else 0
    name_fields = [field(3, n.encode(), long_length=long_names) for n in names]
    rest = [field(4, type_url.encode())]
    if draw(st.booleans()):
        rest.append(field(5, draw(st.sampled_from(("1", "2"))).encode()))
    if draw(st.integers(0, 3)) == 0:
        error = status_pb2.Status(code=3, message="refused")
        rest.append(field(6, error.SerializeToString()))
    if draw(st.integers(0, 5)) == 0:
        rest.append(field(7, b""))  # resource_locators
    if draw(st.integers(0, 5)) == 0:
        rest.append(varint(99 << 3) + varint(draw(st.integers(0, 300))))  # unknown, a varint
    if draw(st.integers(0, 5)) == 0:
        rest.append(field(98, b"unknown"))
    order = draw(st.sampled_from(ORDERS))
    if order == "protobuf":
        parts = fields + name_fields + rest
    elif order == "names first":
        parts = name_fields + fields + rest
    elif order == "names split":
        cut = draw(st.integers(0, len(name_fields)))
        parts = fields + name_fields[:cut] + rest[:1] + name_fields[cut:] + rest[1:]
    else:
        parts = draw(st.permutations(fields + name_fields + rest))
    data = b"".join(parts)
    damage = draw(st.integers(0, 14))
    if damage == 0 and data:
        data = data[: draw(st.integers(0, len(data) - 1))]  # cut short
    elif damage == 1 and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    elif damage == 2:
        data = draw(st.binary(max_size=40))
    return data, (names, type_url)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_reading_from_bytes_is_decoding_whole(data: st.DataObject) -> None:
    lists = data.draw(st.lists(NAME_LISTS, min_size=1, max_size=3))
    keep_at_most = data.draw(st.sampled_from((2, 100)))
    reader = SotwRequests(Runs(), keep_at_most)
    last: dict[str, list[str]] = {}  # the names of the last request of each type read
    previous = None
    for _ in range(data.draw(st.integers(1, 12))):
        raw, previous = data.draw(written(lists, previous))
        try:
            whole = Request.FromString(raw)
        except DecodeError:
            whole = None
        try:
            read, same = reader.read(raw)
        except DecodeError:
            assert whole is None, "a request protobuf decodes refused"
            continue
        if same:
            # Told by the bytes: the names are the last request's of the type, in order. The
            # node is left unread (rule 1: a later request's is not looked at), even malformed.
            whole = Request.FromString(without_node(raw))
            assert list(whole.resource_names) == last[whole.type_url]
            assert not read.resource_names
            assert len(whole.resource_names) <= keep_at_most
            expected = Request()
            expected.CopyFrom(whole)
            expected.ClearField("resource_names")
            assert read == expected
            assert read.SerializeToString() == expected.SerializeToString()
        else:
            assert whole is not None, "malformed bytes read as a request"
            assert read == whole
            assert read.SerializeToString() == whole.SerializeToString()
        last[whole.type_url] = list(whole.resource_names)


CLUSTERS = [f"cluster-{i:04d}.fleet.svc" for i in range(1000)]


def test_an_ack_of_the_same_names_is_told_by_its_bytes() -> None:
    reader = SotwRequests(Runs(), 10_000)
    first = request(CLUSTERS, node=True)
    acks = [request(CLUSTERS, version=f"v{i}", nonce=str(i)) for i in range(3)]
    assert read_all(reader, [first, *acks]) == [False, True, True, True]
    read, _ = reader.read(acks[-1])
    assert (read.version_info, read.response_nonce, read.type_url) == ("v2", "2", ENDPOINT)
    # The node on every request, as Envoy sends it, and the names before the other fields, as
    # our benchmark's clients write them.
    assert reader.read(request(CLUSTERS, version="v3", nonce="3", node=True))[1]
    names_first = (
        names_run(CLUSTERS) + Request(type_url=ENDPOINT, version_info="v4").SerializeToString()
    )
    assert reader.read(names_first)[1]


def test_a_later_requests_node_is_not_decoded() -> None:
    # An Envoy at its default sends its node (tens of kB of extensions) on every request:
    # only the first's counts (rule 1), so an ACK read by its names' bytes leaves it unread.
    reader = SotwRequests(Runs(), 10_000)
    first, _ = reader.read(request(CLUSTERS, node=True))
    assert first.node.id == "n"
    ack, same = reader.read(request(CLUSTERS, version="v1", nonce="1", node=True))
    assert same
    assert not ack.HasField("node")
    assert ack.version_info == "v1"
    garbage_node = field(1, b"v2") + field(2, b"\xff\xff") + names_run(CLUSTERS)
    garbage_node += Request(type_url=ENDPOINT, response_nonce="2").SerializeToString()
    ack, same = reader.read(garbage_node)
    assert same
    assert ack.response_nonce == "2"


def test_names_changed_reordered_or_of_another_type_are_read_whole() -> None:
    reader = SotwRequests(Runs(), 10_000)
    reader.read(request(CLUSTERS))
    reader.read(request(["r1"], type_url=ROUTE))
    for changed in (
        request([*CLUSTERS, "new"]),
        request(CLUSTERS[:-1]),
        request(CLUSTERS[::-1]),
        request(CLUSTERS, type_url=ROUTE),
    ):
        read, same = reader.read(changed)
        assert not same
        assert read == Request.FromString(changed)
    # Each was the last of its type: the route's list is now the clusters'.
    assert reader.read(request(CLUSTERS, type_url=ROUTE, nonce="1"))[1]
    assert not reader.read(request(CLUSTERS, nonce="1"))[1]  # the last EDS was reversed


def test_long_lists_and_unknown_types_are_not_kept() -> None:
    reader = SotwRequests(Runs(), 999)
    assert read_all(reader, [request(CLUSTERS)] * 2) == [False, False]
    reader = SotwRequests(Runs(), 10_000)
    assert read_all(reader, [request(["a"], type_url=UNKNOWN_TYPE)] * 2) == [False, False]


def test_streams_sending_the_same_names_share_one_copy() -> None:
    runs = Runs()
    readers = [SotwRequests(runs, 10_000) for _ in range(3)]
    for reader in readers:
        reader.read(request(CLUSTERS))
    assert len(runs) == 1
    other = SotwRequests(runs, 10_000)
    other.read(request(CLUSTERS[:500]))
    assert len(runs) == 2
    del readers, reader, other
    assert len(runs) == 0  # a list no stream keeps is let go


def test_lists_that_differ_in_a_byte_the_key_misses_are_each_shared() -> None:
    """`Runs` keys on the length and a sample of the bytes: two profiles' lists with a name
    each that differ in one letter (a zone's) share a key, and each is still shared by the
    streams that send it."""
    for i in range(len(CLUSTERS)):
        other = [*CLUSTERS[:i], CLUSTERS[i].replace("cluster", "klaster"), *CLUSTERS[i + 1 :]]
        first, second = names_run(CLUSTERS), names_run(other)
        if first[::64] == second[::64]:
            break
    assert first[::64] == second[::64], "no such pair: the test needs another"
    runs = Runs()
    readers = [SotwRequests(runs, 10_000) for _ in range(4)]
    for reader, names in zip(readers, (CLUSTERS, other, CLUSTERS, other), strict=True):
        reader.read(request(names))
    assert len(runs) == 2
    assert all(
        reader.read(request(names, nonce="1"))[1]
        for reader, names in zip(readers, (CLUSTERS, other, CLUSTERS, other), strict=True)
    )
    del readers, reader
    assert len(runs) == 0
