"""Keep grpc.aio's completions flowing while the event loop is busy.

grpc.aio's poller thread writes one byte to a socketpair per completion, and the loop's reader
for it reads one byte per wake-up while draining the whole completion queue
(`PollerCompletionQueue._handle_events`). When completions outnumber loop iterations (1,000
streams being fanned out to, with a publish running in slices between them), the unread bytes
fill the socket buffer, the poller blocks in write(2), and from then on one completion reaches
Python per loop iteration: every stream stalls (BENCHMARKS.md, finding 2.1;
`python -m benchmarks.wedge --fixed`). Each wake-up drains the whole queue anyway, so the bytes
beyond one carry no information: this wraps the reader so that it discards them first, leaving
the one byte gRPC's own handler reads. Upstream, the handler would read them itself.

Installed once per loop after the first gRPC server or channel exists (that creates the
poller). Finding the reader relies on asyncio's selector loop and on the handler's name: if
either is not there, nothing is changed and `install` says so.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
from collections.abc import Callable
from typing import Any

HANDLER_NAME = "_handle_events"


def _pending(fd: int) -> int:
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


def _draining(
    fd: int, handle_events: Callable[..., Any], args: tuple[Any, ...]
) -> Callable[[], None]:
    def read() -> None:
        extra = _pending(fd) - 1
        if extra > 0:
            os.read(fd, extra)
        handle_events(*args)

    return read


def install(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Wrap the gRPC poller's reader on `loop` (the running loop by default); True if found
    (or already wrapped)."""
    loop = loop or asyncio.get_running_loop()
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return False
    for key in list(selector.get_map().values()):
        reader = key.data[0] if isinstance(key.data, tuple) else None
        callback = getattr(reader, "_callback", None)
        if callback is None:
            continue
        if getattr(callback, "__qualname__", "").endswith("_draining.<locals>.read"):
            return True
        # gRPC registers a partial of the bound method (with the loop as argument).
        method = getattr(callback, "func", callback)
        if getattr(method, "__name__", None) != HANDLER_NAME:
            continue
        if type(getattr(method, "__self__", None)).__name__ != "PollerCompletionQueue":
            continue
        args = getattr(reader, "_args", ())
        loop.remove_reader(key.fd)
        loop.add_reader(key.fd, _draining(key.fd, callback, args))
        return True
    return False
