"""Pickles of parsed files that load several times faster than pickle's own way.

A frozen dataclass with slots is pickled through the `__setstate__` dataclasses generates, which
calls `dataclasses.fields()` for every object it restores: at E = 100,000 (300,000 objects) that
was most of loading the parse cache. Here each dataclass is rebuilt from its field values,
stored straight into its slots (`model.frozen.builder`, made once per class). The pickle names
that builder itself (`BUILDERS`, which makes it on first use), so that loading an object is one
call; and the values of each class's fields are read by one
`attrgetter`. Used for the parse cache and for what parse and decode workers send back; it must
only ever load pickles this program wrote (a pickle runs code when loaded).
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import operator
import pickle
import threading
from collections.abc import Callable
from typing import IO, Any

from xdsfleet.model.frozen import builder


class _Builders:
    """Each dataclass's builder, as an attribute pickles name: `BUILDERS.<module>:<class>` (":"
    for the module's dots: pickle reads dots as attributes of attributes), made on first use."""

    def __init__(self) -> None:
        self._making = threading.Lock()

    def of(self, cls: type) -> Callable[..., Any]:
        """`builder(cls)`, named for pickle. One per class: pickle refuses a function that is
        not the one its name finds, so threads do not race to make it."""
        name = f"{cls.__module__}.{cls.__qualname__}".replace(".", ":")
        found: Callable[..., Any] | None = self.__dict__.get(name)
        if found is None:
            with self._making:
                found = self.__dict__.get(name)
                if found is None:
                    found = builder(cls)
                    found.__module__, found.__qualname__ = __name__, f"BUILDERS.{name}"
                    setattr(self, name, found)
        return found

    def __getattr__(self, name: str) -> Any:
        """The builder a pickle names, the first time one is loaded in this process."""
        *module, qualname = name.split(":")
        if not module:
            raise AttributeError(name)
        cls = getattr(importlib.import_module(".".join(module)), qualname, None)
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
            raise AttributeError(name)
        return self.of(cls)


BUILDERS = _Builders()
# Per dataclass: its builder and a getter of its field values, in order.
_TAKEN: dict[type, tuple[Callable[..., Any], Callable[[Any], tuple[Any, ...]]]] = {}


def _taken(cls: type) -> tuple[Callable[..., Any], Callable[[Any], tuple[Any, ...]]]:
    names = [f.name for f in dataclasses.fields(cls)]
    values: Callable[[Any], tuple[Any, ...]]
    if len(names) > 1:
        values = operator.attrgetter(*names)
    else:
        # attrgetter of one name gives the value itself, not a tuple of one (nor takes none).
        def values(obj: Any, names: list[str] = names) -> tuple[Any, ...]:
            return tuple(getattr(obj, name) for name in names)

    found = _TAKEN[cls] = (BUILDERS.of(cls), values)
    return found


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        taken = _TAKEN.get(cls)
        if taken is None:
            if not hasattr(cls, "__dataclass_fields__") or isinstance(obj, type):
                return NotImplemented
            taken = _taken(cls)
        build, values = taken
        return build, values(obj)


def dump(obj: object, file: IO[bytes]) -> None:
    _Pickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)


def dumps(obj: object) -> bytes:
    buffer = io.BytesIO()
    dump(obj, buffer)
    return buffer.getvalue()


def load(file: IO[bytes]) -> Any:
    return pickle.load(file)


def loads(data: bytes) -> Any:
    return pickle.loads(data)
