"""Admission of new ADS streams at a bounded rate.

After a control-plane restart, or when a replica drains, every Envoy reconnects at once. Each
new stream costs a full-state response (and maybe a new profile's first translation); taken all
at once they would hold the loop and delay the pushes of streams already established, which is
when those pushes matter most (a failover is often why replicas restart). New streams therefore
wait their turn, first come first served, at `rate` per second after a `burst`; established
streams never wait here.

It must not look at what a stream asks for; only count and pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from xdsfleet.telemetry import metrics


class Admission:
    """A token bucket: `burst` streams at once, then `rate` per second (0: no limit)."""

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._at = clock()
        self._turn = asyncio.Lock()  # FIFO: streams are admitted in the order they came
        self.waiting = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def admit(self) -> None:
        """Return when the stream may be served."""
        if self.rate <= 0:
            return
        self.waiting += 1
        metrics.STREAMS_WAITING.set(self.waiting)
        try:
            async with self._turn:
                self._refill()
                while self._tokens < 1:
                    await asyncio.sleep((1 - self._tokens) / self.rate)
                    self._refill()
                self._tokens -= 1
        finally:
            self.waiting -= 1
            metrics.STREAMS_WAITING.set(self.waiting)
