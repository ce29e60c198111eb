"""The chain a fleet state travels while serving: ramps -> debouncer -> publisher (retried).

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
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.pipeline.publishing import RetryingPublish
from xdsfleet.pipeline.ramps import Ramper
from xdsfleet.pipeline.unresolved import UnresolvedReporter


@dataclass(frozen=True, slots=True)
class Chain:
    publisher: Publisher
    debouncer: Debouncer
    ramper: Ramper
    publishing: RetryingPublish

    def update(self, state: FleetState) -> None:
        """A new state from the sources."""
        self.ramper.update(state)

    def close(self) -> None:
        self.publishing.close()


def build(
    first: FleetState,
    *,
    latest: Callable[[], FleetState | None],
    origins: Callable[[], Mapping[str, str]],
) -> Chain:
    """The chain serving `first`, caught up with `latest()` if the sources moved on since."""
    publisher = Publisher(first)
    unresolved = UnresolvedReporter(origins)
    unresolved.check(first)

    def published(state: FleetState) -> None:
        publisher.publish(state)
        unresolved.check(state)

    publishing = RetryingPublish(published)
    debouncer = Debouncer(publishing, current=first)
    ramper = Ramper(debouncer.update, current=first)
    chain = Chain(publisher, debouncer, ramper, publishing)
    now = latest()
    if now is not None and now is not first:
        chain.update(now)
    return chain
