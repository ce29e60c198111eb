"""Churn: the endpoint events a live fleet produces, applied to a generated `Fleet`.

Three kinds of event, each changing one endpoint, as Kubernetes reports them one watch event at
a time: a *flap* (a ready endpoint becomes not ready; a later flap brings the oldest one back, so
the number of unready endpoints stays small), a *scale-up* (a pod with a fresh address) and a
*scale-down* (a pod removed, the youngest first so the fleet keeps its size). Losing and
restoring a member are separate calls: they are rare, large events the measures place
themselves. The marker endpoint never churns: convergence runs rely on it.

Seeded, so that two runs make the same changes.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace
from enum import StrEnum

from benchmarks.fleet import Fleet, endpoint_address, marker_step
from xdsfleet.model.fleet import Endpoint

# Random picks before giving up: only a fleet that has lost nearly everything runs out.
PLACE_ATTEMPTS = 1_000
# Of every 20 events: 16 flaps, 2 scale-ups, 2 scale-downs.
_MIX = ("flap",) * 16 + ("up", "up", "down", "down")


class Kind(StrEnum):
    FLAP_DOWN = "flap-down"
    FLAP_UP = "flap-up"
    SCALE_UP = "scale-up"
    SCALE_DOWN = "scale-down"


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    member: int
    service: int


class Churn:
    def __init__(self, fleet: Fleet, *, seed: int = 1) -> None:
        self.fleet = fleet
        self._random = random.Random(seed)
        self._down: deque[tuple[int, int, str]] = deque()  # (member, service, address)
        self._added: list[tuple[int, int, str]] = []
        self._next_address = fleet.shape.endpoints + 1

    def event(self) -> Event:
        """Apply one random event, per the mix above."""
        match self._random.choice(_MIX):
            case "flap":
                # Down and up in turns: the unready endpoints stay few, as in a healthy fleet.
                if len(self._down) > 1 and self._random.random() < 0.5:
                    return self.flap_up()
                return self.flap_down()
            case "up":
                return self.scale_up()
            case _:
                return self.scale_down()

    def flap_down(self) -> Event:
        member, service = self._place()
        endpoints = self.fleet.endpoints(member, service)
        candidates = [
            i for i, e in enumerate(endpoints) if e.ready and marker_step(e.addresses[0]) is None
        ]
        if not candidates:
            return self.scale_up()
        i = self._random.choice(candidates)
        self._down.append((member, service, endpoints[i].addresses[0]))
        self._set(member, service, endpoints, i, replace(endpoints[i], ready=False, serving=False))
        return Event(Kind.FLAP_DOWN, member, service)

    def flap_up(self) -> Event:
        member, service, address = self._down.popleft()
        if self.fleet.lost(member):
            self._down.append((member, service, address))  # back with its member
            return self.flap_down()
        endpoints = self.fleet.endpoints(member, service)
        i = next((i for i, e in enumerate(endpoints) if e.addresses[0] == address), None)
        if i is None:  # scaled down meanwhile
            return self.flap_down()
        self._set(member, service, endpoints, i, replace(endpoints[i], ready=True, serving=True))
        return Event(Kind.FLAP_UP, member, service)

    def scale_up(self) -> Event:
        member, service = self._place()
        address = endpoint_address(self._next_address)
        self._next_address += 1
        added = self.fleet.new_endpoint(member, address)
        self.fleet.set_endpoints(member, service, (*self.fleet.endpoints(member, service), added))
        self._added.append((member, service, address))
        return Event(Kind.SCALE_UP, member, service)

    def scale_down(self) -> Event:
        while self._added:
            member, service, address = self._added.pop()
            endpoints = self.fleet.endpoints(member, service)
            kept = tuple(e for e in endpoints if e.addresses[0] != address)
            if len(kept) < len(endpoints) and not self.fleet.lost(member):
                self.fleet.set_endpoints(member, service, kept)
                return Event(Kind.SCALE_DOWN, member, service)
        return self.flap_down()  # nothing added to take away: the fleet keeps its size

    def _place(self) -> tuple[int, int]:
        """Where a random generated endpoint lives, if its member is not lost and it still has
        endpoints: places weigh by their endpoints, as in a real fleet."""
        for _ in range(PLACE_ATTEMPTS):
            member, service = self.fleet.place_of(
                self._random.randrange(self.fleet.shape.endpoints)
            )
            if not self.fleet.lost(member) and self.fleet.endpoints(member, service):
                return member, service
        raise RuntimeError("no endpoints left to churn")

    def _set(
        self, member: int, service: int, endpoints: tuple[Endpoint, ...], i: int, new: Endpoint
    ) -> None:
        self.fleet.set_endpoints(member, service, (*endpoints[:i], new, *endpoints[i + 1 :]))
