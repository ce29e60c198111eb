"""The chain a fleet state travels while serving: ramps -> debouncer -> publisher (retried,
paced by the fan-out), and the ADS service that reads what it publishes.

Built once the first complete state is known. States the sources produced while it was being
built are not lost: it starts from the latest one (`latest`), so nothing that changed between
the first state and the chain's birth waits for the next unrelated event to be served.

It must not start or supervise tasks (`serve` does) nor know where states come from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from xdsfleet.model.fleet import FleetState
from xdsfleet.pipeline.debounce import Debouncer
from xdsfleet.pipeline.fanout import FanOut
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.pipeline.publishing import RetryingPublish
from xdsfleet.pipeline.ramps import Ramper
from xdsfleet.pipeline.unresolved import UnresolvedReporter
from xdsfleet.server.ads import AdsService


@dataclass(frozen=True, slots=True)
class Chain:
    publisher: Publisher
    debouncer: Debouncer
    ramper: Ramper
    publishing: RetryingPublish
    ads: AdsService
    fanout: FanOut

    def update(self, state: FleetState) -> None:
        """A new state from the sources."""
        self.ramper.update(state)

    async def close(self) -> None:
        await self.debouncer.stop()


def build(
    first: FleetState,
    *,
    latest: Callable[[], FleetState | None],
    origins: Callable[[], Mapping[str, str]],
    serving: Callable[[Publisher], AdsService],
) -> Chain:
    """The chain serving `first`, caught up with `latest()` if the sources moved on since;
    `serving` makes the ADS service over the publisher's cache."""
    publisher = Publisher(first)
    unresolved = UnresolvedReporter(origins)
    unresolved.check(first)

    async def published(state: FleetState) -> None:
        await publisher.publish_in_slices(state)
        unresolved.check(state)

    ads = serving(publisher)
    fanout = FanOut(publisher.cache, ads.streams.values, pacer=ads.pacer)
    # The debouncer is made next; the lambda reads it only once publishing runs.
    publishing = RetryingPublish(published, newer=lambda: debouncer.has_next)
    debouncer = Debouncer(publishing, current=first, settle=fanout.settle)
    ramper = Ramper(debouncer.update, current=first)
    chain = Chain(publisher, debouncer, ramper, publishing, ads, fanout)
    now = latest()
    if now is not None and now is not first:
        chain.update(now)
    return chain
