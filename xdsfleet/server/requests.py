"""SotW requests read from their bytes, an unchanged list of names told by its bytes (and a
Delta request's unchanged subscription told once).

A SotW request restates every name it asks for, its ACKs included: an EDS ACK of a fleet of
1,000 clusters names all of them, tens of kB. Decoding those names (~10 µs) and then telling
that they did not change (~20 µs) was most of such an ACK, and a fan-out's ACKs arrive together,
hundreds in one loop iteration that every stream waits for.

Protobuf writes a message's fields in field-number order (C++ for Envoy; upb for gRPC's C-core
xDS client and Python; Java's and Go's protobuf; protobufjs for grpc-js), so a request is
`version_info` (1), `node` (2), then its names (3) as one run, then the rest. A stream keeps
the last run of names of each type as bytes. A request whose bytes, once past a leading
`version_info` and `node`, go on with a run kept, and whose other bytes hold no name, names
exactly what the last request of that type named: only the other bytes are decoded (not the
`node` either: only a stream's first request's counts, rule 1), and the machine is told the
names are the same (`SotwStream.on_request`). Names first, as our benchmark's clients write
them, are found as well. Anything else (another order, names split into several runs, unknown
fields among them, garbage) is decoded whole, as gRPC's deserializer did: the shortcut never
answers differently from the full decode but for the node it leaves unread
(`tests/test_sotw_requests.py` holds it with hypothesis), and a malformed request raises
`DecodeError` either way, unless all that is malformed is a later request's node.

A run is kept only for a type the server serves and for lists no longer than the server's
request limits let through without looking at the names (`ads.Limits`), so a request read
this way passes those limits as its last one did. Runs are shared between streams that send
the same (`Runs`): a thousand streams of one profile keep one copy, not a thousand.

A Delta request names changes only, and gRPC decodes it; whether it changes no subscription
(an ACK's, most of them) is told once by `read_delta`, for the pacer and the machine alike.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from xdsfleet.cache import typeurls

_REQUEST = discovery_pb2.DiscoveryRequest
# The fields of a request other than its names: cleared to leave the names alone.
_NOT_NAMES = tuple(f.name for f in _REQUEST.DESCRIPTOR.fields if f.name != "resource_names")
# Tags of length-delimited `version_info` (1) and `node` (2): what may come before the names.
_VERSION_TAG = 0x0A
_NODE_TAG = 0x12
# A length's varint, in bytes: gRPC takes at most 4 MiB per message by default; 5 is 32 bits.
_LENGTH_BYTES = 5
# Bytes of a run sampled for its key in `Runs` (about 1 in this many), and the different runs
# a key holds at most.
_SAMPLE_STRIDE = 64
_PER_KEY = 8


class _Run:
    """A run of names as bytes, weakly referenced by `Runs` (bytes cannot be)."""

    __slots__ = ("__weakref__", "names")

    def __init__(self, names: bytes) -> None:
        self.names = names


class Runs:
    """The runs of names the streams keep, shared: each stream's reader asks for the copy
    another stream already keeps when the bytes are the same. Weak: a run no stream keeps is
    let go.

    Keyed by the run's length and a sample of its bytes, not by their hash: hashing 50 kB costs
    about as much as decoding it. Lists that differ in a name or two often share a key (the
    sample misses the bytes that differ), so a key holds a few runs, compared byte for byte;
    past `_PER_KEY` (only a client making lists to collide gets there) a run is kept unshared,
    which costs memory, never a wrong answer."""

    def __init__(self) -> None:
        self._runs: dict[tuple[int, bytes], list[weakref.ref[_Run]]] = {}

    def share(self, names: bytes) -> _Run:
        key = (len(names), names[::_SAMPLE_STRIDE])
        for ref in self._runs.get(key, ()):
            run = ref()
            if run is not None and run.names == names:
                return run
        run = _Run(names)
        # Looked up again: making the run may have run the collector, and a run it let go
        # may have emptied (and removed) the list.
        kept = self._runs.setdefault(key, [])
        if len(kept) < _PER_KEY:
            kept.append(weakref.ref(run, functools.partial(self._gone, key)))
        return run

    def _gone(self, key: tuple[int, bytes], ref: weakref.ref[_Run]) -> None:
        kept = self._runs[key]
        kept.remove(ref)
        if not kept:
            del self._runs[key]

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._runs.values())


def _names_start(data: bytes) -> tuple[int, int]:
    """Where a leading `version_info` ends and where the names would start: past it, then a
    `node`, each if there (skipped by its length, unread). -1 when a length is not one."""
    version_end = _past(data, 0, _VERSION_TAG)
    return version_end, -1 if version_end < 0 else _past(data, version_end, _NODE_TAG)


def _past(data: bytes, pos: int, tag: int) -> int:
    """Where the length-delimited field `tag` at `pos` ends; `pos` when it is not there, -1
    when its length is not one."""
    if pos >= len(data) or data[pos] != tag:
        return pos
    pos, length = _length(data, pos + 1)
    return -1 if pos < 0 else pos + length


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and where it ends; (-1, 0) when it is not a length."""
    if pos < len(data) and data[pos] < 0x80:
        return pos + 1, data[pos]  # one byte (a `version_info`'s): a quarter of the loop's cost
    length = 0
    for i in range(_LENGTH_BYTES):
        if pos + i >= len(data):
            break
        byte = data[pos + i]
        length |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return pos + i + 1, length
    return -1, 0


