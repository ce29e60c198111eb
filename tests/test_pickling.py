"""The parse cache's pickles: what goes in comes out equal, still frozen and hashable."""

from __future__ import annotations

import dataclasses

import pytest

from xdsfleet.model.fleet import Endpoint, FleetState
from xdsfleet.sources import pickling
from xdsfleet.sources.files import builtin_fleet_path, load_fleet


def test_a_fleet_comes_back_equal() -> None:
    state = load_fleet(builtin_fleet_path()).state
    again = pickling.loads(pickling.dumps(state))
    assert isinstance(again, FleetState)
    assert again == state
    assert hash(again.members[0].member) == hash(state.members[0].member)


def test_what_comes_back_is_still_frozen() -> None:
    state = load_fleet(builtin_fleet_path()).state
    endpoint = next(e for m in state.members for s in m.endpoint_slices for e in s.endpoints)
    again = pickling.loads(pickling.dumps(endpoint))
    assert isinstance(again, Endpoint)
    with pytest.raises(dataclasses.FrozenInstanceError):
        again.addresses = ()  # type: ignore[misc]
