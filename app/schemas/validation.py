"""Validating command params against a declared JSON Schema (2020-12), safely and with useful pointers.

`jsonschema`'s Draft 2020-12 validator does the work, with a few keywords replaced:

- `pattern`, `patternProperties` and `additionalProperties` match with RE2 (google-re2), whose matching time is
  linear in the input, instead of Python's backtracking `re`: a schema's `^(a+)+$` cannot stall a worker on a
  client's `"aaaa…!"`. Every pattern was compiled with RE2 when the type was declared (app/schemas/rules.py).
- `uniqueItems` compares canonical forms in a set (linear) instead of jsonschema's pairwise fallback, which is
  quadratic for arrays of objects: 8,000 small distinct objects would take seconds.
- `multipleOf` falls back to exact fractions when a huge integer overflows float division (jsonschema raises
  OverflowError there).
- `required`, `dependentRequired` and `additionalProperties: false` report one error per member, located at the
  member itself (`/params/value`), so a client sees exactly which member is missing or unexpected.
- a `false` subschema in `properties` (and the other lists and maps of subschemas) is compiled as a schema that
  refuses everything with an error at its own place: jsonschema would report it at the parent's location.

Every keyword evaluation and every subschema entered counts against a budget of MAX_STEPS per command (an error
costs more: building errors is the expensive part, also the ones `anyOf`/`oneOf` collect and discard), so no
combination of schema and params
keeps a worker busy for long: `items: {"anyOf": [700 branches]}` against 30,000 array items would otherwise take
about 20 minutes. Params that exceed it are refused (422) with one error at their root, keyword `maxSteps`.

`format` is an annotation only (no format checker), and the registry is empty, so no `$ref` can leave the
document (declared schemas only hold local `#/...` references, checked at declaration time).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry

MAX_REPORTED_ERRORS = 50
MAX_COLLECTED_ERRORS = 1_000  # found before sorting: bounds the work a hostile instance can cause
MAX_MESSAGE_CHARS = 300

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a pattern RE2 refuses is reported to the caller, not printed on stderr
_RE2_OPTIONS.never_capture = True  # only "does it match" is ever asked


class PatternError(ValueError):
    """A regular expression RE2 cannot compile (lookaround, backreferences, too large, bad syntax)."""


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str):
    """The RE2 program for a schema pattern (cached per process); PatternError when RE2 refuses it."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(str(reason)) from None


def _matches(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


# --- replaced keywords -----------------------------------------------------------------------------------


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict, schema: dict) -> list[str]:
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    return [key for key in instance if key not in properties and not any(_matches(p, key) for p in patterns)]


def _additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False:
        for extra in extras:
            yield ValidationError(f"Additional property {extra!r} is not allowed.", path=[extra])


