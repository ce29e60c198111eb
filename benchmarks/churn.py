"""Churn: the endpoint events a live fleet produces, applied to a generated `Fleet`.

Three kinds of event, each changing one endpoint, as Kubernetes reports them one watch event at
a time: a *flap* (a ready endpoint becomes not ready; a later flap brings the oldest one back, so
the number of unready endpoints stays small), a *scale-up* (a pod with a fresh address) and a
*scale-down* (a pod removed, the youngest first so the fleet keeps its size). Losing and
restoring a member are separate calls: they are rare, large events the measures place
themselves. The marker endpoint never churns: convergence runs rely on it.

Seeded, so that two runs make the same changes.

The events are made in a process of their own (`python -m benchmarks.churn`, `Generator` in the
server's process starts it), as a real fleet's events come from the members' API servers, not
from the control plane's own loop: what the serving process does with an event is what a
source does with a watch event (`Replica.apply`: the changed slice's endpoints replaced, a
member lost or restored), nothing more. The process reads one window per line on stdin,
`{"seconds": S, "rate": R, "lose": M or null}`, and writes one line per event on stdout,
`{"m": member, "s": service, "e": [[address, ready], ...]}` (the slice's endpoints after the
event), `{"lose": M}` or `{"restore": M}`, flushed as they fall due, then `{"end": events}`.
When it falls behind its clock it writes the overdue events at once, as a watch delivers a
backlog.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from enum import StrEnum

from benchmarks.fleet import Fleet, Shape, endpoint_address, marker_step
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


# --- The generator's process, and the serving side's replica of the fleet ----------------------


def encode(fleet: Fleet, event: Event) -> str:
    """An event as the line the serving process applies: the slice's endpoints after it."""
    endpoints = fleet.endpoints(event.member, event.service)
    return json.dumps(
        {"m": event.member, "s": event.service, "e": [[e.addresses[0], e.ready] for e in endpoints]}
    )


def generate(churn: Churn, seconds: float, rate: float, lost_member: int | None) -> int:
    """`rate` events per second for `seconds`, written as lines; the member, if any, is lost at a
    third of the events and restored at two thirds. Returns how many events were made."""
    fleet = churn.fleet
    total = round(seconds * rate)
    marks = {round(total / 3): "lose", round(2 * total / 3): "restore"}
    start = time.monotonic()
    applied = 0
    while applied < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due <= applied:
            time.sleep(max(0.0, start + applied / rate - time.monotonic()))
            continue
        lines = []
        for i in range(applied, due):
            if lost_member is not None and (mark := marks.get(i)) is not None:
                if mark == "lose":
                    fleet.lose(lost_member)
                else:
                    fleet.restore(lost_member)
                lines.append(json.dumps({mark: lost_member}))
            lines.append(encode(fleet, churn.event()))
        applied = due
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    return total


class Replica:
    """The serving process's copy of the generated fleet, kept by the generator's lines."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.events = 0
        self.lost_at: float | None = None  # time.monotonic() when a member was last lost
        self.restored_at: float | None = None  # ... restored

    def apply(self, line: str) -> bool:
        """Apply one line; False at the end of a window."""
        data = json.loads(line)
        if "end" in data:
            return False
        if "lose" in data:
            self.fleet.lose(data["lose"])
            self.lost_at = time.monotonic()
        elif "restore" in data:
            self.fleet.restore(data["restore"])
            self.restored_at = time.monotonic()
        else:
            member = data["m"]
            self.fleet.set_endpoints(
                member,
                data["s"],
                tuple(self.fleet.new_endpoint(member, a, ready=r) for a, r in data["e"]),
            )
            self.events += 1
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description="churn events, one JSON line each")
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--endpoints", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    churn = Churn(Fleet(Shape(args.members, args.services, args.endpoints)), seed=args.seed)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        window = json.loads(line)
        events = generate(churn, window["seconds"], window["rate"], window["lose"])
        print(json.dumps({"end": events}), flush=True)


if __name__ == "__main__":
    main()
