"""One member cluster, watched: its Services, EndpointSlices, ServiceExports (and Nodes, in
nodePort mode) kept as one `MemberState` that the member's failures never make worse.

docs/architecture.md, decision 5, for a member:
- An API server that stops answering leaves the last known objects in place, marked stale (log,
  metric, `MemberState.stale`); they are never replaced by nothing.
- An update seen on a watch that removes more than half of a service's ready endpoints (its
  ServiceExport deleted removes them all) is held
  (the service keeps its previous objects) until a list started after it confirms it (one list
  for a burst of such updates: it is asked for once they pause, `hold_quiet_seconds`), at most
  `hold_seconds` (or, when the confirming list is under way then, until it ends, at most
  `list_seconds` more). A removal seen in a fresh list is already confirmed. Removed means gone from
  the slices: an endpoint that turns terminating or not ready is news from the API server, not
  a glitch of the watch, so it is never held, and while a hold keeps endpoints that went away,
  those still listed take their latest conditions (a pod that began terminating is not served
  as ready again).
- A member that comes back is listed again; the list is compared with what is known and at
  most one state goes out.
Without a ServiceExport CRD the member exports nothing of its own: the Fleet's `exportAll`
decides, as documented.

It must not know about other members or the Fleet: `on_state` hands each new state on. It runs
on the event loop; its reflectors' threads only reach it through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from xdsfleet.model.fleet import EndpointMode, EndpointSlice, Member, MemberState, Service
from xdsfleet.sources.kube import resources
from xdsfleet.sources.kube.client import Access, Cluster
from xdsfleet.sources.kube.decoding import Decoder
from xdsfleet.sources.kube.group import Watched, WatchGroup
from xdsfleet.sources.kube.objects import parse_object
from xdsfleet.sources.kube.resources import ApiResource
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.sources.kube.watching import Absent, Event, Listed
from xdsfleet.telemetry import metrics

log = structlog.get_logger(__name__)

ServiceKey = tuple[str, str]  # (namespace, service name)


@dataclass(slots=True)
class _Hold:
    """A mass removal waiting for a list to confirm it."""

    services: set[ServiceKey]
    timer: asyncio.TimerHandle
    first: float  # loop.time() of its first removal
    # Resource -> the list sequence that confirms; None until the lists are asked for, once
    # the removals have stopped coming (`asking`).
    confirm: dict[ApiResource, int] | None = None
    asking: asyncio.TimerHandle | None = None
    extended: bool = False  # past `hold_seconds`, for a confirming list under way

    def cancel(self) -> None:
        self.timer.cancel()
        if self.asking is not None:
            self.asking.cancel()


def _addresses(slices: Iterable[EndpointSlice], *, ready: bool) -> dict[ServiceKey, set[str]]:
    """Per service, the first address of each endpoint of `slices` (`ready`: of the ready ones;
    else of all of them, whatever their conditions)."""
    found: dict[ServiceKey, set[str]] = {}
    for endpoint_slice in slices:
        addresses = found.setdefault((endpoint_slice.namespace, endpoint_slice.service_name), set())
        addresses.update(
            e.addresses[0]
            for e in endpoint_slice.endpoints
            if e.addresses and (e.ready or not ready)
        )
    return found


def mass_removals(before: MemberState, after: MemberState) -> set[ServiceKey]:
    """The services more than half of whose ready endpoints are gone (not listed at all) from
    `before` to `after` (a Service deleted, or its ServiceExport, loses all of them).

    A watch batch changes a few services of a member, and states share the objects that did not
    change, so only the services a slice was added to or removed from (by identity: a changed
    slice is a new object) and those not offered any more are looked at: the others list the very
    same endpoints on both sides, and none of them is gone. So a batch costs its own endpoints
    and a pass over the member's slices, not every endpoint of the member."""
    services = {(s.namespace, s.name) for s in after.services}
    offered = services - (set(before.exports) - set(after.exports))
    before_ids = set(map(id, before.endpoint_slices))
    after_ids = set(map(id, after.endpoint_slices))
    changed = {
        (s.namespace, s.service_name) for s in before.endpoint_slices if id(s) not in after_ids
    }
    changed.update(
        (s.namespace, s.service_name) for s in after.endpoint_slices if id(s) not in before_ids
    )

    def looked_at(s: EndpointSlice) -> bool:
        key = (s.namespace, s.service_name)
        return key in changed or key not in offered

    ready = _addresses(filter(looked_at, before.endpoint_slices), ready=True)
    kept = _addresses(
        (s for s in after.endpoint_slices if (s.namespace, s.service_name) in ready), ready=False
    )
    found = set()
    for key, addresses in ready.items():
        remaining = kept.get(key, set()) if key in offered else set()
        if addresses and 2 * len(addresses - remaining) > len(addresses):
            found.add(key)
    return found


