"""The 2020-12 keywords the hub evaluates itself instead of jsonschema, each charging its work to the budget
(app/schemas/budget.py). Why each one is replaced:

- cost: jsonschema's `unevaluatedItems` / `unevaluatedProperties` collect annotations in lists and test
  membership per item (quadratic: 30,000 numbers took 11 s), and re-collect them through every `$ref` and
  `allOf` branch; here annotations are sets, collected once per keyword, every subschema and item charged.
  `patternProperties` and `additionalProperties` match all patterns at once with an RE2 Set, `pattern` with RE2;
  `uniqueItems` compares canonical forms in a set (jsonschema's fallback is pairwise); `properties`, `required`,
  `enum` and the `dependent*` keywords are charged for the members they look at.
- messages: jsonschema quotes the whole instance (`repr`) in most messages, and `anyOf` keeps every branch's
  errors: a 64 KB body under `anyOf` cost ~65 MB per request. Here a message quotes at most QUOTE_CHARS of a
  value (`short`), built without walking the rest of it, and `anyOf` / `oneOf` / `not` stop each branch at its
  first error.
- pointers: `required`, `dependentRequired`, `additionalProperties: false` and `unevaluatedProperties: false`
  report one error per member, located at the member itself (`/params/value`).
- `multipleOf` falls back to exact fractions when a huge integer overflows float division.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from jsonschema._utils import equal
from jsonschema.exceptions import ValidationError

from app.schemas.budget import SUBSCHEMA_STEPS, spend
from app.schemas.patterns import matches, pattern_set

QUOTE_CHARS = 80
MEMBERS_PER_STEP = 16  # dictionary look-ups per step
CHARS_PER_STEP = 256  # characters scanned by RE2 per step


# --- bounded quoting -------------------------------------------------------------------------------------


class _Full(Exception):
    pass


def short(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` for small values; for large ones its first `limit` characters and "...", built without
    visiting more of the value than it shows."""
    pieces: list[str] = []
    size = 0

    def put(text: str) -> None:
        nonlocal size
        pieces.append(text)
        size += len(text)
        if size > limit:
            raise _Full

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            put("{")
            for index, (key, member) in enumerate(item.items()):
                put(", " if index else "")
                walk(key)
                put(": ")
                walk(member)
            put("}")
        elif isinstance(item, list):
            put("[")
            for index, member in enumerate(item):
                put(", " if index else "")
                walk(member)
            put("]")
        elif isinstance(item, str):
            put(repr(item[: limit + 1]) if len(item) > limit else repr(item))
        else:
            put(repr(item))

    try:
        walk(value)
    except _Full:
        return "".join(pieces)[: limit - 3] + "..."
    return "".join(pieces)


