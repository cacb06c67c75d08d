"""Validating command params against a declared JSON Schema (2020-12), safely and with useful pointers.

`jsonschema`'s Draft 2020-12 validator walks the schema; the keywords whose cost or messages it does not bound
are the hub's own (app/schemas/keywords.py: RE2 for `pattern` and one RE2 Set per `patternProperties`, linear
`uniqueItems`, set-based `unevaluatedItems` / `unevaluatedProperties`, messages that quote at most 80 characters
of a value, `anyOf`/`oneOf`/`not` branches that stop at their first error, one error per missing or unexpected
member located at the member itself). A `false` subschema in `properties` (and the other lists and maps of
subschemas) is compiled as a schema that refuses everything with an error at its own place: jsonschema would
report it at the parent's location.

Every keyword evaluation, every subschema entered and the work inside a keyword count against a budget of
MAX_STEPS per command, with a CPU-time backstop (app/schemas/budget.py), so no combination of schema and params
keeps a worker busy for long. Params that exceed it are refused (422) with one error at their root, keyword
`maxSteps` (or `maxTime`).

`format` is an annotation only (no format checker), and the registry is empty, so no `$ref` can leave the
document (declared schemas only hold local `#/...` references, checked at declaration time).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry

from app.schemas import keywords
from app.schemas.budget import (
    ERROR_STEPS,
    MAX_CPU_SECONDS,
    MAX_STEPS,
    STEPS_KEYWORD,
    SUBSCHEMA_STEPS,
    TooCostly,
    metered,
    spend,
)
from app.schemas.keywords import canonical, short
from app.schemas.patterns import PatternError, compile_pattern, pattern_set

__all__ = [
    "MAX_COLLECTED_ERRORS", "MAX_CPU_SECONDS", "MAX_REPORTED_ERRORS", "MAX_STEPS", "PatternError", "canonical",
    "compile_pattern", "compile_schema", "escape_token", "params_errors", "pattern_set", "pointer", "shorten",
]

MAX_REPORTED_ERRORS = 50
MAX_COLLECTED_ERRORS = 1_000  # found before sorting: bounds the work a hostile instance can cause
MAX_MESSAGE_CHARS = 300

FALSE_SCHEMA = "uaip:false"  # the keyword a compiled `false` subschema carries
STEP = "uaip:step"  # the keyword every compiled subschema carries: entering it costs one step of the budget

# Where 2020-12 keywords hold subschemas: one schema, a list of schemas, or a map of names to schemas.
SCHEMA_KEYWORDS = ("additionalProperties", "contains", "contentSchema", "else", "if", "items", "not", "propertyNames",
                   "then", "unevaluatedItems", "unevaluatedProperties")
SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")


def _refuse_everything(validator, _value, instance, schema):
    yield ValidationError(f"No value is allowed here; got {short(instance)}.")


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


# --- the validator: every keyword charged to the budget --------------------------------------------------


def _budgeted(keyword, steps: int = 1):
    """`keyword` counting against the budget: `steps` per evaluation, ERROR_STEPS per error it yields."""

    def evaluate(validator, value, instance, schema):
        spend(steps)
        for error in keyword(validator, value, instance, schema) or ():
            spend(ERROR_STEPS)
            yield error

    return evaluate


REPLACED_KEYWORDS = {
    "additionalProperties": keywords.additional_properties,
    "anyOf": keywords.any_of,
    "const": keywords.const,
    "contains": keywords.contains,
    "dependentRequired": keywords.dependent_required,
    "dependentSchemas": keywords.dependent_schemas,
    "enum": keywords.enum,
    "items": keywords.items,
    "maxItems": keywords.max_items,
    "maxLength": keywords.max_length,
    "maxProperties": keywords.max_properties,
    "minItems": keywords.min_items,
    "minLength": keywords.min_length,
    "minProperties": keywords.min_properties,
    "multipleOf": keywords.multiple_of,
    "not": keywords.not_,
    "oneOf": keywords.one_of,
    "pattern": keywords.pattern,
    "patternProperties": keywords.pattern_properties,
    "properties": keywords.properties,
    "required": keywords.required,
    "type": keywords.type_,
    "unevaluatedItems": keywords.unevaluated_items,
    "unevaluatedProperties": keywords.unevaluated_properties,
    "uniqueItems": keywords.unique_items,
    FALSE_SCHEMA: _refuse_everything,
    STEP: _step,
}

ParamsValidator = validators.extend(
    Draft202012Validator,
    {
        keyword: _budgeted(function, SUBSCHEMA_STEPS if keyword == STEP else 1)
        for keyword, function in {**Draft202012Validator.VALIDATORS, **REPLACED_KEYWORDS}.items()
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


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Messages quote the offending value; a 60 KB value must not make a 60 KB error."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TOO_COSTLY = {
    "maxSteps": f"Checking these params against the command's schema needs more than {MAX_STEPS} steps; send fewer "
                "or smaller values.",
    "maxTime": f"Checking these params against the command's schema needs more than {int(MAX_CPU_SECONDS * 1000)} "
               "ms of CPU time; send fewer or smaller values.",
}


def params_errors(validator, params: Any, prefix: str) -> tuple[list[dict[str, str]], int]:
    """Why `params` do not validate: ([{pointer, message, keyword}] sorted by pointer, at most
    MAX_REPORTED_ERRORS), and how many errors were found (at most MAX_COLLECTED_ERRORS). ([], 0) when valid.
    Params whose check would take more than the budget are refused with one error at their root."""
    try:
        with metered():
            found = list(itertools.islice(validator.iter_errors(params), MAX_COLLECTED_ERRORS))
    except TooCostly as exc:
        return [{"pointer": prefix, "message": _TOO_COSTLY[exc.keyword], "keyword": exc.keyword}], 1
    except RecursionError:  # nesting is bounded at declaration and by the JSON decoder; be safe anyway
        return [{"pointer": prefix, "message": _TOO_COSTLY[STEPS_KEYWORD], "keyword": STEPS_KEYWORD}], 1
    if not found:
        return [], 0
    errors = [
        {"pointer": pointer(prefix, error.absolute_path), "message": shorten(error.message),
         "keyword": "false" if error.validator in (None, FALSE_SCHEMA) else error.validator}
        for error in found
    ]
    errors.sort(key=lambda e: (e["pointer"], e["keyword"], e["message"]))
    return errors[:MAX_REPORTED_ERRORS], len(found)
