"""Waiting for a condition with a deadline, in async tests (`harness.local.wait_for` is the
same for synchronous code): the only synchronisation tests use."""

from __future__ import annotations

import asyncio
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
