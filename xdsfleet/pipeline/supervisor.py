"""The one supervisor of `serve`'s long-lived tasks, and the refusals that stop a start.

A task that ends while the server is meant to run (by an exception, or by returning) means the
served config silently stopped following its sources; the supervisor logs it at once, with its
traceback as a JSON event, and stops the process with a non-zero exit so that a Deployment
restarts it. Signals and stops only set the flag; tasks are cancelled by whoever stops.

It must not retry anything (a failing publish is retried by `pipeline.publishing`) nor know
what the tasks do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)


class Refused(Exception):
    """`serve` cannot start as asked: one line that says why (the CLI prints it, exit 1)."""


class Crashed(Exception):
    """A supervised task died while serving; it was logged with its traceback (exit 1)."""


class Supervisor:
    """Owns the tasks it starts: the first to end unexpectedly stops everything."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.failure: str | None = None  # what died, once something did
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine, name=name)
        self.watch(task)
        return task

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Supervise a task started elsewhere (and stop it with the others)."""
        self._tasks.append(task)
        task.add_done_callback(self._ended)

    def fail(self, what: str, error: BaseException | None = None) -> None:
        """Something outside a task (a watch thread, say) failed: stop as if a task had died."""
        metrics.TASK_FAILURES.labels(what).inc()
        if error is not None:
            log.error("task_failed", task=what, exc_info=error)
        else:
            log.error("task_ended", task=what)
        if self.failure is None:
            self.failure = what
        self.stop.set()

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self.stop.is_set():
            return
        self.fail(task.get_name(), task.exception())

    async def close(self) -> None:
        """Cancel every task still running and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise Crashed(f"task {self.failure!r} failed; see the task_failed event")
