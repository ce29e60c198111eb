"""Pages of lists decoded and parsed, partly in worker processes when there is much to decode.

At E = 100,000, a cold start from 50 members lists 150,000 objects. Decoding their JSON and
parsing each object into the model (`prepare`) is seconds of Python, and in the server's process
every second of it holds the one interpreter lock: the server used one core while the machine
had two (BENCHMARKS.md, kubestart). Here a page, as the bytes the API server sent, may go to a
small pool of worker processes that decode it, prepare every object and send the results back
pickled the fast way (`sources.pickling`); the reflector's thread then only unpickles them.
Work is shared: a worker has at most `_WAITING` pages queued, and a page that finds every
worker that busy is decoded by its own thread. So the server's core works along, and where no
core is free (a loaded machine, a pod's CPU quota) few pages pay for the pickling both ways.

The pool costs processes and a start-up (~0.15 s of CPU each: a fresh interpreter importing the
parser), so it starts only once `pool_min_bytes` of pages have been decoded in this process,
and stops after `idle_seconds` without a page: small fleets and a quiet server never run it.
Without a pool (too little to decode, no way to start one, or one that broke) pages are decoded
in the calling thread, at most `_PARSING` at once.

What a worker runs is `pages` (decoding a page, preparing its objects): a worker imports that
and the parser only. This module must not decide what a list means, nor import the `kubernetes`
client.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import structlog

from xdsfleet.sources import pickling
from xdsfleet.sources.kube.pages import Page, Prepare, decode_page, receive, send

log = structlog.get_logger(__name__)

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


# --- The workers ---
#
# A worker is `python -c WORKER`, which runs `pages.work` (see there for how a worker and this
# process talk). Requests are queued in the worker's pipe, not handed over one at a time: a
# worker waiting for the server's thread to take its answer and send the next page would wait
# for that thread's turn of the interpreter lock, which 150 reflector threads share at start-up
# (the workers were idle half the time).

WORKER = "from xdsfleet.sources.kube.pages import work; work()"
# Pages queued for a worker beyond the one it decodes: enough that it never waits for the
# server's threads between two, few enough that those threads decode the rest themselves.
_WAITING = 2


# Pipes this big hold a page (or several answers) whole: one write each, not one per 64 KiB
# with a turn of the interpreter lock between them. Linux allows up to 1 MiB unprivileged.
_PIPE_BYTES = 2**20


def _widen(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or over the limit
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def usable_cores(quota: str = "/sys/fs/cgroup/cpu.max") -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
    pod's CPU limit), which the affinity does not show."""
    cores = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        limit, period = Path(quota).read_text().split()
        if limit != "max":
            cores = min(cores, max(1, int(int(limit) / int(period))))
    return cores


class _Broken(Exception):
    """A worker that died or could not start."""


