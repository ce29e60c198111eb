"""Work in steps: a generator that yields wherever its caller may pause it.

Translating a profile of a large fleet takes longer than the event loop may be held (issue 10:
~20 ms), so the long parts of translation (planning a profile's routes, a service port's
assignments) are generators that yield at natural boundaries: every few services or routes.
Translation stays pure: a yield hands nothing out and takes nothing in, it only lets the caller
(`pipeline/publisher.py`) serve streams between two steps; `finish` runs them in one go.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")

Steps = Generator[None, None, T]

# Entries dropped between two yields when releasing: up to ~12 us each with what they alone
# hold (an encoded assignment and its message: ~15 KB in several objects).
RELEASE_STEP = 256


def finish(steps: Steps[T]) -> T:
    """Run `steps` to the end without pausing; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def released(dropped: list[dict[Any, Any]]) -> Steps[None]:
    """Empty each mapping of `dropped` a few entries at a time, and the list: dropping a
    generation of memos or encodings at once (12,000 assignments at E = 100,000) takes 10-20 ms
    of freeing in one go."""
    while dropped:
        entries = dropped[-1]
        for _ in range(min(RELEASE_STEP, len(entries))):
            entries.popitem()
        if not entries:
            dropped.pop()
        yield
