"""Fuzzing the documents a fleet is made of: the full example's Fleet, member, route, TLS and
policy files, valid and mutated (keys dropped, values of every type, unknown fields, repeated
items). Whatever a file holds, nothing crashes; a rejection names its file, object and field;
and the fleet keeps the last good version of the rejected file (sources/files.py).

`make test` runs a short pass; `make fuzz` a long one (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdsfleet.documents.manifests import Place, parse_file
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.sources import files as file_source

EXAMPLE = Path(__file__).parent.parent / "examples" / "full"
FILES = {
    "fleet.yaml": Place.FLEET,
    "members/zone-a/services.yaml": Place.MEMBER,
    "members/idc/services.yaml": Place.MEMBER,
    "routes/gateway.yaml": Place.ROUTES,
    "routes/shop.yaml": Place.ROUTES,
    "routes/policies.yaml": Place.ROUTES,
    "routes/tls.yaml": Place.ROUTES,
}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "*", "/", "a/b", "0", "-1", "true", "80", "http", "10.0.0.1", "x" * 300]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def documents(name: str) -> list[Any]:
    return list(yaml.safe_load_all((EXAMPLE / name).read_text()))


@st.composite
def mutated(draw: st.DrawFn, name: str) -> list[Any]:
    """The documents of file `name`, with one to three mutations at random places."""
    docs = documents(name)
    for _ in range(draw(st.integers(1, 3))):
        parent: Any = docs
        key: Any = draw(st.integers(0, len(docs) - 1))
        # Walk down: at each level, stop here or go into a child.
        while isinstance(parent[key], (dict, list)) and parent[key] and draw(st.booleans()):
            parent = parent[key]
            keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["replace", "delete", "unknown", "repeat"]))
        if action == "replace" or (action == "delete" and parent is docs):
            parent[key] = draw(VALUES)
        elif action == "delete":
            del parent[key]
        elif action == "unknown" and isinstance(parent[key], dict):
            parent[key][draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
        elif action == "repeat" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(parent[key][0])
    return docs


def text_of(docs: list[Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


# Problems with no field to name: a document that is no object at all (named by its position,
# "object (document 2)"), and a Fleet file without its Fleet (the file as a whole).
WHOLE_DOCUMENT = "expected a Kubernetes object"
WHOLE_FILE = "no Fleet document"


def check_named(problems: list[Problem], file: str) -> None:
    """Every problem names the file, the object and the field (or is about a whole document or
    the whole file, and says so)."""
    assert problems
    for problem in problems:
        assert problem.file == file, problem
        assert problem.message, problem
        if problem.message.startswith(WHOLE_FILE):
            continue
        assert problem.obj, problem
        assert problem.field or problem.message.startswith(WHOLE_DOCUMENT), problem


@FUZZ
@given(data=st.data())
def test_a_mutated_file_parses_or_is_rejected_by_file_object_and_field(data: Any) -> None:
    name = data.draw(st.sampled_from(sorted(FILES)))
    docs = data.draw(mutated(name))
    try:
        parse_file(text_of(docs), name, FILES[name], "/fleet")
    except InvalidInput as invalid:
        check_named(list(invalid.problems), name)


@FUZZ
@given(data=st.data())
def test_a_rejected_file_leaves_the_last_good_fleet_serving(data: Any) -> None:
    name = data.draw(st.sampled_from(sorted(FILES)))
    docs = data.draw(mutated(name))
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "full"
        shutil.copytree(EXAMPLE, root)
        catalog = file_source._Catalog(root / "fleet.yaml")
        catalog.refresh(())
        good = catalog.settle()
        assert not good.problems
        path = root / name
        path.write_text(text_of(docs))
        catalog.refresh([path])
        outcome = catalog.settle()  # must not raise: a good Fleet is known
        if str(path) in outcome.rejected:
            assert outcome.loaded.state == good.loaded.state
            check_named([p for p in outcome.problems if p.file == str(path)], str(path))
        else:
            assert not [p for p in outcome.problems if p.file == str(path)]
