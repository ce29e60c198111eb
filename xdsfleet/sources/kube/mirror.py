"""The objects of one watched resource, parsed, as its reflector last described them.

Each object keeps its last good version (docs/architecture.md, decision 5): an update our parser
refuses is reported and the previous version stays in use, as for a file. The mirror also remembers
how the resource answered (listed, absent, failing), which is what staleness and readiness are made
of.

Objects are parsed where they arrive (`pages.prepare`), in the reflector's thread or, for
big lists, in worker processes: a list of ten thousand EndpointSlices takes seconds to parse,
which the event loop must not spend. The mirror itself runs on the event loop and does no I/O:
prepared events in, parsed objects out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from xdsfleet.model.errors import Problem
from xdsfleet.sources.kube.objects import key_of
from xdsfleet.sources.kube.pages import Prepared
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.watching import Absent, Changed, Event, Failed, Listed
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An object whose latest version our parser refused; `generation` is that version's."""

    problems: tuple[Problem, ...]
    generation: int


@dataclass(slots=True)
class Mirror(Generic[T]):
    """Applies a reflector's events, whose objects were prepared with `prepare`."""

    resource: ApiResource
    objects: dict[Key, T] = field(default_factory=dict)
    # metadata.generation of each object's version in use (what status reports as observed).
    generations: dict[Key, int] = field(default_factory=dict)
    refused: dict[Key, Refusal] = field(default_factory=dict)
    uids: dict[Key, str] = field(default_factory=dict)  # of every object listed or seen
    answered: bool = False  # listed, found absent or failed, at least once
    listed: bool = False  # listed (or found absent) at least once
    failing: str | None = None  # the last error, while the API server does not answer
    absent: bool = False  # the resource type does not exist there (a CRD not installed)
    sequence: int = 0  # of the last list
    # `objects` by key, made once per change (`in_order`): a batch of slices does not sort the
    # member's Services again.
    _in_order: tuple[T, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def in_order(self) -> tuple[T, ...]:
        """The objects, by (namespace, name)."""
        if self._in_order is None:
            self._in_order = tuple(map(self.objects.__getitem__, sorted(self.objects)))
        return self._in_order

    def apply(self, event: Event) -> None:
        self._in_order = None
        match event:
            case Listed(items=prepared, sequence=sequence):
                previous = self.objects, self.generations
                # What `_put` does for each, in bulk (a big list is 1,000s of objects, applied
                # on the loop); the refused ones, few, one by one.
                kept = [p for p in prepared if p.problems is None and p.parsed is not None]
                self.objects = {p.key: p.parsed for p in kept}
                self.generations = {p.key: p.generation for p in kept}
                self.uids = {p.key: p.uid for p in prepared}
                self.refused = {}
                for item in prepared:
                    if item.problems is not None:
                        self._put(item, *previous)
                self.sequence = sequence
                self.answered, self.listed, self.failing, self.absent = True, True, None, False
            case Changed(type="DELETED", obj=obj):
                key = key_of(obj)
                self.objects.pop(key, None)
                self.generations.pop(key, None)
                self.refused.pop(key, None)
                self.uids.pop(key, None)
            case Changed(prepared=prepared):
                self._put(prepared, self.objects, self.generations)
            case Failed(error=error):
                self.answered, self.failing = True, error
            case Absent():
                self.objects, self.generations, self.refused, self.uids = {}, {}, {}, {}
                self.answered, self.listed, self.failing, self.absent = True, True, None, True

    def _put(
        self, prepared: Prepared[T], objects: dict[Key, T], generations: dict[Key, int]
    ) -> None:
        """Put `prepared` in place; when it was refused, its version in `objects` stays."""
        key, generation = prepared.key, prepared.generation
        self.uids[key] = prepared.uid
        if prepared.problems is not None:
            metrics.OBJECT_REJECTIONS.labels(self.resource.plural).inc()
            log.warning("object_rejected", problems=[str(p) for p in prepared.problems])
            self.refused[key] = Refusal(prepared.problems, generation)
            if key in objects:
                # Its last good version keeps serving.
                self.objects[key] = objects[key]
                self.generations[key] = generations.get(key, 0)
            return
        self.refused.pop(key, None)
        if prepared.parsed is None:
            self.objects.pop(key, None)
            self.generations.pop(key, None)
        else:
            self.objects[key] = prepared.parsed
            self.generations[key] = generation
