"""What held the event loop: a watch outside the loop that names the code holding it.

`xdsfleet_event_loop_lag_seconds` (`pipeline/looplag.py`) says *that* the loop was held, and
only once it is free again; it cannot say by what, because whatever held the loop is gone by
the time the loop's own code runs. This watch looks from another thread, while the hold lasts:
the loop's lag timer tells it, at each run, when the next is due (`beat`); a daemon thread sleeps
until that due time plus `threshold`, and if the timer has not run by then, the loop is held. It
then reads the loop thread's Python stack (`sys._current_frames`) and the task it is running,
looks again every `look_every` while the hold lasts (at most `LOOKS` looks), and when the timer
finally runs counts the hold (`xdsfleet_event_loop_held_total`) and logs one `event_loop_held`
warning: how long the loop was held (the lag sample that ends it); the loop thread's CPU from
the timer before to the hold's end (a thread that got little of it was waiting for a core, not
computing); and each look's stack, innermost last, from the callback the loop ran inwards (the
loop's own frames outside it say nothing), with when it was taken. A look needs the GIL: while
the loop thread holds it in one long C call (a protobuf parse, a collector pass) the first look
comes only after that call, late into the hold (`at_seconds` near `held_seconds`), and shows
the Python line that made the call. At most one line per `log_every` seconds: holds in between
are counted, and the next line says how many went unlogged. A loop whose thread was found
waiting in its selector at every look held nothing: the process was not run (stopped, a paused
VM, no core for it), and that is neither counted nor logged (the lag histogram has it).

What it costs when the loop is healthy: in the loop, a clock read and an attribute set per lag
sample (20 a second); the thread wakes about ten times a second, for a few microseconds with
the GIL. It never touches
the loop's objects but through reads (the current task); it must not log from the loop's
thread, nor look more than `LOOKS` times per hold, nor keep the process alive (a daemon thread,
stopped and joined by `stop`).

Prior art: asyncio's debug mode (`slow_callback_duration`) times every callback and names only
the handle, after the fact, at a cost per callback; aiodebug's hang inspection and the common
"StackMonitor" recipe ping the loop from a thread (`call_soon_threadsafe`) and dump stacks when
the ping is late, which wakes the loop for every ping. Here the lag timer the server runs anyway
is the ping.
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

THRESHOLD = 0.1  # a lag timer this late (seconds past due) is a hold
LOOKS = 5  # stacks read per hold, at most
FRAMES = 16  # frames kept per stack: the outermost few (the task) and the innermost rest
OUTER_FRAMES = 4
LOG_EVERY = 10.0  # seconds between two `event_loop_held` lines, at least
KEPT = 64  # holds logged that are kept in `HoldWatch.holds`

# Where a frame's file is shown from: the package's and the libraries' roots, longest first.
_ROOTS = sorted(
    {
        str(Path(__file__).resolve().parents[2]) + "/",
        *(sysconfig.get_paths()[key] + "/" for key in ("purelib", "platlib", "stdlib")),
    },
    key=len,
    reverse=True,
)
_LOOP_RUN = "asyncio/events.py"  # Handle._run: what the loop ran, from here inwards
_LOOP = "asyncio/base_events.py"  # run_forever: the loop's iterations, from here inwards
_SELECT = "selectors.py:"  # the loop waiting for events: innermost, it ran nothing


@dataclass(frozen=True, slots=True)
class Look:
    """What the loop thread was running, `at` seconds after the hold's timer was due."""

    at: float
    task: str | None  # the task's name and its coroutine's qualified name; None: a callback
    stack: tuple[str, ...]  # "file:line function", innermost last

    def fields(self) -> dict[str, object]:
        return {"at_seconds": round(self.at, 4), "task": self.task, "loop_stack": list(self.stack)}


@dataclass(frozen=True, slots=True)
class Hold:
    """One hold, as logged."""

    seconds: float  # from the timer's due time to its run
    span: float  # from the timer before it ran to the hold's end: the hold and an interval
    cpu: float  # the loop thread's CPU in `span` (little: it waited for a core, or the GIL)
    looks: tuple[Look, ...]
    unlogged: int  # holds since the last line that had none


