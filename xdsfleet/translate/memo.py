"""Memos for translation: unchanged inputs give back the very same message objects, and memory
stays proportional to what is being served.

Entries live by generation. A generation starts when translation is handed a `FleetState` other
than the last one, and each memo keeps only the entries used in the current or the previous
generation. An `lru_cache` would instead keep thousands of stale assignments of a churning
service alive, and a 5,000-endpoint assignment weighs about 2 MB here.

Two keyings. By value (`memoised`), for inputs that hash cheaply or have their hash cached. By
the identity of the first argument (`memoised_by_identity`), for large model objects: frozen
dataclasses recompute their hash on every lookup (about 1 ms for a 5,000-endpoint EndpointSlice),
while the store shares unchanged objects between generations. An equal but new object merely
misses there, and the value-keyed memos below it still hand back the same messages.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from typing import Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_generation = 0
_last_state: object = None


def start_generation(state: object) -> None:
    """Note the state about to be translated: a state other than the last starts a generation.

    Translating two states by turns therefore starts one each time: still correct, only slower.
    """
    global _generation, _last_state
    with _lock:
        if state is not _last_state:
            _last_state = state
            _generation += 1


class _Entries(Generic[R]):
    """One memo's entries, in the current and the previous generation. Callers hold `_lock`."""

    def __init__(self) -> None:
        self._seen = _generation
        self._current: dict[Hashable, tuple[object, R]] = {}
        self._previous: dict[Hashable, tuple[object, R]] = {}

    def get(self, key: Hashable) -> tuple[object, R] | None:
        self._rotate()
        hit = self._current.get(key)
        if hit is None:
            hit = self._previous.pop(key, None)
            if hit is not None:
                self._current[key] = hit
        return hit

    def put(self, key: Hashable, entry: tuple[object, R]) -> None:
        self._rotate()
        self._current[key] = entry

    def _rotate(self) -> None:
        if self._seen != _generation:
            # Entries last used before the previous generation are dropped.
            self._previous = self._current if self._seen == _generation - 1 else {}
            self._current = {}
            self._seen = _generation


def _memo(
    key_of: Callable[[tuple[object, ...], dict[str, object]], Hashable],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        entries: _Entries[R] = _Entries()

        @functools.wraps(fn)
        def memoised(*args: P.args, **kwargs: P.kwargs) -> R:
            key = key_of(args, kwargs)
            with _lock:
                hit = entries.get(key)
            if hit is not None:
                return hit[1]
            value = fn(*args, **kwargs)
            with _lock:
                # The first argument stays alive with the entry, so an identity key cannot be
                # reused by another object while cached.
                entries.put(key, (args[0], value))
            return value

        return memoised

    return decorate


def memoised(fn: Callable[P, R]) -> Callable[P, R]:
    """Memoise `fn` on the values of its (hashable) arguments."""
    return _memo(lambda args, kwargs: (args, tuple(sorted(kwargs.items()))))(fn)


def memoised_by_identity(fn: Callable[P, R]) -> Callable[P, R]:
    """Memoise `fn` on the identity of its first argument and the values of the others."""
    return _memo(lambda args, kwargs: (id(args[0]), args[1:], tuple(sorted(kwargs.items()))))(fn)
