"""Checking a declared schema against the Draft 2020-12 meta-schema, one subschema at a time.

jsonschema's own meta-schema check recurses through every subschema with `$dynamicRef`, which costs about a
millisecond per subschema: a 15 KB schema with 700 `$ref`s (or 600 properties) took ~1 s to declare. Here the
meta-schema is made shallow (each `{"$dynamicRef": "#meta"}` becomes "an object or a boolean"), every subschema
is checked against it on its own, once, and the walk over subschemas is the hub's (the same keyword lists that
compile and walk schemas elsewhere): the same verdicts, in linear time with a small constant.

`format: regex` (on `pattern` and the `patternProperties` names) is the only format checked, so the outcome does
not depend on optional format packages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from jsonschema_specifications import REGISTRY as SPECIFICATIONS

from app.schemas.validation import SCHEMA_KEYWORDS, SCHEMA_LIST_KEYWORDS, SCHEMA_MAP_KEYWORDS, escape_token, shorten

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_VOCABULARIES = ("core", "applicator", "unevaluated", "validation", "meta-data", "format-annotation", "content")
_ANY_SCHEMA = {"type": ["object", "boolean"]}


def _shallow(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("$dynamicRef") == "#meta":
            return dict(_ANY_SCHEMA)
        return {key: _shallow(item) for key, item in value.items() if key != "$dynamicAnchor"}
    if isinstance(value, list):
        return [_shallow(item) for item in value]
    return value


_META_BASE = "https://json-schema.org/draft/2020-12/"


def _inlined(value: Any, uri: str) -> Any:
    """`value` (part of the meta-schema at `uri`) with each `$ref` to a definition (`#/$defs/x`, or another
    vocabulary's `meta/core#/$defs/x`) replaced by that definition: no reference is looked up while checking
    (referencing's URL handling was most of jsonschema's cost)."""
    if isinstance(value, dict):
        rest = {key: _inlined(item, uri) for key, item in value.items() if key != "$ref"}
        if "$ref" not in value:
            return rest
        document, _, fragment = value["$ref"].partition("#")
        target_uri = _META_BASE + document if document else uri
        if not fragment.startswith("/$defs/") or "/" in fragment.removeprefix("/$defs/"):
            raise ValueError(f"unexpected reference {value['$ref']!r} in the 2020-12 meta-schema")
        definition = _shallow(SPECIFICATIONS.contents(target_uri))["$defs"][fragment.removeprefix("/$defs/")]
        target = _inlined(definition, target_uri)
        return {"allOf": [target, rest]} if rest else target
    if isinstance(value, list):
        return [_inlined(item, uri) for item in value]
    return value


def _shallow_validator() -> Draft202012Validator:
    """One flat schema: the root's and every vocabulary's `properties`, shallow and without references."""
    properties: dict[str, Any] = {}
    for uri in (DRAFT_2020_12, *(f"{_META_BASE}meta/{name}" for name in _VOCABULARIES)):
        for name, rule in _shallow(SPECIFICATIONS.contents(uri)).get("properties", {}).items():
            if name in properties:
                raise ValueError(f"keyword {name!r} is declared by two 2020-12 vocabularies")
            properties[name] = _inlined(rule, uri)
    return Draft202012Validator({"type": ["object", "boolean"], "properties": properties},
                                format_checker=FormatChecker(formats=("regex",)))


_SHALLOW = _shallow_validator()


def _location(path) -> str:
    return "".join("/" + escape_token(token) for token in path)


def _children(node: dict) -> Iterator[tuple[tuple, Any]]:
    for keyword, value in node.items():
        if keyword in SCHEMA_KEYWORDS:
            yield (keyword,), value
        elif keyword in SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            yield from (((keyword, index), child) for index, child in enumerate(value))
        elif keyword in SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            yield from (((keyword, name), child) for name, child in value.items())


def meta_problem(schema: Any, checked: set[int]) -> tuple[str, str] | None:
    """(problem, JSON Pointer relative to `schema`) for the first subschema of `schema` (itself included) that
    the 2020-12 meta-schema refuses, or None. Subschemas whose id is in `checked` are skipped (and every one
    checked here is added), so several calls over one document check each subschema once."""
    stack: list[tuple[Any, tuple]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in checked:
            continue
        checked.add(id(node))
        error = best_match(_SHALLOW.iter_errors(node))
        if error is not None:
            return (f"not a valid JSON Schema (draft 2020-12): {shorten(error.message)}",
                    _location(path) + _location(error.absolute_path))
        if isinstance(node, dict):
            stack.extend((child, path + sub) for sub, child in reversed(list(_children(node))))
    return None