class HoldWatch:
    def __init__(
        self,
        threshold: float = THRESHOLD,
        *,
        look_every: float | None = None,
        log_every: float = LOG_EVERY,
    ) -> None:
        self.threshold = threshold
        self.look_every = threshold / 2 if look_every is None else look_every
        self.log_every = log_every
        self.count = 0  # holds seen, logged or not
        # The last ones logged, for tests and the benchmarks (bounded: a server runs for months).
        self.holds: deque[Hold] = deque(maxlen=KEPT)
        # The last lag timer's run, the next one's due time, the loop thread's CPU at the run.
        self._beat: tuple[float, float, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._logged_at = -float("inf")
        self._unlogged = 0

    def reset(self) -> None:
        """Forget the holds so far (a benchmark's window starts)."""
        self.count = 0
        self.holds.clear()

    def beat(self, ran: float, due: float) -> None:
        """The lag timer ran at `ran` and the next is due at `due` (time.monotonic()); in the
        loop's thread."""
        self._beat = (ran, due, time.thread_time())

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch `loop`, which runs in the calling thread."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="loop-hold-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while True:
            beat = self._beat
            wait = self.threshold if beat is None else beat[1] + self.threshold - time.monotonic()
            if wait > 0 or beat is None:
                if self._stop.wait(max(wait, 0.0)):
                    return
                continue
            loop = self._loop
            if loop is None or not loop.is_running():  # a loop stopped is not held
                if self._stop.wait(self.threshold):
                    return
                continue
            if not self._held(beat):
                return

    def _held(self, beat: tuple[float, float, float]) -> bool:
        """Follow the hold of the timer due at `beat[1]` to its end; False if told to stop."""
        before, due, cpu = beat
        logging = time.monotonic() - self._logged_at >= self.log_every
        looks: list[Look] = []
        while (end := self._beat) is beat:
            # The first look even when not logging: it tells a hold from a process not run.
            if len(looks) < (LOOKS if logging else 1):
                looks.append(self._look(time.monotonic() - due))
            if self._stop.wait(self.look_every):
                return False
        if looks and all(look.stack[-1:] and look.stack[-1].startswith(_SELECT) for look in looks):
            return True  # the loop waited for events all along: nothing of ours held it
        metrics.EVENT_LOOP_HELD.inc()
        self.count += 1
        if not logging or not looks:  # not looked at: it ended before the first look
            self._unlogged += 1
            return True
        assert end is not None  # `beat` was one, and beats are never taken back
        hold = Hold(
            seconds=end[0] - due,
            span=end[0] - before,
            cpu=end[2] - cpu,
            looks=tuple(looks),
            unlogged=self._unlogged,
        )
        self._logged_at = time.monotonic()
        self._unlogged = 0
        self.holds.append(hold)
        log.warning(
            "event_loop_held",
            held_seconds=round(hold.seconds, 4),
            span_seconds=round(hold.span, 4),
            loop_cpu_seconds=round(hold.cpu, 4),
            **looks[0].fields(),
            later=[look.fields() for look in looks[1:]],
            unlogged=hold.unlogged,
        )
        return True

    def _look(self, at: float) -> Look:
        frame = sys._current_frames().get(self._loop_thread)
        task: asyncio.Task[object] | None = None
        try:
            task = asyncio.current_task(self._loop)
        except RuntimeError:  # the loop stopped meanwhile
            task = None
        named = None
        if task is not None:
            named = f"{task.get_name()} {getattr(task.get_coro(), '__qualname__', '?')}"
        return Look(at, named, _stack(frame))


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    """`frame`'s stack, innermost last, from the callback the loop ran inwards (or, between
    callbacks, from the loop's iteration inwards); its outermost and innermost frames when
    deeper than FRAMES."""
    walked: list[tuple[str, int, str]] = []
    while frame is not None:
        code = frame.f_code
        walked.append((code.co_filename, frame.f_lineno, code.co_qualname))
        frame = frame.f_back
    end = next(
        (i for i, w in enumerate(walked) if w[0].endswith(_LOOP_RUN) and w[2] == "Handle._run"),
        None,
    )
    if end is None:
        end = next(
            (
                i
                for i, w in enumerate(walked)
                if w[0].endswith(_LOOP) and w[2].endswith(".run_forever")
            ),
            len(walked),
        )
    frames = [
        f"{_short(name)}:{line} {function}" for name, line, function in reversed(walked[:end])
    ]
    if len(frames) > FRAMES:
        frames[OUTER_FRAMES : len(frames) - (FRAMES - OUTER_FRAMES)] = ["..."]
    return tuple(frames)


def _short(filename: str) -> str:
    for root in _ROOTS:
        if filename.startswith(root):
            return filename[len(root) :]
    return filename
