"""Request input: JSON bodies validated by pydantic models, query parameters by small typed helpers.

Pydantic in strict mode with `extra="forbid"` gives what docs/api.md promises for bad input: wrong types and unknown
fields are rejected, and every bad field is listed in `details`. The same models feed the OpenAPI document.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from flask import request

from app.core.errors import APIError
from app.core.json_input import InvalidJSON, decode_json
from app.core.text import colliding_keys, escaped

M = TypeVar("M", bound=pydantic.BaseModel)


def has_body() -> bool:
    return bool(request.get_data(cache=True).strip())


def json_body(untyped_is_json: bool = False) -> Any:
    """The decoded JSON body; 415 if it is not declared JSON, 400 if it is missing or not acceptable JSON.

    `untyped_is_json`: a body sent without any Content-Type is read as JSON (the routes a Thing Description's forms
    name: WoT consumers such as node-wot send the form's JSON with no Content-Type); a declared other type is
    still 415."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise APIError(400, "INVALID_JSON", "The request body must be a JSON object.")
    if not request.is_json and (request.mimetype or not untyped_is_json):
        raise APIError(415, "UNSUPPORTED_MEDIA_TYPE", "The request body must be JSON (Content-Type: application/json).")
    try:
        data = decode_json(raw)
    except InvalidJSON as exc:
        raise APIError(400, "INVALID_JSON", exc.message, exc.details) from None
    refuse_colliding_keys(data, "body")
    return data


def refuse_colliding_keys(value: Any, field: str) -> None:
    """400 VALIDATION_ERROR when an object in `value` has two keys that read the same once invisible characters are
    removed ("mode" and "mo\u200bde"): agents see keys scrubbed (app/core/text.py), and such a pair would show
    them one key where a device gets two. Refused at input, so nothing is stored; the MCP tools apply it too."""
    keys = colliding_keys(value)
    if keys is not None:
        shown = " and ".join(f"'{escaped(key)}'" for key in keys)
        raise APIError(400, "VALIDATION_ERROR", "The request body is invalid.",
                       {field: f"keys {shown} differ only in invisible characters"})


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
