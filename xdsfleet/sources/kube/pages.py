"""A page of a list, decoded and each object prepared: what a decode worker runs.

`decoding` hands pages of big lists to worker processes, each `python -c decoding.WORKER`,
which imports this module, the parser the reflector's `prepare` names and nothing else: not the
server's logging (structlog, and through it rich and pygments, was 0.12 s of CPU of each
worker's start, every cold start), unlike multiprocessing's spawn, which imports the parent's
main module in every worker (the `xdsfleet` script: the whole server, a second or more each).

A worker and its server talk by pickles, each after its length (`send`, `receive`): (bytes,
prepare) in, (True, page pickled the fast way: `sources.pickling`) or (False, what was raised)
out, in order. A worker says it is ready with one answer before any request.

It must not decide what a list means: bytes in, `Page` out, the same in a worker or not. It must
not import the `kubernetes` client or the server's logging.
"""

from __future__ import annotations

import gc
import json
import pickle
import signal
import struct
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Generic, TypeVar

from xdsfleet.documents.reading import JsonObject
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.sources import pickling
from xdsfleet.sources.kube.objects import key_of

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)

# A worker collects its cycles (a refusal's traceback) every so many pages.
_COLLECT_EVERY = 64
_LENGTH = struct.Struct("!Q")


class Unreadable(ValueError):
    """A page that is not a JSON object: the API server (or what answers for it) is not well."""


@dataclass(frozen=True, slots=True)
class Prepared(Generic[T]):
    """One API object, parsed: the model object (None: left out), or why it was refused."""

    key: Key
    generation: int  # metadata.generation
    parsed: T | None
    problems: tuple[Problem, ...] | None = None  # set when the parser refused it
    uid: str = ""  # metadata.uid: the same name may be another object after a delete


def prepare(parse: Callable[[JsonObject], T | None], obj: JsonObject) -> Prepared[T]:
    """`parse` turns one API object into a model object, None for objects to leave out, or
    raises `InvalidInput`. Pure: a reflector's thread or a worker process runs it."""
    key = key_of(obj)
    metadata = obj.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    uid = str(metadata.get("uid") or "")
    try:
        return Prepared(key, generation, parse(obj), uid=uid)
    except InvalidInput as invalid:
        return Prepared(key, generation, None, invalid.problems, uid)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: each object as `prepare` made it (the object itself without one),
    the list's resourceVersion and its continue token ("" on the last page)."""

    items: tuple[Any, ...]
    resource_version: str
    continue_token: str


Prepare = Callable[[JsonObject], Any]


def decode_page(data: bytes, prepare: Prepare | None = None) -> Page:
    """A page of a list (a `*List` object) as the API server sent it, decoded and prepared."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise Unreadable(f"unreadable answer: {error}") from None
    if not isinstance(document, dict):
        raise Unreadable("expected a JSON object")
    items = [item for item in document.get("items") or [] if isinstance(item, dict)]
    metadata = document.get("metadata") or {}
    return Page(
        tuple(map(prepare, items)) if prepare is not None else tuple(items),
        str(metadata.get("resourceVersion", "")),
        str(metadata.get("continue") or ""),
    )


def send(stream: IO[bytes], blob: bytes) -> None:
    stream.write(_LENGTH.pack(len(blob)) + blob)
    stream.flush()


def receive(stream: IO[bytes]) -> bytes | None:
    """The next blob, None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    blob = stream.read(length)
    return blob if len(blob) == length else None


def work() -> None:
    """A worker's life: decode each page asked for until standard input ends."""
    # Ctrl-C reaches the whole process group: the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A page's objects live until they are sent, then go all at once: the collector's passes
    # over them (automatic ones, as they pile up) find nothing and cost a third of the work.
    # Cycles (a refusal's traceback) are collected every `_COLLECT_EVERY` pages instead.
    gc.freeze()
    gc.disable()
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    send(answers, pickle.dumps((True, b"")))
    pages = 0
    while (request := receive(requests)) is not None:
        pages += 1
        if pages % _COLLECT_EVERY == 0:
            gc.collect()
        data, prepare = pickle.loads(request)
        answer: tuple[bool, Any]
        try:
            answer = (True, pickling.dumps(decode_page(data, prepare)))
        except Unreadable as error:
            answer = (False, error)
        except Exception:
            answer = (False, RuntimeError(f"decoding a page failed:\n{traceback.format_exc()}"))
        send(answers, pickle.dumps(answer))
