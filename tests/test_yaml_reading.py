"""YAML documents built from their nodes (`reading._plain_data`) against PyYAML's construction.

For any text, valid YAML or not, `load_documents` gives what it gives with PyYAML's construction
alone: the same documents, or the same problem (wording and line). The texts: random plain data
dumped in every style, the constructs the plain path leaves to PyYAML (aliases, merge keys, tags,
duplicate, `=` and collection keys) and random edits of both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdsfleet.documents import reading
from xdsfleet.model.errors import InvalidInput

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["yes", "No", "on", "0x1F", "0o17", "1_000", "1:30", "2025-01-01", "~", ""])
)
_data = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=5) | st.integers(0, 3) | st.booleans(), inner, max_size=4
        )
    ),
    max_leaves=12,
)
_IRREGULAR = [
    "a: &x {b: 1}\nc: *x\n",
    "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n",
    "- &s [1, 2]\n- *s\n",
    "k: &v hello\nl: *v\n",
    "s: !!set {a, b}\n",
    "o: !!omap [{a: 1}, {b: 2}]\n",
    "p: !!pairs [{a: 1}, {a: 2}]\n",
    "b: !!binary aGVsbG8=\n",
    "t: !!timestamp 2001-12-14t21:59:43.10-05:00\n",
    "f: !foo bar\n",
    "m: !!str {a: 1}\n",
    "q: !!map [1, 2]\n",
    "n: !!int '12'\n",
    "a: 1\na: 2\n",
    "1: a\n1.0: b\n",
    "true: a\nyes: b\n",
    "=: value\n",
    "? [a, b]\n: c\n",
    "? {a: 1}\n: c\n",
    "x: !!float .inf\ny: .NaN\n",
    "--- a\n--- b\n...\n",
    "a: [1, 2\n",
    "a: b: c\n",
    "\t- x\n",
    "key: 'unterminated\n",
    "- !!python/object:os.system x\n",
    "",
    "---\n---\n",
    "a: {b: {c: {d: [1, {e: *nope}]}}}\n",
]


@st.composite
def _texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        documents = draw(st.lists(_data, min_size=1, max_size=3))
        text = yaml.safe_dump_all(
            documents,
            default_flow_style=draw(st.sampled_from([None, True, False])),
            default_style=draw(st.sampled_from([None, '"', "'"])),
            explicit_start=draw(st.booleans()),
            allow_unicode=draw(st.booleans()),
        )
    else:
        text = "".join(draw(st.lists(st.sampled_from(_IRREGULAR), min_size=1, max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        # A random edit: a character dropped or one of YAML's own put in.
        where = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and where < len(text):
            text = text[:where] + text[where + 1 :]
        else:
            text = (
                text[:where] + draw(st.sampled_from(list(":-[]{}&*!,?'\"\n #<=|>"))) + text[where:]
            )
    return text


@contextmanager
def _pyyaml_construction_only() -> Iterator[None]:
    with mock.patch.object(
        reading._StrictLoader, "construct_document", reading._SafeLoader.construct_document
    ):
        yield


def _outcome(text: str) -> object:
    try:
        return ("read", reading.load_documents(text, "m/objects.yaml"))
    except InvalidInput as error:
        return ("problems", error.problems)
    except Exception as error:  # what load_documents lets through, if anything: the same
        return ("raised", type(error))


def _same(a: object, b: object) -> bool:
    # NaN is not equal to itself: compare what was read through its repr.
    return a == b or repr(a) == repr(b)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts())
def test_a_text_reads_the_same_built_from_its_nodes_as_by_pyyaml(text: str) -> None:
    fast = _outcome(text)
    with _pyyaml_construction_only():
        full = _outcome(text)
    assert _same(fast, full), (text, fast, full)


def test_plain_documents_are_built_from_their_nodes_and_the_rest_by_pyyaml() -> None:
    # Not vacuous: a plain document does not go through PyYAML's construction, an alias does.
    plain = "a: [1, {b: c}]\nd: 2025-01-01\n"
    aliased = "a: &x [1]\nb: *x\n"
    with mock.patch.object(
        reading._SafeLoader, "construct_document", side_effect=AssertionError("built by PyYAML")
    ):
        [document] = reading.load_documents(plain, "f")
    assert document == yaml.safe_load(plain)
    [aliased_document] = reading.load_documents(aliased, "f")
    assert isinstance(aliased_document, dict)
    assert aliased_document["a"] is aliased_document["b"]
