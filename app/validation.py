"""Request input: JSON bodies parsed and validated by pydantic models, query parameters by small typed helpers.

Pydantic in strict mode with `extra="forbid"` gives what docs/api.md promises for bad input: wrong types and unknown
fields are rejected, and every bad field is listed in `details`. The same models feed the OpenAPI document.

`decode_json` is the one JSON parser for what clients and devices send (REST bodies, the token endpoint, acks on
NATS): it refuses what RFC 8259 does not allow or PostgreSQL cannot store — `NaN`, `Infinity`, numbers beyond a
double (`1e400`), NUL, unpaired surrogates, nesting deeper than MAX_JSON_DEPTH — so such input is a clear 400 (or
a dropped NATS message), never a database error.
"""

from __future__ import annotations

import json
import math
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


def storable_text(text: str) -> bool:
    """PostgreSQL text and jsonb cannot hold NUL, and lone surrogates (JSON "\\ud800") are not UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_decoded(value: Any, limit: int) -> str | None:
    """Why decoded JSON cannot be accepted (too deep, or a string PostgreSQL cannot store), or None.
    Iterative, so hostile nesting cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return f"The JSON body is nested deeper than {limit} levels."
        if isinstance(item, dict):
            for key, child in item.items():
                if not storable_text(key):
                    return "The JSON body contains a NUL character or an unpaired surrogate."
                stack.append((child, level + 1))
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, str) and not storable_text(item):
            return "The JSON body contains a NUL character or an unpaired surrogate."
    return None


class InvalidJSON(ValueError):
    """JSON the hub does not accept; `message` is a sentence for the client (or the relay's log)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class _NonFiniteNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteNumber(name)  # NaN, Infinity, -Infinity: Python's json extension, not JSON


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 and the like overflow a double
        raise _NonFiniteNumber(text)
    return value


# Built once: json.loads with hooks would build a decoder (and its scanner) on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def decode_json(raw: bytes | str) -> Any:
    """Parse a JSON document the hub may store; raise InvalidJSON saying why not (see the module docstring)."""
    try:
        if isinstance(raw, (bytes, bytearray)):  # as json.loads does: UTF-8/16/32 detected, invalid bytes refused
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        value = _DECODER.decode(raw)
    except _NonFiniteNumber:
        raise InvalidJSON(
            "The JSON body contains a number that is not finite (NaN, Infinity, or beyond the range of a double)."
        ) from None
    except (ValueError, RecursionError) as exc:
        details = {"position": exc.pos} if isinstance(exc, json.JSONDecodeError) else {}
        raise InvalidJSON("The request body is not valid JSON.", details) from None
    problem = _check_decoded(value, MAX_JSON_DEPTH)
    if problem:
        raise InvalidJSON(problem)
    return value


def has_body() -> bool:
    return bool(request.get_data(cache=True).strip())


def json_body() -> Any:
    """The decoded JSON body; 415 if it is not declared JSON, 400 if it is missing or not acceptable JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise APIError(400, "INVALID_JSON", "The request body must be a JSON object.")
    if not request.is_json:
        raise APIError(415, "UNSUPPORTED_MEDIA_TYPE", "The request body must be JSON (Content-Type: application/json).")
    try:
        return decode_json(raw)
    except InvalidJSON as exc:
        raise APIError(400, "INVALID_JSON", exc.message, exc.details) from None


def validation_details(exc: pydantic.ValidationError) -> dict[str, str]:
    details: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        details.setdefault(field, error["msg"])
    return details


def parse_model(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise APIError(400, "VALIDATION_ERROR", "The request body must be a JSON object.",
                       {"body": "must be an object"})
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise APIError(400, "VALIDATION_ERROR", "The request body is invalid.", validation_details(exc)) from None


def parse_body(model: type[M], optional: bool = False) -> M | None:
    if optional and not has_body():
        return None
    return parse_model(model, json_body())


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
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.",
                       {name: f"must be one of {', '.join(choices)}"})
    return raw


def query_text(name: str, max_length: int = 128) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length or "\x00" in raw:
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.",
                       {name: f"must be at most {max_length} characters without NUL"})
    return raw


def if_none_match_hits(etag: str) -> bool:
    """Whether the request's If-None-Match names `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`: a GET then
    answers 304."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


def is_identifier(value: str) -> bool:
    return bool(IDENTIFIER.match(value))
