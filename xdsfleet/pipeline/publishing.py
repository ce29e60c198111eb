"""A publish that raises must not stop the pipeline, nor pass in silence.

The debouncer hands each state to this wrapper, one publish at a time. A publish that raises is
logged with its traceback and counted; the cache keeps the last good snapshots
(`Publisher.publish_in_slices` leaves complete ones behind, and translates in full next time),
and the same state is tried again with a backoff until it goes through, or until a newer state
waits: that one is published instead (it may be the fix), by the debouncer, at once.

It must not translate or decide what is published; it only calls the publish it wraps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from xdsfleet.model.fleet import FleetState
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
# How often a retry's wait looks for a newer state.
_LOOK_SECONDS = 0.05


class RetryingPublish:
    """Call it with each state to publish, like the publish it wraps; `newer()` says whether
    a newer state waits behind this one (the debouncer's `has_next`)."""

    def __init__(
        self,
        publish: Callable[[FleetState], Awaitable[None]],
        *,
        newer: Callable[[], bool],
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self._publish = publish
        self._newer = newer
        self._first_retry = first_retry
        self._max_retry = max_retry
        self.failing = False

    async def __call__(self, state: FleetState) -> None:
        delay = self._first_retry
        while True:
            try:
                await self._publish(state)
            except Exception as error:
                metrics.PUBLISH_FAILURES.inc()
                log.error("publish_failed", retry_seconds=delay, exc_info=error)
                self.failing = True
                if await self._newer_within(delay):
                    return  # the debouncer publishes the newer state next
                delay = min(delay * 2, self._max_retry)
                continue
            if self.failing:
                log.info("publish_recovered")
            self.failing = False
            return

    async def _newer_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            if self._newer():
                return True
            await asyncio.sleep(min(_LOOK_SECONDS, max(0.0, until - loop.time())))
        return self._newer()
