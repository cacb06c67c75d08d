"""What a device type's command schema must be before the hub stores it (docs/device-types.md, "Limits").

A schema is written by an admin but evaluated against every client's params on the hot path, so it is checked
once, at declaration time, for everything that could make evaluation slow, unbounded or dependent on the outside
world:

- size: at most MAX_SCHEMA_BYTES of compact JSON, nesting at most MAX_SCHEMA_DEPTH schema levels, and at most
  MAX_EXPANDED_NODES subschemas once every `$ref` is followed (so `$defs` that reference each other twice per
  level cannot expand to 2^n work);
- a valid Draft 2020-12 schema (its meta-schema, with `pattern` checked as a regular expression), whose root is
  `{"type": "object", ...}`;
- references stay in the document: `$ref` is `#` or a JSON Pointer fragment `#/...` that resolves, and is not
  recursive; `$id`, `$anchor`, `$dynamicRef` and `$dynamicAnchor` (which would re-base or re-route references)
  are refused;
- every `pattern` and `patternProperties` key compiles with RE2 (linear-time matching: no lookaround, no
  backreferences), and each `patternProperties` object's keys compile together into one RE2 Set;
- `unevaluatedItems` / `unevaluatedProperties` collect annotations by walking the in-place applicators of their
  schema object (`$ref`, `allOf`/`anyOf`/`oneOf`, `if`/`then`/`else`, `dependentSchemas`) and re-checking the
  instance against each conditional branch: that walk may visit at most MAX_ANNOTATION_SCOPE subschemas (an
  `allOf` of 700 `$ref`s next to `unevaluatedItems` would re-check every item 700 times per request).

Each refusal is a `SchemaProblem` naming where in the schema (a JSON Pointer) and what is wrong.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from app.schemas.meta import DRAFT_2020_12, meta_problem
from app.schemas.validation import (
    SCHEMA_KEYWORDS,
    SCHEMA_LIST_KEYWORDS,
    SCHEMA_MAP_KEYWORDS,
    PatternError,
    compile_pattern,
    escape_token,
    pattern_set,
)

MAX_SCHEMA_BYTES = 16_384
MAX_SCHEMA_DEPTH = 16
MAX_EXPANDED_NODES = 2_000
MAX_ANNOTATION_SCOPE = 64
UNEVALUATED_KEYWORDS = ("unevaluatedItems", "unevaluatedProperties")
IN_PLACE_KEYWORDS = ("allOf", "anyOf", "oneOf", "if", "then", "else", "dependentSchemas")

FORBIDDEN_KEYWORDS = ("$id", "$anchor", "$dynamicRef", "$dynamicAnchor")
DEFINITION_KEYWORDS = ("$defs", "definitions")  # evaluated only through a $ref
_BASE = "urn:uaip:schema"



class SchemaProblem(ValueError):
    """Why a schema is refused: `problem` (a sentence) at `at` (a JSON Pointer into the schema, "" = root)."""

    def __init__(self, problem: str, at: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.at = at


def _location(path) -> str:
    return "".join("/" + escape_token(token) for token in path)


def _ref_path(ref: str) -> tuple[str, ...]:
    """The path a local `$ref` fragment names (percent-decoded, RFC 6901 tokens unescaped)."""
    if ref == "#":
        return ()
    return tuple(unquote(token).replace("~1", "/").replace("~0", "~") for token in ref[2:].split("/"))


def _json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: a hostile document cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _subschemas(schema: dict, *, definitions: bool) -> list[tuple[tuple, Any]]:
    """(path, subschema) for each subschema keyword of `schema` (2020-12 applicators), with or without $defs."""
    found = []
    for keyword, value in schema.items():
        if keyword in DEFINITION_KEYWORDS and not definitions:
            continue
        if keyword in SCHEMA_MAP_KEYWORDS:
            if isinstance(value, dict):
                found.extend(((keyword, name), child) for name, child in value.items())
        elif keyword in SCHEMA_LIST_KEYWORDS:
            if isinstance(value, list):
                found.extend(((keyword, index), child) for index, child in enumerate(value))
        elif keyword in SCHEMA_KEYWORDS:
            found.append(((keyword,), value))
    return found


def local_resolver(schema: dict):
    """`resolve(ref)` → the subschema a local `$ref` of `schema` names (referencing's JSON Pointer rules)."""
    resolver = Registry().with_resource(_BASE, DRAFT202012.create_resource(schema)).resolver(_BASE)
    return lambda ref: resolver.lookup(ref).contents


class _Walker:
    """One pass over a schema: keyword rules on every subschema (including $defs), and the size and depth of
    the schema as evaluated, following each $ref (memoised per subschema, so the pass itself stays linear)."""

    def __init__(self, schema: dict, meta_checked: set[int]) -> None:
        self.lookup = local_resolver(schema)
        self.expanded: dict[int, tuple[int, int]] = {}  # id(subschema) → (nodes, depth) when evaluated
        self.visiting: set[int] = set()
        self.checked: set[int] = set()
        self.meta_checked = meta_checked  # ids of subschemas the meta-schema check has seen

    def check_keywords(self, schema: Any, path: tuple) -> None:
        """Keyword rules on `schema` and everything below it (iterative)."""
        stack = [(schema, path)]
        while stack:
            node, where = stack.pop()
            if not isinstance(node, dict) or id(node) in self.checked:
                continue
            self.checked.add(id(node))
            at = _location(where)
            for keyword in FORBIDDEN_KEYWORDS:
                if keyword in node:
                    raise SchemaProblem(f"'{keyword}' is not supported; keep the schema self-contained (local "
                                        "'$ref': '#/...' only).", at)
            if "$schema" in node and (where or node["$schema"].rstrip("#") != DRAFT_2020_12):
                raise SchemaProblem(f"'$schema' may only name {DRAFT_2020_12}, at the root.", at)
            if "$ref" in node:
                stack.append((self._check_ref(node["$ref"], at), _ref_path(node["$ref"])))
            if "pattern" in node:
                self._check_pattern(node["pattern"], at + "/pattern")
            if "patternProperties" in node:
                for pattern in node["patternProperties"]:
                    self._check_pattern(pattern, at + "/patternProperties/" + escape_token(pattern))
                try:
                    pattern_set(node["patternProperties"])
                except PatternError as exc:
                    raise SchemaProblem(f"the 'patternProperties' patterns cannot be matched together: {exc}",
                                        at + "/patternProperties") from None
            for keyword in UNEVALUATED_KEYWORDS:
                if keyword in node:
                    self._check_annotation_scope(node, keyword, at)
            stack.extend((child, where + sub) for sub, child in _subschemas(node, definitions=True))

    def _check_ref(self, ref: str, at: str) -> Any:
        """The schema a local `$ref` points to (its keywords are checked next, like any subschema's)."""
        if not (ref == "#" or ref.startswith("#/")):
            raise SchemaProblem(f"'$ref' {ref!r} leaves the document; only local references ('#' or '#/...') are "
                                "allowed.", at + "/$ref")
        try:
            target = self.lookup(ref)
        except Unresolvable:
            raise SchemaProblem(f"'$ref' {ref!r} does not resolve to anything in this schema.", at + "/$ref") from None
        if not isinstance(target, (dict, bool)):
            raise SchemaProblem(f"'$ref' {ref!r} points to something that is not a schema.", at + "/$ref")
        # The root's meta-schema check covered every subschema at a schema location (`$defs/x`, `properties/y`,
        # ...); a target elsewhere (`#/x-shared/...`) is checked here, once however many $refs name it.
        _check_meta(target, self.meta_checked, _location(_ref_path(ref)))
        return target

    def _check_annotation_scope(self, node: dict, keyword: str, at: str) -> None:
        """Refuse an unevaluated* keyword whose annotation walk (the in-place applicators of its schema object,
        $refs followed, as app/schemas/keywords.py walks them) visits more than MAX_ANNOTATION_SCOPE subschemas."""
        visited, stack = 0, [node]
        while stack:
            current = stack.pop()
            if not isinstance(current, dict):
                continue
            visited += 1
            if visited > MAX_ANNOTATION_SCOPE:
                raise SchemaProblem(
                    f"'{keyword}' here would re-check the value against more than {MAX_ANNOTATION_SCOPE} subschemas "
                    "(its '$ref', 'allOf', 'anyOf', 'oneOf', 'if'/'then'/'else' and 'dependentSchemas', followed "
                    "through references) on every request; use 'items' / 'additionalProperties' or fewer branches.",
                    at + "/" + keyword)
            if isinstance(current.get("$ref"), str):
                try:
                    stack.append(self.lookup(current["$ref"]))
                except Unresolvable:
                    pass  # reported as its own problem
            for in_place in IN_PLACE_KEYWORDS:
                value = current.get(in_place)
                if isinstance(value, list):
                    stack.extend(value)
                elif isinstance(value, dict):
                    stack.extend(value.values() if in_place == "dependentSchemas" else [value])

    @staticmethod
    def _check_pattern(pattern: str, at: str) -> None:
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            raise SchemaProblem(f"pattern {pattern!r} is not supported by the hub's linear-time regular "
                                f"expression engine (RE2: no lookaround or backreferences): {exc}", at) from None

    def expand(self, schema: Any, at: str, level: int = 1) -> tuple[int, int]:
        """(subschemas, depth) of `schema` as evaluated: $refs followed, $defs counted only where referenced.
        `level` is how deep `schema` sits, so a long chain of references fails early instead of recursing."""
        if level > MAX_SCHEMA_DEPTH:
            raise SchemaProblem(
                f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels (counting through '$ref').", at)
        if not isinstance(schema, dict):
            return 1, 1
        key = id(schema)
        if key in self.expanded:
            nodes, depth = self.expanded[key]
            if level + depth - 1 > MAX_SCHEMA_DEPTH:
                raise SchemaProblem(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels (counting through "
                                    "'$ref').", at)
            return nodes, depth
        if key in self.visiting:
            raise SchemaProblem("recursive '$ref' is not supported (a reference leads back to itself).", at)
        self.visiting.add(key)
        nodes, depth = 1, 1
        children = [(child, at + _location(sub)) for sub, child in _subschemas(schema, definitions=False)]
        if "$ref" in schema:
            children.append((self.lookup(schema["$ref"]), at + "/$ref"))
        for child, where in children:
            child_nodes, child_depth = self.expand(child, where, level + 1)
            nodes += child_nodes
            depth = max(depth, child_depth + 1)
            if nodes > MAX_EXPANDED_NODES:
                raise SchemaProblem(f"the schema has more than {MAX_EXPANDED_NODES} subschemas once its '$ref's are "
                                    "followed.", at)
        self.visiting.discard(key)
        self.expanded[key] = (nodes, depth)
        return nodes, depth


def _check_meta(schema: Any, checked: set[int], at: str = "") -> None:
    found = meta_problem(schema, checked)
    if found is not None:
        problem, where = found
        raise SchemaProblem(problem, at + where)


def check_schema(schema: Any, *, object_root: bool = True) -> None:
    """Raise SchemaProblem unless `schema` is acceptable as a command's params or result schema, or (with
    `object_root=False`) as a state property's value schema, whose root may be of any type."""
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaProblem(f"the schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed.")
    if _json_depth(schema) > 2 * MAX_SCHEMA_DEPTH + 1:
        raise SchemaProblem(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels.")
    meta_checked: set[int] = set()
    _check_meta(schema, meta_checked)
    if object_root and (not isinstance(schema, dict) or schema.get("type") != "object"):
        raise SchemaProblem('the root of the schema must be {"type": "object", ...}.')
    if not isinstance(schema, dict):
        return  # `true` or `false`
    walker = _Walker(schema, meta_checked)
    walker.check_keywords(schema, ())
    walker.expand(schema, "")
