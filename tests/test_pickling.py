"""The parse cache's pickles: what goes in comes out equal, still frozen and hashable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

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


@dataclasses.dataclass(frozen=True, slots=True)
class _One:
    value: int


@dataclasses.dataclass(frozen=True)
class _NoFields:
    pass


def test_dataclasses_of_one_field_or_none_come_back_equal() -> None:
    again = pickling.loads(pickling.dumps([_One(5), _NoFields(), (_One(6),)]))
    assert again == [_One(5), _NoFields(), (_One(6),)]


def test_a_fresh_interpreter_loads_them(tmp_path: Path) -> None:
    # The pickle names each class's builder in `pickling`; a process that never made one (a
    # server loading the parse cache, or a decode worker's answer) makes it on first use.
    state = load_fleet(builtin_fleet_path()).state
    path = tmp_path / "state.pkl"
    path.write_bytes(pickling.dumps(state))
    script = (
        "import sys; from xdsfleet.sources import pickling; from xdsfleet.sources.files import "
        "builtin_fleet_path, load_fleet; "
        "print(pickling.loads(open(sys.argv[1], 'rb').read()) == load_fleet(builtin_fleet_path())"
        ".state)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def test_a_pickle_names_only_dataclasses_builders() -> None:
    with pytest.raises(AttributeError):
        pickling.BUILDERS.__getattr__("os:system")
    with pytest.raises(AttributeError):
        pickling.BUILDERS.__getattr__("system")
    assert pickling.BUILDERS.__getattr__("xdsfleet:model:fleet:Endpoint") is pickling.BUILDERS.of(
        Endpoint
    )
