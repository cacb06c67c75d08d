"""HTML form fields built from JSON Schemas (a command's params, a writable property's value), and the submitted
strings turned back into JSON values. Pure functions: no Flask, so they are tested on their own.

A schema the form cannot express field by field (nested objects, arrays, `oneOf`, ...) becomes one JSON text
field, so every command can still be sent from the console; the hub validates the result as it validates any
request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

COMBINATORS = {"oneOf", "anyOf", "allOf", "not", "if", "then", "else", "dependentSchemas", "dependentRequired",
               "patternProperties", "$ref"}


class FormValueError(ValueError):
    """A submitted field that is not a value of its kind; the message names the field."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # number, integer, boolean, enum, text, json
    required: bool = False
    description: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    default: str = ""
    unit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema and all(isinstance(value, str) for value in schema["enum"]):
        return "enum"
    kind = schema.get("type")
    if kind in ("number", "integer", "boolean"):
        return kind
    if kind == "string":
        return "text"
    return "json"


def field_for(name: str, schema: Any, required: bool = False, unit: str = "") -> Field:
    schema = schema if isinstance(schema, dict) else {}
    kind = _kind(schema)
    default = schema.get("default")
    return Field(
        name=name, kind=kind, required=required, description=str(schema.get("description", "")),
        choices=tuple(schema.get("enum", ())) if kind == "enum" else (),
        minimum=schema.get("minimum"), maximum=schema.get("maximum"),
        default="" if default is None else (json.dumps(default) if kind == "json" else str(default)),
        unit=unit,
    )


def fields_for_object(schema: Any) -> list[Field] | None:
    """One field per property of an object schema, or None when the schema is not a plain object of properties
    (the form then takes the params as one JSON text)."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or set(schema) & COMBINATORS:
        return None
    properties = schema.get("properties") or {}
    if not isinstance(properties, dict) or not properties and schema.get("additionalProperties") is not False:
        return None
    required = set(schema.get("required") or ())
    return [field_for(name, sub, name in required) for name, sub in properties.items()]


def parse_value(item: Field, raw: str | None) -> tuple[bool, Any]:
    """(present, value) of one submitted field; an empty optional field is absent."""
    if item.kind == "boolean":
        return True, raw in ("on", "true", "1")
    if raw is None or raw.strip() == "":
        return False, None
    text = raw.strip()
    try:
        if item.kind == "integer":
            return True, int(text)
        if item.kind == "number":
            number = float(text)
            return True, int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
        if item.kind == "json":
            return True, json.loads(text)
    except ValueError:
        raise FormValueError(f"{item.name}: not a valid {item.kind} value") from None
    return True, text


def parse_fields(fields: list[Field], form: dict[str, str], prefix: str = "") -> dict[str, Any]:
    values = {}
    for item in fields:
        present, value = parse_value(item, form.get(prefix + item.name))
        if present:
            values[item.name] = value
    return values


def parse_json_object(raw: str | None, name: str) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise FormValueError(f"{name}: not valid JSON") from None
    if not isinstance(value, dict):
        raise FormValueError(f"{name}: must be a JSON object")
    return value
