"""What changed between two fleet states, found by identity: the sources hand unchanged objects
on as the very same objects, so comparing identities costs O(members + changed services).

Only changes to members' Services and EndpointSlices are told apart; for anything else callers
derive or translate everything again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import TypeVar

from xdsfleet.model.fleet import FleetState, MemberState

T = TypeVar("T")

# Per member position: the (namespace, name) of the services whose Service or EndpointSlices
# changed.
ServiceChanges = Mapping[int, frozenset[tuple[str, str]]]

# MemberState fields compared object by object; `stale` changes no resource (a stale member's
# objects keep serving); exports are told apart by service, like Services and slices (a member
# lost takes all three with it, and must not cost a translation of everything).
_NOT_COMPARED = frozenset({"services", "endpoint_slices", "exports", "stale"})


def service_changes(before: FleetState, after: FleetState) -> ServiceChanges | None:
    """The services of each member that changed from `before` to `after` (their Service, slices
    or export), or None when more did: the member list, a member itself, its nodes,
    `export_all`."""
    if before.export_all != after.export_all or len(before.members) != len(after.members):
        return None
    changes: dict[int, frozenset[tuple[str, str]]] = {}
    for position, (old, new) in enumerate(zip(before.members, after.members, strict=True)):
        if old is new:
            continue
        if not _same(
            old, new, (f.name for f in fields(MemberState) if f.name not in _NOT_COMPARED)
        ):
            return None
        changed = _changed_services(old, new)
        if changed:
            changes[position] = changed
    return changes


def only_members_changed(before: FleetState, after: FleetState) -> bool:
    """Whether gateways, routes, policies, secrets, ramps and the rest are unchanged."""
    return _same(before, after, (f.name for f in fields(FleetState) if f.name != "members"))


def _same(old: object, new: object, names: Iterator[str]) -> bool:
    # Identity first: an equality test of an unchanged tuple of routes would walk all of it.
    return all((a := getattr(old, name)) is (b := getattr(new, name)) or a == b for name in names)


def _changed_services(old: MemberState, new: MemberState) -> frozenset[tuple[str, str]]:
    changed = {
        (s.namespace, s.name)
        for s in _replaced(old.services, new.services, lambda s: (s.namespace, s.name))
    }
    changed.update(
        (s.namespace, s.service_name)
        for s in _replaced(
            old.endpoint_slices, new.endpoint_slices, lambda s: (s.namespace, s.name)
        )
    )
    if old.exports is not new.exports:
        changed.update(set(old.exports) ^ set(new.exports))
    return frozenset(changed)


def _replaced(
    before: tuple[T, ...], after: tuple[T, ...], name: Callable[[T], tuple[str, str]]
) -> Iterator[T]:
    """The objects of either tuple that are not the very same object in the other, by name."""
    if before is after:
        return
    if len(before) == len(after):
        # The common case, an object replaced in place: found without building dicts.
        pairs = [(was, now) for was, now in zip(before, after, strict=True) if was is not now]
        if all(name(was) == name(now) for was, now in pairs):
            yield from (o for pair in pairs for o in pair)
            return
    old = {name(o): o for o in before}
    new = {name(o): o for o in after}
    for key in old.keys() | new.keys():
        was, now = old.get(key), new.get(key)
        if was is not now:
            yield from (o for o in (was, now) if o is not None)