def _required(validator, required, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for name in required:
        if name not in instance:
            yield ValidationError(f"{name!r} is a required property.", path=[name])


def _dependent_required(validator, dependent_required, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for trigger, names in dependent_required.items():
        if trigger in instance:
            for name in names:
                if name not in instance:
                    yield ValidationError(f"{name!r} is required when {trigger!r} is present.", path=[name])


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


def _unique_items(validator, unique, instance, schema):
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set = set()
    for index, item in enumerate(instance):
        key = canonical(item)
        if key in seen:
            yield ValidationError(f"Item {index} repeats an earlier item; items must be unique.")
            return
        seen.add(key)


def _multiple_of(validator, divisor, instance, schema):
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
        yield ValidationError(f"{_short(instance)} is not a multiple of {divisor}")


FALSE_SCHEMA = "uaip:false"  # the keyword a compiled `false` subschema carries
STEP = "uaip:step"  # the keyword every compiled subschema carries: entering it costs one step of the budget

# Where 2020-12 keywords hold subschemas: one schema, a list of schemas, or a map of names to schemas.
SCHEMA_KEYWORDS = ("additionalProperties", "contains", "contentSchema", "else", "if", "items", "not", "propertyNames",
                   "then", "unevaluatedItems", "unevaluatedProperties")
SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")


def _refuse_everything(validator, _value, instance, schema):
    yield ValidationError(f"No value is allowed here; got {_short(instance)}.")


def _step(validator, _value, instance, schema):
    return ()


def _prepared(schema: Any) -> Any:
    """The schema as compiled: a copy in which every subschema carries STEP (so descending into it costs a step
    of the budget, even when it has no keyword to evaluate, like `{}`), and each `false` member of a list or map of
    subschemas (`properties`, `prefixItems`, `$defs`, ...) is `{FALSE_SCHEMA: true}`. Subschemas keep their places,
    so every local `$ref` still points where it did. A keyword whose own value is `false` (`additionalProperties`,
    `items`, ...) is reported by that keyword."""
    if schema is False:
        return {FALSE_SCHEMA: True, STEP: True}
    if not isinstance(schema, dict):
        return schema
    copy = {**schema, STEP: True}
    for keyword, value in schema.items():
        if keyword in SCHEMA_KEYWORDS and isinstance(value, dict):
            copy[keyword] = _prepared(value)
        elif keyword in SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            copy[keyword] = [_prepared(item) for item in value]
        elif keyword in SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            copy[keyword] = {name: _prepared(item) for name, item in value.items()}
    return copy


# --- a work budget per validation ------------------------------------------------------------------------

# A keyword evaluation costs 1 step, entering a subschema SUBSCHEMA_STEPS (jsonschema builds a resolver and a
# validator for it), an error ERROR_STEPS (found, or built and discarded inside anyOf/oneOf). Measured on the
# reference machine under load: ~2 µs, ~10 µs and ~30 µs, so the budget is a few hundred milliseconds at most.
MAX_STEPS = 200_000
SUBSCHEMA_STEPS = 5
ERROR_STEPS = 25
BUDGET_KEYWORD = "maxSteps"


class TooCostly(Exception):
    """Validating one set of params used up MAX_STEPS."""


_budget = threading.local()


def _spend(steps: int) -> None:
    remaining = getattr(_budget, "remaining", None)
    if remaining is None:  # outside params_errors: unbounded
        return
    remaining -= steps
    _budget.remaining = remaining
    if remaining < 0:
        raise TooCostly


def _budgeted(keyword, steps: int = 1):
    """`keyword` counting against the budget: `steps` per evaluation, ERROR_STEPS per error it yields."""

    def evaluate(validator, value, instance, schema):
        _spend(steps)
        for error in keyword(validator, value, instance, schema) or ():
            _spend(ERROR_STEPS)
            yield error

    return evaluate


ParamsValidator = validators.extend(
    Draft202012Validator,
    {
        keyword: _budgeted(function, SUBSCHEMA_STEPS if keyword == STEP else 1)
        for keyword, function in {
            **Draft202012Validator.VALIDATORS,
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
            "required": _required,
            "dependentRequired": _dependent_required,
            "uniqueItems": _unique_items,
            "multipleOf": _multiple_of,
            FALSE_SCHEMA: _refuse_everything,
            STEP: _step,
        }.items()
    },
)

EMPTY_REGISTRY = Registry()


def compile_schema(schema: Any):
    """A validator for a schema already accepted by app/schemas/rules.py (no format checks, no remote refs)."""
    return ParamsValidator(_prepared(schema), registry=EMPTY_REGISTRY)


# --- errors as the API reports them ----------------------------------------------------------------------


def escape_token(token: Any) -> str:
    """One RFC 6901 reference token: `~` → `~0`, `/` → `~1` (in that order); array indexes as decimals."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(prefix: str, path: Iterable[Any]) -> str:
    """An RFC 6901 JSON Pointer into the request body: `prefix` locates the params there (`/params`,
    `/payload/params`, or `""` when the body is the params)."""
    return prefix + "".join("/" + escape_token(token) for token in path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Messages quote the offending value; a 60 KB value must not make a 60 KB error."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def params_errors(validator, params: Any, prefix: str) -> tuple[list[dict[str, str]], int]:
    """Why `params` do not validate: ([{pointer, message, keyword}] sorted by pointer, at most
    MAX_REPORTED_ERRORS), and how many errors were found (at most MAX_COLLECTED_ERRORS). ([], 0) when valid.
    Params whose check would take more than MAX_STEPS are refused with one error at their root."""
    _budget.remaining = MAX_STEPS
    try:
        found = list(itertools.islice(validator.iter_errors(params), MAX_COLLECTED_ERRORS))
    except TooCostly:
        message = (f"Checking these params against the command's schema needs more than {MAX_STEPS} steps; "
                   "send fewer or smaller values.")
        return [{"pointer": prefix, "message": message, "keyword": BUDGET_KEYWORD}], 1
    finally:
        _budget.remaining = None
    if not found:
        return [], 0
    errors = [
        {"pointer": pointer(prefix, error.absolute_path), "message": shorten(error.message),
         "keyword": "false" if error.validator in (None, FALSE_SCHEMA) else error.validator}
        for error in found
    ]
    errors.sort(key=lambda e: (e["pointer"], e["keyword"], e["message"]))
    return errors[:MAX_REPORTED_ERRORS], len(found)
