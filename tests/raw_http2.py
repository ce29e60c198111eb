"""A hostile gRPC client in raw HTTP/2: it opens an ADS stream, sends one request, reads a part
of the answer and vanishes, as a crashing or partitioned Envoy does mid-response.

Only the frames that takes: the connection preface, SETTINGS, one HEADERS frame (HPACK literals,
no compression state) and DATA. Abandoning a connection mid-message is what a well-behaved
client library cannot be made to do.
"""

from __future__ import annotations

import asyncio
import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS = 0x0, 0x1, 0x4
END_HEADERS = 0x4
ADS_SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """A frame: 24-bit length, type, flags, stream id, payload (RFC 9113 4.1)."""
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return head + payload


def _hpack_int(value: int) -> bytes:
    """RFC 7541 5.1 with a 7-bit prefix (string lengths, Huffman off)."""
    if value < 127:
        return bytes([value])
    out, value = bytearray([127]), value - 127
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n)) + n + _hpack_int(len(v)) + v


def grpc_message(payload: bytes) -> bytes:
    """The gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def open_stream(request: bytes, *, path: str = ADS_SOTW, stream: int = 1) -> bytes:
    """Everything a client sends to open the stream and send one request on it."""
    headers = b"".join(
        _literal(k, v)
        for k, v in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "xdsfleet"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    return (
        PREFACE
        + frame(SETTINGS, 0, 0, b"")
        + frame(HEADERS, END_HEADERS, stream, headers)
        + frame(DATA, 0, stream, grpc_message(request))
    )


async def read_part_and_vanish(port: int, request: bytes, *, read: int, reset: bool) -> int:
    """Open a stream, read DATA frames until they carried at least `read` bytes of the answer,
    then drop the connection: with a TCP reset (`reset`) or a plain close. Returns the DATA
    bytes read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = 0
    try:
        writer.write(open_stream(request))
        await writer.drain()
        while got < read:
            head = await reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            await reader.readexactly(length)
            if head[3] == DATA:
                got += length
    finally:
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
    return got
