"""Request input: JSON bodies parsed and validated by pydantic models, query parameters by small typed helpers.

Pydantic in strict mode with `extra="forbid"` gives what the contract asks of bad input: wrong types and unknown
fields are rejected, and every bad field is listed in `details`. The same models feed the OpenAPI document.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import pydantic
from flask import request

from app.errors import APIError

M = TypeVar("M", bound=pydantic.BaseModel)

IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
MAX_JSON_DEPTH = 32


class StrictModel(pydantic.BaseModel):
    """Base for request bodies: no coercion ("5" is not an int), no unknown fields."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of decoded JSON, stopping as soon as it passes `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _storable(value: Any) -> bool:
    """False if any key or string holds NUL or a lone surrogate: PostgreSQL text/jsonb cannot store them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def json_body(optional: bool = False) -> Any:
    """The decoded JSON body; 415 if it is not declared JSON, 400 if it does not parse."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return None
        raise APIError(400, "INVALID_JSON", "The request body must be a JSON object.")
    if not request.is_json:
        raise APIError(415, "UNSUPPORTED_MEDIA_TYPE", "The request body must be JSON (Content-Type: application/json).")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        message = "The request body is not valid JSON."
        details = {"position": exc.pos} if isinstance(exc, json.JSONDecodeError) else {}
        raise APIError(400, "INVALID_JSON", message, details) from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise APIError(400, "INVALID_JSON", f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.")
    # Only escapes (\u...), raw NUL or surrogate-range bytes can produce unstorable text: skip the walk otherwise.
    if (b"\\u" in raw or b"\x00" in raw or b"\xed" in raw) and not _storable(value):
        raise APIError(400, "INVALID_JSON", "The JSON body contains NUL characters or unpaired surrogates.")
    return value


def validation_details(exc: pydantic.ValidationError) -> dict[str, str]:
    details: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        details.setdefault(field, error["msg"])
    return details


def parse_model(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise APIError(400, "VALIDATION_ERROR", "The request body must be a JSON object.", {"body": "must be an object"})
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise APIError(400, "VALIDATION_ERROR", "The request body is invalid.", validation_details(exc)) from None


def parse_body(model: type[M], optional: bool = False) -> M | None:
    data = json_body(optional=optional)
    if data is None:
        return None
    return parse_model(model, data)


def query_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:
        raise APIError(
            400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.",
            {name: f"must be an integer from {minimum} to {maximum}"},
        )
    return value


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.", {name: f"must be one of {', '.join(choices)}"})
    return raw


def query_text(name: str, max_length: int = 128) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length or "\x00" in raw:
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.", {name: f"must be at most {max_length} characters without NUL"})
    return raw


def is_identifier(value: str) -> bool:
    return bool(IDENTIFIER.match(value))
