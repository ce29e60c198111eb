"""Pages of lists decoded and parsed, in worker processes when there is much to decode.

At E = 100,000, a cold start from 50 members lists 150,000 objects. Decoding their JSON and
parsing each object into the model (`prepare`) is seconds of Python, and in the server's process
every second of it holds the one interpreter lock: the server used one core while the machine
had two (BENCHMARKS.md, kubestart). Here each page, as the bytes the API server sent, goes to a
small pool of worker processes that decode it, prepare every object and send the results back
pickled the fast way (`sources.pickling`); a reflector's thread then only unpickles them.

The pool costs processes and a start-up (~0.5 s: a fresh interpreter importing the parser), so
it starts only once `pool_min_bytes` of pages have been decoded in this process, and stops
after `idle_seconds` without a page: small fleets and a quiet server never run it. Without a
pool (too little to decode, no way to spawn one, or one that broke) pages are decoded in the
calling thread, at most `_PARSING` at once.

It must not decide what a list means: bytes in, `Page` out, the same in a worker or not. It
must not import the `kubernetes` client (a worker imports this module and the parser only).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Generic, TypeVar

import structlog

from xdsfleet.documents.reading import JsonObject
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.sources import pickling
from xdsfleet.sources.kube.objects import key_of

log = structlog.get_logger(__name__)

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)

# How many threads decode or unpickle a page at once. Both hold the interpreter lock; when all
# of a big fleet's reflectors did it together (150 at start-up for 50 members), the event loop's
# thread got one turn in 150 and /healthz took up to 0.85 s at E = 100,000. The others wait on
# this semaphore instead, where they do not compete for the lock.
_PARSING = threading.BoundedSemaphore(2)

# Pages decoded here before a pool is worth starting (its workers take ~0.5 s of CPU each to
# start; a MiB of pages is ~0.15 s to decode and parse): a member of a few thousand objects
# never starts one.
POOL_MIN_BYTES = 2 * 2**20
IDLE_SECONDS = 60.0


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


# --- The workers ---
#
# A worker is `python -c WORKER`: it imports this module (and so the parser) and nothing else,
# unlike multiprocessing's spawn, which imports the parent's main module in every worker (the
# `xdsfleet` script: the whole server, a second or more each). Requests and answers are
# pickles, each after its length: (bytes, prepare) in, (True, page pickled the fast way) or
# (False, what was raised) out. A worker says it is ready with one answer before any request.

WORKER = "from xdsfleet.sources.kube.decoding import work; work()"
_COLLECT_EVERY = 64
_LENGTH = struct.Struct("!Q")


def _send(stream: IO[bytes], blob: bytes) -> None:
    stream.write(_LENGTH.pack(len(blob)))
    stream.write(blob)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
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
    _send(answers, pickle.dumps((True, b"")))
    pages = 0
    while (request := _receive(requests)) is not None:
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
        _send(answers, pickle.dumps(answer))


class _Broken(Exception):
    """A worker that died or could not start."""


class _Worker:
    def __init__(self) -> None:
        # The worker imports what this process can: the same sys.path.
        path = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._requests, self._answers = self.process.stdin, self.process.stdout

    def answer(self) -> tuple[bool, Any]:
        try:
            blob = _receive(self._answers)
        except (OSError, ValueError):  # ValueError: closed by `stop` meanwhile
            blob = None
        if blob is None:
            raise _Broken(f"a decode worker ended (exit code {self.process.poll()})")
        found: tuple[bool, Any] = pickle.loads(blob)
        return found

    def ask(self, data: bytes, prepare: Prepare | None) -> tuple[bool, Any]:
        try:
            _send(self._requests, pickle.dumps((data, prepare), protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, ValueError) as error:  # ValueError: closed by `stop` meanwhile
            raise _Broken(f"a decode worker ended: {error}") from None
        return self.answer()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._requests.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._answers.close()


class Decoder:
    """Decodes pages for every reflector that has it (see the module docstring). Thread-safe;
    `decode` blocks: call it from a reflector's thread, never from the event loop."""

    def __init__(
        self,
        *,
        workers: int | None = None,
        pool_min_bytes: int = POOL_MIN_BYTES,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        """`workers`: processes in the pool (default: one per core the process may use; 0:
        never a pool)."""
        self._size = len(os.sched_getaffinity(0)) if workers is None else workers
        self._pool_min_bytes = pool_min_bytes
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []  # of the pool, started or starting
        self._idle: queue.Queue[_Worker] = queue.Queue()  # started and not decoding
        self._running = False  # a pool was started (and not stopped since)
        self._ready = False  # a worker of the pool has started
        self._decoded = 0  # bytes decoded here since the pool last stopped
        self._busy = 0  # pages in the pool
        self._used = 0.0  # time.monotonic() when the pool last took or gave back a page
        self._broken = False
        self._closed = threading.Event()
        self.pools_started = 0  # how many pools have started
        self.pooled = 0  # pages the pool decoded

    def decode(self, data: bytes, prepare: Prepare | None = None) -> Page:
        """The page `data`, decoded and prepared (in the pool when it runs). `prepare` must be
        picklable (a module-level function, or a partial of one) for the pool to take it."""
        worker = self._take(len(data))
        if worker is not None:
            try:
                ok, answer = worker.ask(data, prepare)
            except _Broken as error:
                self._break(error)
            else:
                self._give_back(worker)
                if not ok:
                    raise answer
                with _PARSING:
                    page: Page = pickling.loads(answer)
                self.pooled += 1
                return page
        with _PARSING:
            return decode_page(data, prepare)

    def _take(self, size: int) -> _Worker | None:
        """A worker of the pool for a page of `size` bytes; None: decode it here."""
        with self._lock:
            if self._broken or self._closed.is_set() or self._size < 1:
                return None
            if not self._running:
                self._decoded += size
                if self._decoded >= self._pool_min_bytes:
                    self._start()
                return None
            if not self._ready:
                return None  # its workers are starting: this thread is sooner
            self._busy += 1
        while True:
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                if self._broken or self._closed.is_set():
                    with self._lock:
                        self._busy -= 1
                    return None

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._busy -= 1
            self._used = time.monotonic()
        self._idle.put(worker)

    def _start(self) -> None:
        """Under the lock: start the workers, off the callers' threads (starting a process is
        slow), and take the pool into use once one of them is ready."""
        self._running, self._ready, self._used = True, False, time.monotonic()
        self.pools_started += 1
        log.info("decode_workers_starting", workers=self._size, decoded_bytes=self._decoded)
        threading.Thread(target=self._run_pool, name="decode-pool", daemon=True).start()

    def _run_pool(self) -> None:
        try:
            for _ in range(self._size):
                worker = _Worker()
                with self._lock:
                    self._workers.append(worker)
        except OSError as error:
            self._break(_Broken(f"decode workers could not start: {error}"))
            return
        for worker in list(self._workers):
            try:
                worker.answer()  # ready
            except _Broken as error:
                self._break(error)
                return
            with self._lock:
                if not self._ready:
                    log.info(
                        "decode_workers_ready", seconds=round(time.monotonic() - self._used, 2)
                    )
                self._ready = True
            self._idle.put(worker)
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        while not self._closed.wait(min(self._idle_seconds / 4, 5.0)):
            with self._lock:
                if self._broken or not self._running:
                    return
                if self._busy or time.monotonic() - self._used < self._idle_seconds:
                    continue
                self._running = self._ready = False
                self._decoded = 0
                workers, self._workers = self._workers, []
            log.info("decode_workers_stopped", idle_seconds=self._idle_seconds)
            self._drain(workers)
            return

    def _drain(self, workers: list[_Worker]) -> None:
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for worker in workers:
            worker.stop()

    def _break(self, error: Exception) -> None:
        """A worker died: every page is decoded here from now on (a pool that breaks may well
        break again)."""
        with self._lock:
            if not self._broken and not self._closed.is_set():
                log.warning("decode_workers_failed", error=str(error))
            self._broken = True
            self._busy = max(self._busy - 1, 0)
            workers, self._workers = self._workers, []
        threading.Thread(target=self._drain, args=(workers,), daemon=True).start()

    def close(self) -> None:
        """Stop the pool and wait for its processes (blocking: from a thread, not the loop).
        Pages still waiting for a worker are decoded by their threads."""
        self._closed.set()
        with self._lock:
            workers, self._workers = self._workers, []
            self._running = self._ready = False
        self._drain(workers)
