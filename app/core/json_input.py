"""The one JSON parser for what clients and devices send, and the identifier rule.

`decode_json` is used for REST bodies, the token endpoint and bodies on NATS: it refuses what RFC 8259 does not
allow or PostgreSQL cannot store — `NaN`, `Infinity`, numbers beyond a double (`1e400`), NUL, unpaired surrogates,
nesting deeper than MAX_JSON_DEPTH — so such input is a clear 400 (or a dropped NATS message), never a database
error. `StrictModel` is the pydantic base of request bodies: strict types, no unknown fields.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pydantic

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
    except RecursionError:  # deeper than the interpreter's recursion limit, far beyond MAX_JSON_DEPTH
        raise InvalidJSON(f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError as exc:
        details = {"position": exc.pos} if isinstance(exc, json.JSONDecodeError) else {}
        raise InvalidJSON("The request body is not valid JSON.", details) from None
    problem = _check_decoded(value, MAX_JSON_DEPTH)
    if problem:
        raise InvalidJSON(problem)
    return value


def is_identifier(value: str) -> bool:
    return bool(IDENTIFIER.match(value))
