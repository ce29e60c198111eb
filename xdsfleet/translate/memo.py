"""A memo keyed by object identity, for large immutable inputs whose value hash is costly.

Frozen dataclasses recompute their hash on every lookup (a 5,000-endpoint EndpointSlice takes
about 1 ms here), so an `lru_cache` keyed on a whole `MemberState` or `FleetState` would make
every translation proportional to the fleet. The store shares unchanged objects between
generations, so identity is a cheap and exact test; an equal but new object merely misses and is
recomputed, and the value-keyed memos below it still hand back the same messages.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def by_identity(maxsize: int) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Memoise a function on the identity of its first argument and the value of the others."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        # Each entry keeps its first argument alive, so its id cannot be reused while cached: a
        # key that matches names the very same object.
        entries: OrderedDict[tuple[object, ...], tuple[object, R]] = OrderedDict()
        lock = threading.Lock()

        @functools.wraps(fn)
        def memoised(*args: P.args, **kwargs: P.kwargs) -> R:
            key = (id(args[0]), args[1:], tuple(sorted(kwargs.items())))
            with lock:
                hit = entries.get(key)
                if hit is not None:
                    entries.move_to_end(key)
                    return hit[1]
            value = fn(*args, **kwargs)
            with lock:
                entries[key] = (args[0], value)
                entries.move_to_end(key)
                while len(entries) > maxsize:
                    entries.popitem(last=False)
            return value

        return memoised

    return decorate
