"""Reading Kubernetes-style YAML documents strictly: names, types, ranges and unknown fields.

Every parser of fleet documents (`manifests`, `gateway_api`, `policy`) reads through `Map`, so
that each says only what it expects and every mistake is reported the same way, naming the file,
the object and the field. Like its users, it must not do I/O or know about Envoy.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import yaml

from xdsfleet.model.errors import InvalidInput, Problem

T = TypeVar("T")

FLEET_GROUP = "xdsfleet.io"
FLEET_API_VERSION = f"{FLEET_GROUP}/v1alpha1"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MCS_GROUP = "multicluster.x-k8s.io"

MAX_PORT = 65535
# Gateway API's bound for backendRef weights; member weights share it so that locality weights
# (healthy endpoints x member weight) stay far from uint32 overflow in Envoy.
MAX_WEIGHT = 1_000_000

# --- Names -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameRule:
    """A Kubernetes name syntax, with the words used to explain it."""

    pattern: re.Pattern[str]
    max_length: int
    description: str

    def accepts(self, value: str) -> bool:
        return len(value) <= self.max_length and self.pattern.fullmatch(value) is not None


_LABEL_RE = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL = NameRule(
    re.compile(_LABEL_RE),
    63,
    "a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or "
    "digit, at most 63 characters)",
)
# Service names must also start with a letter: they become DNS names.
DNS_1035_LABEL = NameRule(
    re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"),
    63,
    "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with "
    "a letter or digit, at most 63 characters)",
)
DNS_SUBDOMAIN = NameRule(
    re.compile(rf"{_LABEL_RE}(\.{_LABEL_RE})*"),
    253,
    "a DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253 characters)",
)
HOSTNAME = NameRule(
    re.compile(rf"(\*\.)?{_LABEL_RE}(\.{_LABEL_RE})*"),
    253,
    "a hostname (DNS-1123 labels separated by dots, optionally starting with '*.')",
)
# An HTTP header or cookie name: an RFC 7230 token (Gateway API's HTTPHeaderName).
HTTP_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}")
# A named targetPort refers to a container port name, which is an IANA service name.
PORT_NAME = NameRule(
    re.compile(r"(?=[-a-z0-9]*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?"),
    15,
    "a port name (lowercase letters, digits and '-', with at least one letter, at most 15 "
    "characters)",
)


# --- YAML ------------------------------------------------------------------------------------


# libyaml's parser when PyYAML has it (about 4x faster on a large fleet's first load, see
# BENCHMARKS.md); the constructors, and so the checks below, are the same Python code.
JsonObject = dict[str, Any]
"""An object of a Kubernetes API response or a YAML document, as plain JSON types."""

_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc]
    """A SafeLoader that refuses duplicate keys: plain YAML keeps the last one without a word,
    which would hide a mistake exactly where this module promises to find them.

    A document of plain maps, lists and scalars (nearly every manifest) is built from its nodes
    by `_plain_data`, about a third cheaper than PyYAML's constructor, which (a generator per
    map, a memo per node, every key built twice for the duplicate check) was about a third of
    reading a large fleet's files. Anything else (an alias, a merge key, a tag other than
    str/seq/map on a collection, a duplicate key, or any error) is built by PyYAML's own
    construction from the start, so that what it builds and every error it raises are unchanged
    (tests/test_yaml_reading.py holds the two ways to each other)."""

    def construct_document(self, node: yaml.Node) -> Any:
        try:
            data = _plain_data(self, node, set())
            if self.state_generators:
                raise _Irregular("construction left for later")
        except Exception:  # not plain, or wrong: PyYAML's construction decides
            self._forget()  # what the attempt left (a node it was building counts as recursive)
            return super().construct_document(node)
        self._forget()
        return data

    def _forget(self) -> None:
        """PyYAML's construction state, back to that of a new document."""
        self.constructed_objects: dict[Any, Any] = {}
        self.recursive_objects: dict[Any, Any] = {}
        self.state_generators: list[Any] = []
        self.deep_construct = False


class _Irregular(Exception):
    """A document `_plain_data` leaves to PyYAML's construction."""


_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_ScalarNode, _SequenceNode, _MappingNode = yaml.ScalarNode, yaml.SequenceNode, yaml.MappingNode


def _plain_data(loader: _StrictLoader, node: yaml.Node, seen: set[int]) -> Any:
    """What PyYAML's construction builds of `node` when it is plain; raises when it is not."""
    kind = type(node)
    if kind is _ScalarNode:
        # A str is the scalar's text; other scalars (int, bool, null, timestamp...) are built by
        # PyYAML's own constructor for them.
        # (deep: a constructor that is a generator, on a scalar, runs to its end here, not later.)
        return node.value if node.tag == _STR else loader.construct_object(node, deep=True)
    if id(node) in seen:
        raise _Irregular("an alias")  # PyYAML gives the very same object again
    seen.add(id(node))
    if kind is _SequenceNode and node.tag == _SEQ:
        return [_plain_data(loader, item, seen) for item in node.value]
    if kind is not _MappingNode or node.tag != _MAP:
        raise _Irregular(node.tag)
    # Keys first, then values, in order: PyYAML's order (`_construct_unique_mapping`).
    keys = []
    for key_node, _ in node.value:
        if type(key_node) is not _ScalarNode or key_node.tag.startswith(_NOT_KEYS):
            raise _Irregular("a merge key, a value key or a collection as a key")
        keys.append(_plain_data(loader, key_node, seen))
    data: dict[Any, Any] = {}
    for key, (_, value_node) in zip(keys, node.value, strict=True):
        if key in data:
            raise _Irregular("a duplicate key")
        data[key] = _plain_data(loader, value_node, seen)
    return data


