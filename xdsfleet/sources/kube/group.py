"""The resources watched in one cluster: a reflector and a mirror each, events batched.

Both a member and the fleet cluster are several resources watched side by side. The group starts
and stops their reflectors, applies their events to the mirrors on the loop, and calls
`on_batch` once for the events that arrived together, so that one burst makes one state.

It must not decide what the objects mean: that is the owner's `on_batch`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from xdsfleet.documents.reading import JsonObject
from xdsfleet.sources.kube.client import Cluster
from xdsfleet.sources.kube.decoding import Decoder
from xdsfleet.sources.kube.mirror import Mirror
from xdsfleet.sources.kube.pages import prepare
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.sources.kube.watching import Event, Listed, Reflector

# How long stopping waits for a reflector thread; it is interrupted, so this is only a bound.
JOIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Watched:
    """What to watch: a resource (in one namespace, with a label selector) and how to parse
    its objects (see `pages.prepare`; it runs in the reflector's thread, or in the decoder's
    workers: with a decoder, `parse` must be picklable)."""

    resource: ApiResource
    parse: Callable[[JsonObject], Any]
    namespace: str | None = None
    label_selector: str | None = None


def _start_all(reflectors: list[Reflector]) -> None:
    for reflector in reflectors:
        reflector.start()


class WatchGroup:
    def __init__(
        self,
        *,
        name: str,
        cluster: Cluster,
        watched: Iterable[Watched],
        settings: KubeSettings,
        on_batch: Callable[[set[ApiResource]], None],
        on_crash: Callable[[BaseException], None],
        on_event: Callable[[ApiResource, Event], None] | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        """`on_event` sees each event before its mirror does; `on_batch` gets the resources
        listed in the batch (a list is a fresh, complete view). `decoder` decodes and parses
        the pages of lists (see `Reflector`)."""
        self.cluster = cluster
        self._name = name
        self._watched = tuple(watched)
        self._settings = settings
        self._on_batch = on_batch
        self._on_crash = on_crash
        self._on_event = on_event
        self._decoder = decoder
        self.mirrors: dict[ApiResource, Mirror[Any]] = {
            w.resource: Mirror(w.resource) for w in self._watched
        }
        self._reflectors: dict[ApiResource, Reflector] = {}
        self._listed: set[ApiResource] = set()
        self._scheduled = False
        self._starting: asyncio.Future[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for watched in self._watched:
            self._reflectors[watched.resource] = Reflector(
                cluster=self.cluster,
                resource=watched.resource,
                deliver=functools.partial(self._deliver, watched.resource),
                on_crash=self._on_crash,
                loop=loop,
                settings=self._settings,
                name=f"watch-{self._name}-{watched.resource.plural}",
                namespace=watched.namespace,
                label_selector=watched.label_selector,
                prepare=functools.partial(prepare, watched.parse),
                decoder=self._decoder,
            )
        # Starting a thread waits until it runs, which takes a turn of the interpreter lock:
        # ~7 ms each while the threads of other members parse their lists, 1 s for 50 members
        # at start-up if the loop did it. A worker thread of the loop's executor does.
        reflectors = list(self._reflectors.values())
        self._starting = loop.run_in_executor(None, _start_all, reflectors)
        self._starting.add_done_callback(self._started)

    def _started(self, starting: asyncio.Future[None]) -> None:
        error = None if starting.cancelled() else starting.exception()
        if error is not None:
            self._on_crash(error)

    async def stop(self) -> None:
        reflectors, self._reflectors = self._reflectors, {}
        for reflector in reflectors.values():
            reflector.stop()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)  # each now ends at once
        if reflectors:
            await asyncio.wait([r.ended for r in reflectors.values()], timeout=JOIN_SECONDS)
        self.cluster.close()

    def relist(self, resource: ApiResource) -> int:
        """See `Reflector.relist`."""
        return self._reflectors[resource].relist()

    def listing(self, resource: ApiResource) -> int | None:
        """The sequence of the list of `resource` under way, if one is."""
        return self._reflectors[resource].listing

    @property
    def answered(self) -> bool:
        """Every resource has been listed, found absent or failed, at least once."""
        return all(m.answered for m in self.mirrors.values())

    @property
    def listed(self) -> bool:
        """Every resource has been listed (or found absent) at least once."""
        return all(m.listed for m in self.mirrors.values())

    @property
    def failures(self) -> dict[str, str]:
        """Resource (plural) -> the error, for each resource the API server does not answer."""
        return {
            # Two views of one resource (member and TLS Secrets) are named apart.
            f"{k.plural} ({k.field_selector})" if k.field_selector else k.plural: m.failing
            for k, m in self.mirrors.items()
            if m.failing is not None
        }

    def _deliver(self, resource: ApiResource, event: Event) -> None:
        if resource not in self._reflectors:
            return  # stopped: late events from a thread that was ending
        if self._on_event is not None:
            self._on_event(resource, event)
        self.mirrors[resource].apply(event)
        if isinstance(event, Listed):
            self._listed.add(resource)
        if not self._scheduled:
            self._scheduled = True
            # Events that arrived together are applied together.
            asyncio.get_running_loop().call_soon(self._batch)

    def _batch(self) -> None:
        self._scheduled = False
        listed, self._listed = self._listed, set()
        if self._reflectors:
            self._on_batch(listed)
