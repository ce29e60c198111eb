"""A publish that raises must not stop the pipeline, nor pass in silence.

The debouncer calls publish from a timer callback: an exception there would reach asyncio's
exception handler and the state would be forgotten, leaving the old snapshot served forever.
Here it is logged with its traceback and counted, the cache keeps the last good snapshots
(`Publisher.publish` leaves complete ones behind), and the latest state is tried again with a
backoff until one publish succeeds. A newer state is tried at once: it may be the fix.

It must not translate or decide what is published; it only calls the publish it wraps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from xdsfleet.model.fleet import FleetState
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


class RetryingPublish:
    """Call it with each state to publish, like the publish it wraps."""

    def __init__(
        self,
        publish: Callable[[FleetState], None],
        *,
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self._publish = publish
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._delay = first_retry
        self._latest: FleetState | None = None
        self._retry: asyncio.TimerHandle | None = None
        self.failing = False

    def __call__(self, state: FleetState) -> None:
        self._latest = state
        self._cancel_retry()
        self._attempt()

    def _attempt(self) -> None:
        self._retry = None
        state = self._latest
        if state is None:
            return
        try:
            self._publish(state)
        except Exception as error:
            metrics.PUBLISH_FAILURES.inc()
            log.error("publish_failed", retry_seconds=self._delay, exc_info=error)
            self.failing = True
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(self._delay, self._attempt)
            self._delay = min(self._delay * 2, self._max_retry)
            return
        if self.failing:
            log.info("publish_recovered")
        self.failing = False
        self._delay = self._first_retry

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def close(self) -> None:
        """Stop retrying (the server is stopping)."""
        self._cancel_retry()