def _count(members: int) -> None:
    spend(members // MEMBERS_PER_STEP)


def _scan(text: str) -> None:
    spend(1 + len(text) // CHARS_PER_STEP)


# --- patterns --------------------------------------------------------------------------------------------


def pattern(validator, regex, instance, schema):
    if validator.is_type(instance, "string"):
        _scan(instance)
        if not matches(regex, instance):
            yield ValidationError(f"{short(instance)} does not match {short(regex)}")


def pattern_properties(validator, patterns, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    matcher = pattern_set(patterns)
    for key, value in instance.items():
        _scan(key)
        for index in matcher.matching(key):
            name = matcher.patterns[index]
            yield from validator.descend(value, patterns[name], path=key, schema_path=name)


def _additional(instance: dict, schema: dict) -> list[str]:
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties")
    matcher = pattern_set(patterns) if patterns else None
    _count(len(instance))
    extras = []
    for key in instance:
        if key in properties:
            continue
        if matcher is not None:
            _scan(key)
            if matcher.any_match(key):
                continue
        extras.append(key)
    return extras


def additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False:
        for extra in extras:
            yield ValidationError(f"Additional property {short(extra)} is not allowed.", path=[extra])


# --- members ---------------------------------------------------------------------------------------------


def properties(validator, declared, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    if len(instance) < len(declared):
        _count(len(instance))
        for key, value in instance.items():
            if key in declared:
                yield from validator.descend(value, declared[key], path=key, schema_path=key)
    else:
        _count(len(declared))
        for key, subschema in declared.items():
            if key in instance:
                yield from validator.descend(instance[key], subschema, path=key, schema_path=key)


def required(validator, names, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    _count(len(names))
    for name in names:
        if name not in instance:
            yield ValidationError(f"{short(name)} is a required property.", path=[name])


def dependent_required(validator, dependent_required, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    _count(len(dependent_required))
    for trigger, names in dependent_required.items():
        if trigger in instance:
            _count(len(names))
            for name in names:
                if name not in instance:
                    yield ValidationError(f"{short(name)} is required when {short(trigger)} is present.", path=[name])


def dependent_schemas(validator, dependent_schemas, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    _count(len(dependent_schemas))
    for trigger, subschema in dependent_schemas.items():
        if trigger in instance:
            yield from validator.descend(instance, subschema, schema_path=trigger)


def min_properties(validator, least, instance, schema):
    if validator.is_type(instance, "object") and len(instance) < least:
        message = "should be non-empty" if least == 1 else "does not have enough properties"
        yield ValidationError(f"{short(instance)} {message}")


def max_properties(validator, most, instance, schema):
    if validator.is_type(instance, "object") and len(instance) > most:
        message = "is expected to be empty" if most == 0 else "has too many properties"
        yield ValidationError(f"{short(instance)} {message}")


# --- values ----------------------------------------------------------------------------------------------


def type_(validator, types, instance, schema):
    types = [types] if isinstance(types, str) else types
    if not any(validator.is_type(instance, name) for name in types):
        yield ValidationError(f"{short(instance)} is not of type {', '.join(repr(name) for name in types)}")


def enum(validator, values, instance, schema):
    spend(1 + len(values) // 4)
    if all(not equal(value, instance) for value in values):
        yield ValidationError(f"{short(instance)} is not one of {short(values)}")


def const(validator, value, instance, schema):
    if not equal(instance, value):
        yield ValidationError(f"{short(value)} was expected")


def min_length(validator, least, instance, schema):
    if validator.is_type(instance, "string") and len(instance) < least:
        message = "should be non-empty" if least == 1 else "is too short"
        yield ValidationError(f"{short(instance)} {message}")


def max_length(validator, most, instance, schema):
    if validator.is_type(instance, "string") and len(instance) > most:
        message = "is expected to be empty" if most == 0 else "is too long"
        yield ValidationError(f"{short(instance)} {message}")


def multiple_of(validator, divisor, instance, schema):
    if not validator.is_type(instance, "number"):
        return
    if isinstance(divisor, float) or isinstance(instance, float):
        try:
            quotient = instance / divisor
            failed = int(quotient) != quotient
        except OverflowError:
            failed = (Fraction(instance) / Fraction(divisor)).denominator != 1
    else:
        failed = instance % divisor
    if failed:
        yield ValidationError(f"{short(instance)} is not a multiple of {divisor}")


def canonical(value: Any) -> Any:
    """A hashable form under which two JSON values are equal exactly when JSON Schema calls them equal
    (1 == 1.0, but true != 1; object key order does not matter)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, canonical(item)) for key, item in value.items()))
    return (type(value).__name__, value)


def unique_items(validator, unique, instance, schema):
    if not unique or not validator.is_type(instance, "array"):
        return
    spend(len(instance))
    seen: set = set()
    for index, item in enumerate(instance):
        key = canonical(item)
        if key in seen:
            yield ValidationError(f"Item {index} repeats an earlier item; items must be unique.")
            return
        seen.add(key)


# --- arrays ----------------------------------------------------------------------------------------------


def items(validator, each, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    prefix = len(schema.get("prefixItems", []))
    if len(instance) <= prefix:
        return
    if each is False:
        extra = len(instance) - prefix
        yield ValidationError(f"Expected at most {prefix} item(s) but found {extra} extra.")
        return
    for index in range(prefix, len(instance)):
        yield from validator.descend(instance[index], each, path=index)


def min_items(validator, least, instance, schema):
    if validator.is_type(instance, "array") and len(instance) < least:
        message = "should be non-empty" if least == 1 else "is too short"
        yield ValidationError(f"{short(instance)} {message}")


def max_items(validator, most, instance, schema):
    if validator.is_type(instance, "array") and len(instance) > most:
        message = "is expected to be empty" if most == 0 else "is too long"
        yield ValidationError(f"{short(instance)} {message}")


def contains(validator, wanted, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    least = schema.get("minContains", 1)
    most = schema.get("maxContains", len(instance))
    check = validator.evolve(schema=wanted)
    found = 0
    for item in instance:
        if check.is_valid(item):
            found += 1
            if found > most:
                yield ValidationError(f"Too many items match the given schema (expected at most {most})",
                                      validator="maxContains", validator_value=most)
                return
    if found < least:
        if not found:
            yield ValidationError(f"{short(instance)} does not contain items matching the given schema")
        else:
            yield ValidationError(f"Too few items match the given schema (expected at least {least} but only "
                                  f"{found} matched)", validator="minContains", validator_value=least)


# --- combinators: each branch stops at its first error ---------------------------------------------------


def _passes(validator, instance, subschema, schema_path) -> bool:
    return next(validator.descend(instance, subschema, schema_path=schema_path), None) is None


def any_of(validator, branches, instance, schema):
    for index, subschema in enumerate(branches):
        if _passes(validator, instance, subschema, index):
            return
    yield ValidationError(f"{short(instance)} is not valid under any of the given schemas")


def one_of(validator, branches, instance, schema):
    first = None
    for index, subschema in enumerate(branches):
        if _passes(validator, instance, subschema, index):
            if first is not None:
                yield ValidationError(f"{short(instance)} is valid under more than one of the given schemas "
                                      f"(branches {first} and {index})")
                return
            first = index
    if first is None:
        yield ValidationError(f"{short(instance)} is not valid under any of the given schemas")


def not_(validator, forbidden, instance, schema):
    if validator.evolve(schema=forbidden).is_valid(instance):
        yield ValidationError(f"{short(instance)} should not be valid under the 'not' schema")


# --- unevaluatedItems / unevaluatedProperties ------------------------------------------------------------
#
# Annotations are collected through the in-place applicators of the schema object holding the keyword: `$ref`,
# `allOf` / `anyOf` / `oneOf` (branches the instance passes), `if` / `then` / `else`, `dependentSchemas`. The
# declaration rules (app/schemas/rules.py) bound how many subschemas one such walk may visit.


class _Items:
    __slots__ = ("all", "prefix", "indexes")

    def __init__(self) -> None:
        self.all = False
        self.prefix = 0
        self.indexes: set[int] = set()


def _resolved(validator, ref: str):
    found = validator._resolver.lookup(ref)
    return validator.evolve(schema=found.contents, _resolver=found.resolver), found.contents


def _in_place(validator, instance, schema, collect, seen) -> None:
    """Follow the in-place applicators of `schema` (shared by both annotation walks)."""
    if "$ref" in schema:
        target_validator, target = _resolved(validator, schema["$ref"])
        collect(target_validator, instance, target, seen, False)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            collect(validator, instance, schema["if"], seen, False)
            if "then" in schema:
                collect(validator, instance, schema["then"], seen, False)
        elif "else" in schema:
            collect(validator, instance, schema["else"], seen, False)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for subschema in schema.get(keyword, ()):
            if validator.evolve(schema=subschema).is_valid(instance):
                collect(validator, instance, subschema, seen, False)


def _collect_items(validator, instance: list, schema: Any, seen: _Items, own: bool) -> None:
    if seen.all or not isinstance(schema, dict):
        return
    spend(SUBSCHEMA_STEPS)
    # `items` evaluates every item after the prefix; a nested `unevaluatedItems` every item left over.
    if "items" in schema or (not own and "unevaluatedItems" in schema):
        seen.all = True
        return
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        seen.prefix = max(seen.prefix, len(prefix))
    if "contains" in schema:
        check = validator.evolve(schema=schema["contains"])
        spend(len(instance) // MEMBERS_PER_STEP)
        for index, item in enumerate(instance):
            if index >= seen.prefix and index not in seen.indexes and check.is_valid(item):
                seen.indexes.add(index)
    _in_place(validator, instance, schema, _collect_items, seen)


def unevaluated_items(validator, unevaluated, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    seen = _Items()
    _collect_items(validator, instance, schema, seen, True)
    if seen.all:
        return
    _count(len(instance))
    for index in range(seen.prefix, len(instance)):
        if index in seen.indexes:
            continue
        if unevaluated is False:
            yield ValidationError(f"Item {index} is not evaluated by any keyword; unevaluated items are not allowed.",
                                  path=[index])
        else:
            yield from validator.descend(instance[index], unevaluated, path=index)


class _Keys:
    __slots__ = ("all", "keys")

    def __init__(self) -> None:
        self.all = False
        self.keys: set[str] = set()


def _collect_keys(validator, instance: dict, schema: Any, seen: _Keys, own: bool) -> None:
    if seen.all or not isinstance(schema, dict):
        return
    spend(SUBSCHEMA_STEPS)
    # `additionalProperties` evaluates every member the other two leave; a nested `unevaluatedProperties` too.
    if "additionalProperties" in schema or (not own and "unevaluatedProperties" in schema):
        seen.all = True
        return
    declared = schema.get("properties")
    if isinstance(declared, dict):
        smaller, larger = (instance, declared) if len(instance) < len(declared) else (declared, instance)
        _count(len(smaller))
        seen.keys.update(key for key in smaller if key in larger)
    patterns = schema.get("patternProperties")
    if isinstance(patterns, dict) and patterns:
        matcher = pattern_set(patterns)
        for key in instance:
            if key not in seen.keys:
                _scan(key)
                if matcher.any_match(key):
                    seen.keys.add(key)
    dependent = schema.get("dependentSchemas")
    if isinstance(dependent, dict):
        _count(len(dependent))
        for trigger, subschema in dependent.items():
            if trigger in instance:
                _collect_keys(validator, instance, subschema, seen, False)
    _in_place(validator, instance, schema, _collect_keys, seen)


def unevaluated_properties(validator, unevaluated, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    seen = _Keys()
    _collect_keys(validator, instance, schema, seen, True)
    if seen.all:
        return
    _count(len(instance))
    for key, value in instance.items():
        if key in seen.keys:
            continue
        if unevaluated is False:
            yield ValidationError(f"Unevaluated property {short(key)} is not allowed.", path=[key])
        else:
            yield from validator.descend(value, unevaluated, path=key, schema_path=key)