class SotwRequests:
    """One SotW stream's requests, read from their bytes (the module's docstring says how).

    `read` returns the request and whether its names are those of the last request of its
    type; if so, its `resource_names` are left empty (not decoded). Requests naming more than
    `keep_at_most` names are always decoded whole."""

    def __init__(self, runs: Runs, keep_at_most: int) -> None:
        self._shared = runs
        self._keep_at_most = keep_at_most
        # The last request's names of each type, as protobuf writes them (none: it named none,
        # or more than `keep_at_most`).
        self._runs: dict[str, _Run] = {}

    def read(self, data: bytes) -> tuple[Any, bool]:
        version_end, start = _names_start(data) if self._runs else (-1, -1)
        if start >= 0:
            for run in self._runs.values():
                if data.startswith(run.names, start):
                    rest = self._rest(data, version_end, start, run)
                    if rest is not None:
                        return rest, True
        request = _REQUEST.FromString(data)
        self._remember(request)
        return request, False

    def _rest(self, data: bytes, version_end: int, start: int, run: _Run) -> Any | None:
        """The request without the run at `start`, if it names nothing else and the run is
        its type's; None otherwise (and when the rest is malformed: the full decode says
        how). A `node` before the run is left unread: only a stream's first request's counts
        (rule 1), and an Envoy left at its default sends it on every request, ~60 kB that
        cost six times its thousand names to decode."""
        try:
            rest = _REQUEST.FromString(data[:version_end] + data[start + len(run.names) :])
        except DecodeError:
            return None
        kept = self._runs.get(rest.type_url)
        if rest.resource_names or kept is None or (kept is not run and kept.names != run.names):
            return None
        return rest

    def _remember(self, request: Any) -> None:
        """Keep the request's names as the run of its type, as protobuf writes them (a client
        that writes them otherwise never sends that run, and its requests are decoded whole)."""
        type_url = request.type_url
        if type_url not in typeurls.SHORT_NAMES:
            return  # unknown types are answered UNSUPPORTED, and there are any number of them
        self._runs.pop(type_url, None)
        count = len(request.resource_names)
        if not count or count > self._keep_at_most:
            return
        # Copied and cleared in C: building the message from the names is 2-5x dearer (each name
        # made a Python string and back), even with a 60 kB node to copy.
        names = _REQUEST()
        names.CopyFrom(request)
        for field in _NOT_NAMES:
            names.ClearField(field)
        names.DiscardUnknownFields()
        self._runs[type_url] = self._shared.share(names.SerializeToString())


def read_delta(request: Any) -> tuple[Any, bool]:
    """A Delta request as gRPC decoded it, and whether it changes no subscription: it answers a
    response (an ACK or a NACK) and subscribes, unsubscribes and says it holds nothing, as most
    requests do. Told once, here: the pacer (light or not) and the machine
    (`DeltaStream.on_request`) would each read those fields again (a repeated field read makes a
    container each time, ~0.1 us)."""
    unchanged = bool(
        request.response_nonce
        and not request.resource_names_subscribe
        and not request.resource_names_unsubscribe
        and not request.initial_resource_versions
    )
    return request, unchanged