class _Answer:
    """A page asked of a worker: `wait` for what it answered."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._answer: tuple[bool, Any] | None = None
        self._broken = ""

    def give(self, answer: tuple[bool, Any] | None, broken: str = "") -> None:
        self._answer, self._broken = answer, broken
        self._done.set()

    def wait(self) -> tuple[bool, Any]:
        self._done.wait()
        if self._answer is None:
            raise _Broken(self._broken)
        return self._answer


class _Worker:
    """One worker process, and a thread of ours reading its answers in order."""

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
        _widen(self._requests)
        _widen(self._answers)
        self._lock = threading.Lock()  # the order of requests is the order of `_waiting`
        self._waiting: collections.deque[_Answer] = collections.deque()
        self._ended = ""  # why it cannot answer any more
        self.ready = threading.Event()
        self.ready_at = 0.0  # time.monotonic() when it said so
        self.failed = threading.Event()
        threading.Thread(target=self._read, name="decode-answers", daemon=True).start()

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def ask(self, data: bytes, prepare: Prepare | None) -> _Answer:
        request = pickle.dumps((data, prepare), protocol=pickle.HIGHEST_PROTOCOL)
        answer = _Answer()
        with self._lock:
            if self._ended:
                raise _Broken(self._ended)
            self._waiting.append(answer)
            try:
                # Blocks (without the interpreter lock) while the worker's pipe is full.
                send(self._requests, request)
            except (OSError, ValueError) as error:  # ValueError: closed by `stop` meanwhile
                self._end(f"a decode worker ended: {error}")
        return answer

    def _read(self) -> None:
        try:
            while (blob := receive(self._answers)) is not None:
                answer = pickle.loads(blob)
                if not self.ready.is_set():
                    self.ready_at = time.monotonic()
                    self.ready.set()  # its first answer: started
                    continue
                self._waiting.popleft().give(answer)
        except (OSError, ValueError):  # ValueError: closed by `stop` meanwhile
            pass
        with self._lock:
            self._end(f"a decode worker ended (exit code {self.process.poll()})")

    def _end(self, why: str) -> None:
        """Under the lock: nothing more will be answered."""
        if not self._ended:
            self._ended = why
            self.failed.set()
        while self._waiting:
            self._waiting.popleft().give(None, why)

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._requests.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError, ValueError):
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
        self._size = usable_cores() if workers is None else workers
        self._pool_min_bytes = pool_min_bytes
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []  # of the pool, started or starting
        self._running = False  # a pool was started (and not stopped since)
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
                ok, answer = worker.ask(data, prepare).wait()
            except _Broken as error:
                self._break(error)
            else:
                if not ok:
                    raise answer
                with _PARSING:
                    page: Page = pickling.loads(answer)
                self.pooled += 1
                return page
            finally:
                with self._lock:
                    self._busy -= 1
                    self._used = time.monotonic()
        with _PARSING:
            return decode_page(data, prepare)

    def _take(self, size: int) -> _Worker | None:
        """The worker of the pool with the fewest pages waiting; None: decode it here."""
        with self._lock:
            if self._broken or self._closed.is_set() or self._size < 1:
                return None
            if not self._running:
                self._decoded += size
                if self._decoded >= self._pool_min_bytes:
                    self._start()
                return None
            # The pages a worker has waiting are at most `_WAITING`: with more, this thread
            # decodes the page itself, so the server's own core works along (and a worker
            # that is starting takes none).
            free = [w for w in self._workers if w.ready.is_set() and w.pending < _WAITING]
            if not free:
                return None
            self._busy += 1
            return min(free, key=lambda w: w.pending)

    def _start(self) -> None:
        """Under the lock: start the workers (their threads say when each is ready)."""
        self._running, self._used = True, time.monotonic()
        self.pools_started += 1
        log.info("decode_workers_starting", workers=self._size, decoded_bytes=self._decoded)
        try:
            self._workers = [_Worker() for _ in range(self._size)]
        except OSError as error:
            self._broken = True
            log.warning("decode_workers_failed", error=f"they could not start: {error}")
            return
        threading.Thread(target=self._watch, args=(self._workers,), daemon=True).start()

    def _watch(self, workers: list[_Worker]) -> None:
        """Stop the pool once it has been idle long enough; note a worker that dies."""
        while not self._closed.wait(min(self._idle_seconds / 4, 1.0)):
            with self._lock:
                if self._workers is not workers:
                    return
                if any(w.failed.is_set() for w in workers):
                    break
                # Idle since the last page, or since the last worker started (a pool whose
                # workers are still starting is not idle).
                if not all(w.ready.is_set() for w in workers):
                    continue
                last = max(self._used, *(w.ready_at for w in workers))
                if self._busy or time.monotonic() - last < self._idle_seconds:
                    continue
                self._running, self._decoded, self._workers = False, 0, []
            log.info("decode_workers_stopped", idle_seconds=self._idle_seconds)
            for worker in workers:
                worker.stop()
            return
        if not self._closed.is_set():
            self._break(_Broken("a decode worker ended"))

    def _break(self, error: Exception) -> None:
        """A worker died: every page is decoded here from now on (a pool that breaks may well
        break again)."""
        with self._lock:
            if not self._broken and not self._closed.is_set():
                log.warning("decode_workers_failed", error=str(error))
            self._broken = True
            workers, self._workers = self._workers, []
        for worker in workers:
            threading.Thread(target=worker.stop, daemon=True).start()

    def close(self) -> None:
        """Stop the pool and wait for its processes (blocking: from a thread, not the loop).
        Pages still waiting for it are decoded by their threads."""
        self._closed.set()
        with self._lock:
            workers, self._workers = self._workers, []
            self._running = False
        for worker in workers:
            worker.stop()