# Keys PyYAML's mapping construction treats apart (`flatten_mapping`): `<<` and `=`.
_NOT_KEYS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_documents(text: str, file: str) -> list[object]:
    """The documents of a multi-document YAML text (empty documents dropped); raises
    `InvalidInput` naming the line when the text does not parse."""
    try:
        documents = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        reason = error.problem or error.context or "invalid YAML"
        raise InvalidInput(
            [Problem(file, "", "", f"YAML does not parse{line}: {reason}")]
        ) from None
    except yaml.YAMLError as error:
        raise InvalidInput([Problem(file, "", "", f"YAML does not parse: {error}")]) from None
    return [document for document in documents if document is not None]


# --- Reading one mapping ---------------------------------------------------------------------


def type_name(value: object) -> str:
    match value:
        case None:
            return "nothing"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "a list"
        case dict():
            return "a map"
        case _:
            return type(value).__name__


# Gateway API's Duration: 1 to 4 parts of up to 5 digits and a unit.
_DURATION = re.compile(r"(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}

_EXPECTED = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a map"}


@dataclass(slots=True)
class Where:
    """Where the problems of one document go, and the object they name."""

    file: str
    obj: str
    problems: list[Problem]

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, self.obj, path, message))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean X?` when one of `choices` is close to `word` (a typo), else ""."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class Map:
    """One mapping of a document, read field by field. It reports its unknown keys once, when
    created, and every value of the wrong type as it is read, so that each parser only says what
    it expects. Values it cannot use come back as the default: the document is invalid by then,
    and the caller raises instead of using them."""

    def __init__(self, where: Where, path: str, value: object, fields: Collection[str]) -> None:
        self._where = where
        self.path = path
        self._raw: dict[Any, Any] = {}
        # A map that is missing (None) or not a map was reported once, where it was read: its
        # fields are not reported missing on top.
        self._absent = not isinstance(value, dict)
        if isinstance(value, dict):
            self._raw = value
            for key in value:
                if key not in fields:
                    hint = did_you_mean(str(key), fields)
                    where.add(self.at(str(key)), f"unknown field{hint}")
        elif value is not None:
            where.add(path, f"expected a map, got {type_name(value)}")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self._where.add(self.at(key), message)

    def report(self, message: str) -> None:
        """A problem with the mapping as a whole."""
        self._where.add(self.path, message)

    def required_string(self, key: str) -> str:
        """A required string that may be empty."""
        value = self._get(key, str, required=True)
        return value or ""

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def value(self, key: str) -> object:
        return self._raw.get(key)

    def _get(self, key: str, kind: type[T], *, required: bool) -> T | None:
        value = self._raw.get(key)
        if value is None:
            if required and not self._absent:
                self.problem(key, "missing required field")
            return None
        # YAML booleans are Python ints: `port: true` must not pass for port 1.
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        self.problem(key, f"expected {_EXPECTED[kind]}, got {type_name(value)}")
        return None

    @overload
    def text(self, key: str) -> str | None: ...
    @overload
    def text(self, key: str, default: str) -> str: ...
    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key, str, required=False)
        return default if value is None else value

    def required_text(self, key: str) -> str:
        value = self._get(key, str, required=True)
        if value == "":
            self.problem(key, "must not be empty")
        return value or ""

    def name(self, key: str, rule: NameRule) -> str:
        value = self.required_text(key)
        self._check_name(key, value, rule)
        return value

    def optional_name(self, key: str, rule: NameRule) -> str | None:
        value = self.text(key)
        if value is not None:
            self._check_name(key, value, rule)
        return value

    def _check_name(self, key: str, value: str, rule: NameRule) -> None:
        if value and not rule.accepts(value):
            self.problem(key, f"{value!r} is not {rule.description}")

    def choice(self, key: str, options: Sequence[str], default: str) -> str:
        value = self.text(key, default)
        if value not in options:
            self.problem(key, f"must be one of {', '.join(options)}; got {value!r}")
            return default
        return value

    @overload
    def number(self, key: str, low: int, high: int) -> int | None: ...
    @overload
    def number(self, key: str, low: int, high: int, default: int) -> int: ...
    def number(self, key: str, low: int, high: int, default: int | None = None) -> int | None:
        value = self._get(key, int, required=False)
        if value is None:
            return default
        self._check_range(key, value, low, high)
        return value

    def port(self, key: str) -> int:
        """A required port number."""
        value = self._get(key, int, required=True)
        if value is None:
            return 0
        self._check_range(key, value, 1, MAX_PORT)
        return value

    def _check_range(self, key: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}; got {value}")

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, required=False)
        return default if value is None else value

    def optional_flag(self, key: str) -> bool | None:
        return self._get(key, bool, required=False)

    def decimal(self, key: str, low: float, high: float) -> float | None:
        """A number that may have a fraction (`1.5`)."""
        value = self._raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"expected a number, got {type_name(value)}")
            return None
        if not low <= value <= high:
            self.problem(key, f"must be between {low:g} and {high:g}; got {value:g}")
        return float(value)

    def duration(self, key: str, *, positive: bool = False) -> int | None:
        """A Gateway API duration (`500ms`, `30s`, `1m30s`, `1h`) in milliseconds."""
        value = self.text(key)
        if value is None:
            return None
        if _DURATION.fullmatch(value) is None:
            self.problem(key, f"{value!r} is not a duration (like 500ms, 30s or 1m30s)")
            return None
        total = sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(value))
        if positive and total == 0:
            self.problem(key, "must be longer than 0s")
        return total

    def numbers(self, key: str, low: int, high: int) -> list[int]:
        """A list of integers, each within [low, high]."""
        items = self._get(key, list, required=False) or []
        found = []
        for i, item in enumerate(items):
            path = f"{self.at(key)}[{i}]"
            if isinstance(item, bool) or not isinstance(item, int):
                self._where.add(path, f"expected an integer, got {type_name(item)}")
            elif not low <= item <= high:
                self._where.add(path, f"must be between {low} and {high}; got {item}")
            else:
                found.append(item)
        return found

    def mapping(self, key: str, fields: Collection[str], *, required: bool = False) -> Map:
        value = self._raw.get(key)
        if value is None and required and not self._absent:
            self.problem(key, "missing required field")
        return Map(self._where, self.at(key), value, fields)

    def mappings(
        self, key: str, fields: Collection[str], *, required: bool = False, non_empty: bool = False
    ) -> list[Map]:
        items = self._get(key, list, required=required) or []
        if non_empty and key in self._raw and not items:
            self.problem(key, "must not be empty")
        return [
            Map(self._where, f"{self.at(key)}[{i}]", item, fields) for i, item in enumerate(items)
        ]

    def strings(self, key: str, *, required: bool = False) -> list[str]:
        items = self._get(key, list, required=required) or []
        if required and key in self._raw and not items:
            self.problem(key, "must not be empty")
        found = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                found.append(item)
            else:
                self._where.add(f"{self.at(key)}[{i}]", f"expected a string, got {type_name(item)}")
        return found

    def string_map(self, key: str) -> dict[str, str]:
        """A map of strings to strings, like labels; its keys are free, so none is unknown."""
        items = self._get(key, dict, required=False) or {}
        found = {}
        for name, value in items.items():
            if isinstance(name, str) and isinstance(value, str):
                found[name] = value
            else:
                self._where.add(f'{self.at(key)}["{name}"]', "expected a string key and value")
        return found


def flag_repeats(owner: Map, path: str, field: str, values: Sequence[Hashable], what: str) -> None:
    """Report every entry of the list `path` whose `field` (or, with `field` "", the entry
    itself) repeats an earlier entry's. `values` follows the list entry by entry; None stands
    for an entry without the field."""
    seen: set[Hashable] = set()
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in seen:
            owner.problem(
                f"{path}[{i}].{field}" if field else f"{path}[{i}]", f"duplicate {what} {value}"
            )
        seen.add(value)


# --- Objects ---------------------------------------------------------------------------------

METADATA_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
    }
)


def object_label(kind: str, namespace: str, name: str) -> str:
    """How problems and origins name an object: `Kind NS/NAME`, or `Kind NAME` unnamespaced."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def origin_key(obj: str, member: str | None = None) -> str:
    """The key of `LoadedFleet.origins` for the object labelled `obj` (see `object_label`);
    objects of a member carry its name, as `Service default/shop@zone-a`."""
    return obj if member is None else f"{obj}@{member}"


def metadata(doc: Map, rule: NameRule, *, namespaced: bool) -> tuple[str, str, dict[str, str]]:
    """(namespace, name, labels) of a document; the namespace is "" for unnamespaced kinds."""
    found = doc.mapping("metadata", METADATA_FIELDS, required=True)
    name = found.name("name", rule)
    namespace = ""
    if namespaced:
        namespace = found.optional_name("namespace", DNS_LABEL) or "default"
    labels = found.string_map("labels")
    found.string_map("annotations")
    return namespace, name, labels


def fixed(entry: Map, key: str, only: str) -> None:
    """A field that may only state its default: generated manifests often spell it out."""
    value = entry.text(key, only)
    if value != only:
        entry.problem(key, f"only {only!r} is supported; got {value!r}")