def keep_held(
    candidate: MemberState, previous: MemberState, services: set[ServiceKey]
) -> MemberState:
    """`candidate`, except that `services` keep their Service, slices and export from
    `previous`."""

    def slice_key(s: EndpointSlice) -> ServiceKey:
        return s.namespace, s.service_name

    def service_key(s: Service) -> ServiceKey:
        return s.namespace, s.name

    kept_services = [s for s in candidate.services if service_key(s) not in services]
    kept_services += [s for s in previous.services if service_key(s) in services]
    kept_slices = [s for s in candidate.endpoint_slices if slice_key(s) not in services]
    # The held services' endpoints still listed, as they are listed now, by first address.
    latest = {
        (slice_key(s), e.addresses[0]): e
        for s in candidate.endpoint_slices
        if slice_key(s) in services
        for e in s.endpoints
        if e.addresses
    }
    kept_slices += [
        dataclasses.replace(
            s,
            endpoints=tuple(
                latest.get((slice_key(s), e.addresses[0]), e) if e.addresses else e
                for e in s.endpoints
            ),
        )
        for s in previous.endpoint_slices
        if slice_key(s) in services
    ]
    return MemberState(
        candidate.member,
        services=tuple(sorted(kept_services, key=service_key)),
        endpoint_slices=tuple(sorted(kept_slices, key=lambda s: (s.namespace, s.name))),
        exports=tuple(
            sorted(
                {e for e in candidate.exports if e not in services}
                | {e for e in previous.exports if e in services}
            )
        ),
        nodes=candidate.nodes,
        stale=candidate.stale,
    )


