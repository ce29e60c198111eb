"""Building frozen dataclasses cheaply, where a cold start builds hundreds of thousands of them.

A frozen dataclass's `__init__` sets each field through `object.__setattr__` (the class's own
refuses), which makes an `Endpoint` cost about three times what storing its seven slots does.
`builder(cls)` gives a function that takes every field (by position or by name, all required)
and stores them straight into the slots: the same object `cls(...)` builds when all its fields are
given, except that `__post_init__` is not run (use it only for values already known valid).
Used by the common-shape document readers and by the pickles of parsed files; everything else
keeps calling the class.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_BUILDERS: dict[type, Callable[..., Any]] = {}


def builder(cls: type[T]) -> Callable[..., T]:
    """A function `(field values...) -> cls instance`, made once per class."""
    found = _BUILDERS.get(cls)
    if found is None:
        found = _BUILDERS[cls] = _make(cls)
    return found


def _make(cls: type) -> Callable[..., Any]:
    names = [f.name for f in dataclasses.fields(cls)]
    if any(name.startswith("_b_") for name in names):
        raise TypeError(f"{cls.__name__}: a field name clashes with the builder's own names")
    scope: dict[str, Any] = {"_b_new": object.__new__, "_b_cls": cls, "_b_set": object.__setattr__}
    lines = []
    for i, name in enumerate(names):
        slot = cls.__dict__.get(name)
        if isinstance(slot, types.MemberDescriptorType):
            scope[f"_b_set{i}"] = slot.__set__  # the slot itself: no frozen check to go through
            lines.append(f"    _b_set{i}(_b_o, {name})")
        else:
            lines.append(f"    _b_set(_b_o, {name!r}, {name})")
    # Generated like dataclasses generates `__init__`: one straight-line function per class,
    # as a loop over the fields would cost most of what it saves. Its parameters are the
    # fields', so callers may name them.
    source = "\n".join(
        [f"def build({', '.join(names)}):", "    _b_o = _b_new(_b_cls)", *lines, "    return _b_o"]
    )
    exec(source, scope)  # only field names of our own dataclasses go in
    built: Callable[..., Any] = scope["build"]
    return built
