"""Checking documents against a CRD's OpenAPI v3 schema, as the API server would, but stricter.

The API server silently prunes fields its structural schema does not declare; here they are
errors, since a misspelt field in an example would otherwise vanish without a word. Only the
keywords below are understood, and a schema using any other one fails loudly rather than being
half-checked. CEL rules (`x-kubernetes-validations`) are not evaluated: our own parser, which
every example also goes through, enforces the same rules.
"""

from __future__ import annotations

import re
from typing import Any

_IGNORED = frozenset(
    {
        "description",
        "default",
        "example",
        "title",
        "format",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
    }
)
_CHECKED = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "additionalProperties",
        "nullable",
        "anyOf",
        "oneOf",
        "allOf",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-embedded-resource",
    }
)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def unknown_keywords(schema: Any, path: str = "") -> list[str]:
    """Keywords of `schema` that `problems` does not understand."""
    if not isinstance(schema, dict):
        return []
    found = [f"{path}: {k}" for k in schema if k not in _IGNORED | _CHECKED]
    for key, value in (schema.get("properties") or {}).items():
        found += unknown_keywords(value, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        found += unknown_keywords(schema.get(key), f"{path}[]")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            found += unknown_keywords(sub, f"{path}.{key}[{i}]")
    return found


def _type_matches(value: Any, schema: dict[str, Any]) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    kind = schema.get("type")
    if kind is None:
        return True
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _TYPES[kind])


def problems(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Everything wrong with `value` against `schema`, each naming its path."""
    where = path or "(root)"
    if not _type_matches(value, schema):
        return [f"{where}: expected {schema.get('type')}, got {type(value).__name__}"]
    found: list[str] = []
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options and not any(not problems(value, s, path) for s in options):
            found.append(f"{where}: matches none of {key}")
    for sub in schema.get("allOf") or []:
        found += problems(value, sub, path)
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e9):
            found.append(f"{where}: length {len(value)} out of bounds")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and not schema.get("minimum", -1e18) <= value <= schema.get("maximum", 1e18):
        found.append(f"{where}: {value} out of bounds")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1e9):
            found.append(f"{where}: {len(value)} items, out of bounds")
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:
            seen = [tuple(item.get(k) for k in keys) for item in value if isinstance(item, dict)]
            if len(seen) != len(set(seen)):
                found.append(f"{where}: duplicate {keys}")
        for i, item in enumerate(value):
            found += problems(item, schema.get("items") or {}, f"{path}[{i}]")
    if isinstance(value, dict):
        found += _object_problems(value, schema, path)
    return found


def _object_problems(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    where = path or "(root)"
    found = [f"{where}.{key}: missing required field" for key in schema.get("required", [])]
    found = [
        p for p, key in zip(found, schema.get("required", []), strict=True) if key not in value
    ]
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get(
        "x-kubernetes-embedded-resource"
    ):
        properties = properties or {}
        extra = extra if extra is not None else {}
    for key, item in value.items():
        at = f"{path}.{key}" if path else key
        if properties is not None and key in properties:
            found += problems(item, properties[key], at)
        elif isinstance(extra, dict):
            found += problems(item, extra, at)
        elif properties is not None or extra is False:
            found.append(f"{at}: not in the schema (the API server would drop it)")
    return found