class MemberWatcher:
    """Watches one member. `start` it on the loop; `state` is its latest published state, and
    `settled` is set once every resource has answered (listed, absent or failed) once."""

    def __init__(
        self,
        *,
        member: Member,
        cluster: Cluster,
        on_state: Callable[[MemberState], None],
        on_crash: Callable[[BaseException], None],
        settings: KubeSettings,
        decoder: Decoder | None = None,
    ) -> None:
        """`decoder`: decodes and parses big lists off the interpreter lock (see `decoding`),
        shared by every member."""
        self.member = member
        self._on_state = on_state
        self._settings = settings
        self.state = MemberState(member)
        self.settled = asyncio.Event()
        self._hold: _Hold | None = None
        self._log = log.bind(member=member.name)
        kinds = [resources.SERVICES, resources.ENDPOINT_SLICES, resources.SERVICE_EXPORTS]
        if member.endpoint_mode is EndpointMode.NODE_PORT:
            kinds.append(resources.NODES)
        origin = f"member {member.name}"
        self._group = WatchGroup(
            name=member.name,
            cluster=cluster,
            watched=[Watched(k, functools.partial(parse_object, k, origin=origin)) for k in kinds],
            settings=settings,
            on_batch=self._update,
            on_crash=on_crash,
            on_event=self._on_event,
            decoder=decoder,
        )

    @property
    def access(self) -> Access:
        return self._group.cluster.access

    @property
    def failures(self) -> dict[str, str]:
        """Resource (plural) -> the error of each resource the API server does not answer for."""
        return self._group.failures

    def start(self) -> None:
        self._group.start()
        self._log.info("member_watch_started", access=self.access.describe())

    async def stop(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        await self._group.stop()
        with contextlib.suppress(KeyError):
            metrics.MEMBER_STALE.remove(self.member.name)
        self._log.info("member_watch_stopped")

    # --- Events, on the loop ---

    def _on_event(self, kind: ApiResource, event: Event) -> None:
        mirror = self._group.mirrors[kind]
        if isinstance(event, Listed) and mirror.failing is not None:
            self._recovering(kind)
        if isinstance(event, Absent) and not mirror.absent and kind is resources.SERVICE_EXPORTS:
            self._log.warning(
                "serviceexport_crd_absent",
                hint="this member exports nothing of its own; Fleet spec.exportAll exports "
                "every Service",
            )

    def _recovering(self, recovered: ApiResource) -> None:
        """One resource answers again: the others are surely back too. Have them list now
        rather than at the end of their backoff, and wait for all of them, so that the member
        comes back in one state instead of one per resource."""
        for kind, mirror in self._group.mirrors.items():
            if kind is not recovered and mirror.failing is not None:
                mirror.answered = False
                self._group.relist(kind)

    # --- States ---

    def _candidate(self) -> MemberState:
        return MemberState(
            self.member,
            services=self._of(resources.SERVICES),
            endpoint_slices=self._of(resources.ENDPOINT_SLICES),
            exports=self._of(resources.SERVICE_EXPORTS),
            nodes=self._of(resources.NODES),
            stale=bool(self._group.failures),
        )

    def _of(self, kind: ApiResource) -> tuple[Any, ...]:
        """The objects of `kind`, by (namespace, name)."""
        mirror = self._group.mirrors.get(kind)
        return () if mirror is None else mirror.in_order()

    def _update(self, listed: set[ApiResource]) -> None:
        if not self._group.answered:
            return  # a first state with half of the member in it would be worse than none
        candidate = self._candidate()
        released: set[ServiceKey] = set()
        if self._hold is not None and self._confirmed(self._hold):
            released = self._hold.services
            self._release("confirmed", candidate)
        # A list is the truth already; a removal only seen on a watch waits for one.
        fresh = listed & {resources.SERVICES, resources.ENDPOINT_SLICES, resources.SERVICE_EXPORTS}
        removed = set()
        if self.settled.is_set() and not fresh:
            removed = mass_removals(self.state, candidate) - released
        if self._hold is not None:
            removed -= self._hold.services
        if removed:
            self._start_hold(removed)
        if self._hold is not None:
            candidate = keep_held(candidate, self.state, self._hold.services)
        self._publish(candidate)
        self.settled.set()

    def _confirming(self, hold: _Hold) -> bool:
        """A list that would confirm the hold is under way."""
        return hold.confirm is not None and any(
            (listing := self._group.listing(kind)) is not None and listing >= wanted
            for kind, wanted in hold.confirm.items()
        )

    def _confirmed(self, hold: _Hold) -> bool:
        mirrors = self._group.mirrors
        return hold.confirm is not None and all(
            mirrors[kind].sequence >= wanted for kind, wanted in hold.confirm.items()
        )

    def _start_hold(self, services: set[ServiceKey]) -> None:
        metrics.MASS_REMOVALS.labels("held").inc()
        self._log.warning(
            "mass_removal_held",
            services=sorted(f"{ns}/{name}" for ns, name in services),
            hold_seconds=self._settings.hold_seconds,
        )
        loop = asyncio.get_running_loop()
        if self._hold is None:
            timer = loop.call_later(self._settings.hold_seconds, self._expire)
            self._hold = _Hold(set(services), timer, loop.time())
        else:
            # Removals after the lists were asked for need lists started after them.
            self._hold.services |= services
            self._hold.confirm = None
        hold = self._hold
        if hold.asking is not None:
            hold.asking.cancel()
        # One list for a burst: asked for once the removals pause, or the burst has lasted
        # the relist interval (a relist asked for sooner would wait for it anyway).
        quiet = self._settings.hold_quiet_seconds
        due = min(loop.time() + quiet, hold.first + self._settings.relist_interval_seconds)
        hold.asking = loop.call_at(due, self._ask_confirmation)

    def _ask_confirmation(self) -> None:
        hold = self._hold
        if hold is None:
            return
        hold.asking = None
        # A Service deleted, its slices emptied and its export deleted all remove endpoints:
        # list all three again (the exports unless their CRD is absent: nothing to list).
        kinds = [resources.SERVICES, resources.ENDPOINT_SLICES]
        if not self._group.mirrors[resources.SERVICE_EXPORTS].absent:
            kinds.append(resources.SERVICE_EXPORTS)
        hold.confirm = {kind: self._group.relist(kind) for kind in kinds}

    def _expire(self) -> None:
        hold = self._hold
        if hold is not None and not hold.extended and self._confirming(hold):
            # A big member's list can take longer than the hold: its answer is worth waiting
            # for (as long as the client waits for a list), rather than serving what it may
            # contradict a moment later.
            hold.extended = True
            hold.timer = asyncio.get_running_loop().call_later(
                self._settings.list_seconds, self._expire
            )
            self._log.info("mass_removal_extended", wait_seconds=self._settings.list_seconds)
            return
        if self._hold is not None:
            candidate = self._candidate()
            self._release("expired", candidate)
            self._publish(candidate)

    def _release(self, outcome: str, candidate: MemberState) -> None:
        assert self._hold is not None
        hold, self._hold = self._hold, None
        hold.cancel()
        metrics.MASS_REMOVALS.labels(outcome).inc()
        still = mass_removals(self.state, candidate) & hold.services
        self._log.info(
            "mass_removal_" + outcome,
            services=sorted(f"{ns}/{name}" for ns, name in hold.services),
            removed=sorted(f"{ns}/{name}" for ns, name in still),
        )

    def _publish(self, state: MemberState) -> None:
        if state == self.state:
            return
        if state.stale != self.state.stale:
            self._report_staleness(state.stale)
        self.state = state
        self._on_state(state)

    def _report_staleness(self, stale: bool) -> None:
        metrics.MEMBER_STALE.labels(self.member.name).set(1 if stale else 0)
        if stale:
            errors = sorted(set(self.failures.values()))
            self._log.warning("member_stale", errors=errors, kept="last known objects")
        else:
            self._log.info("member_recovered")
