"""Memos for translation: unchanged inputs give back the very same message objects, and memory
stays proportional to what is being served.

The entries belong to a `Memo` object owned by whoever translates (the publisher, a CLI
command, a test), made current with `memo.active()` around the calls. Nothing lives in module
state: two owners never share entries by accident, and an owner could take its memo to another
process. A builder called with no memo current simply builds (`translate` makes a memo for its
one call, so that profiles share objects within it).

Entries live by generation. A generation starts when translation is handed a `FleetState` other
than the last one, and each memo table keeps only the entries used in the current or the
previous generation. What a generation drops is handed to the owner, who frees it a few entries
at a time (`Memo.releasing`) so that a publish never frees 12,000 assignments in one step; what
no owner released is freed when the next generation starts. An `lru_cache` would instead keep
thousands of stale assignments of a churning service alive, and a 5,000-endpoint assignment
weighs about 2 MB here.

Two keyings. By value (`memoised`), for inputs that hash cheaply or have their hash cached. By
the identity of the first argument (`memoised_by_identity`), for large model objects: frozen
dataclasses recompute their hash on every lookup (about 1 ms for a 5,000-endpoint EndpointSlice),
while the store shares unchanged objects between generations. An equal but new object merely
misses there, and the value-keyed memos below it still hand back the same messages.

A memo is used from one thread (a context variable makes it current for that thread or task).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, TypeVar

from xdsfleet.translate.steps import Steps, released

P = ParamSpec("P")
R = TypeVar("R")


class _Entries(Generic[R]):
    """One builder's entries, in the current and the previous generation of its memo. What a
    new generation drops goes to `dropped`, for the owner to free at its pace
    (`Memo.releasing`)."""

    def __init__(self, generation: int, dropped: list[dict[Any, Any]]) -> None:
        self._dropped = dropped
        self._seen = generation
        self._current: dict[Hashable, tuple[object, R]] = {}
        self._previous: dict[Hashable, tuple[object, R]] = {}

    def get(self, key: Hashable, generation: int) -> tuple[object, R] | None:
        if self._seen != generation:
            self._rotate(generation)
        hit = self._current.get(key)
        if hit is None:
            hit = self._previous.pop(key, None)
            if hit is not None:
                self._current[key] = hit
        return hit

    def put(self, key: Hashable, entry: tuple[object, R], generation: int) -> None:
        if self._seen != generation:
            self._rotate(generation)
        self._current[key] = entry

    def _rotate(self, generation: int) -> None:
        # Entries last used before the previous generation are dropped.
        gone = [self._previous]
        if self._seen == generation - 1:
            self._previous = self._current
        else:
            gone.append(self._current)
            self._previous = {}
        self._dropped.extend(entries for entries in gone if entries)
        self._current = {}
        self._seen = generation


class Memo:
    """Every memoised builder's entries, for one translator."""

    def __init__(self) -> None:
        self.generation = 0
        self._last_state: object = None
        self._tables: dict[Callable[..., object], _Entries[object]] = {}
        # Entries the generations dropped, not freed yet (`releasing`).
        self._dropped: list[dict[Any, Any]] = []

    def start_generation(self, state: object) -> None:
        """Note the state about to be translated: a state other than the last starts a
        generation. Translating two states by turns therefore starts one each time: still
        correct, only slower. What earlier generations dropped and no one released is freed
        now: at most one generation's worth waits."""
        if state is not self._last_state:
            self._last_state = state
            self.generation += 1
            self._dropped.clear()

    def releasing(self) -> Steps[None]:
        """Free what the generations dropped, a few entries per step: a generation's memos
        at E = 100,000 (12,000 assignments) take 10-20 ms to free at once."""
        return released(self._dropped)

    @contextlib.contextmanager
    def active(self) -> Iterator[Memo]:
        """Make this the memo the builders use, for the duration of the block."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def _table(self, builder: Callable[..., object]) -> _Entries[object]:
        table = self._tables.get(builder)
        if table is None:
            table = self._tables[builder] = _Entries(self.generation, self._dropped)
        return table


_CURRENT: ContextVar[Memo | None] = ContextVar("xdsfleet_translate_memo", default=None)


def current() -> Memo | None:
    """The memo made current by `Memo.active`, if any."""
    return _CURRENT.get()


def start_generation(state: object) -> None:
    """`Memo.start_generation` on the current memo, if any."""
    memo = _CURRENT.get()
    if memo is not None:
        memo.start_generation(state)


def _memo(
    key_of: Callable[[tuple[object, ...], dict[str, object]], Hashable],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def memoised(*args: P.args, **kwargs: P.kwargs) -> R:
            memo = _CURRENT.get()
            if memo is None:
                return fn(*args, **kwargs)
            entries = memo._table(memoised)
            key = key_of(args, kwargs)
            hit = entries.get(key, memo.generation)
            if hit is not None:
                return hit[1]  # type: ignore[return-value]
            value = fn(*args, **kwargs)
            # The first argument stays alive with the entry, so an identity key cannot be
            # reused by another object while cached.
            entries.put(key, (args[0], value), memo.generation)
            return value

        _KEYS[memoised] = key_of
        return memoised

    return decorate


# Each memoised builder's way of making its keys (`cached` looks entries up with it).
_KEYS: dict[Callable[..., object], Callable[[tuple[object, ...], dict[str, object]], Hashable]] = {}


def cached(builder: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R | None:
    """What the memoised `builder` gave for these arguments, if the current memo still holds
    it; builds nothing. For callers that would prepare a miss in steps (`routes`)."""
    memo = _CURRENT.get()
    table = memo._tables.get(builder) if memo is not None else None
    if memo is None or table is None:
        return None
    hit = table.get(_KEYS[builder](args, kwargs), memo.generation)
    return None if hit is None else hit[1]  # type: ignore[return-value]


def remember(builder: Callable[P, R], value: R, *args: P.args, **kwargs: P.kwargs) -> R:
    """Keep `value` in the current memo as what the memoised `builder` gives for these
    arguments (the caller built it, in steps); `value`."""
    memo = _CURRENT.get()
    if memo is not None:
        key = _KEYS[builder](args, kwargs)
        memo._table(builder).put(key, (args[0], value), memo.generation)
    return value


# Marks a key made with keyword arguments: no positional argument can be this object, so such a
# key never equals one made of positional arguments alone (which are the key themselves: the
# builders on the hot paths take no keywords, and a lookup then builds no key).
_KEYWORDS = object()


def _by_value(args: tuple[object, ...], kwargs: dict[str, object]) -> Hashable:
    return (args, _KEYWORDS, tuple(sorted(kwargs.items()))) if kwargs else args


def _by_identity(args: tuple[object, ...], kwargs: dict[str, object]) -> Hashable:
    return _by_value((id(args[0]), *args[1:]), kwargs)


def memoised(fn: Callable[P, R]) -> Callable[P, R]:
    """Memoise `fn` on the values of its (hashable) arguments."""
    return _memo(_by_value)(fn)


def memoised_by_identity(fn: Callable[P, R]) -> Callable[P, R]:
    """Memoise `fn` on the identity of its first argument and the values of the others."""
    return _memo(_by_identity)(fn)
