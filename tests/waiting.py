"""Waiting for a condition with a deadline: the only synchronisation tests use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_SECONDS = 0.02


async def eventually(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Return as soon as `condition()` holds; fail the test if it does not within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout} s") from None


def eventually_sync(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """The same for code outside an event loop (subprocess peers, HTTP checks)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(POLL_SECONDS)
