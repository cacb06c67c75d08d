"""The OpenAPI document's building blocks: references, responses, error bodies, parameters, security
requirements and the `_op` helper every path uses."""

from __future__ import annotations

from typing import Any

import pydantic

from app.core.json_input import IDENTIFIER_PATTERN
from app.schemas.resources import (
    object_schema,
)
from app.web.urls import API_PREFIX

OPENAPI_PATH = "/openapi.json"  # under /api/v1


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(key: str, item: str) -> dict[str, Any]:
    """A list answer: `{key: [item, ...], "total", "limit", "offset"}`."""
    return object_schema({
        key: {"type": "array", "items": _ref(item)},
        "total": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
    })


def _model_schemas(*models: type[pydantic.BaseModel]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


_RATE_HEADERS = {
    "X-RateLimit-Limit": {"description": "The limit that binds the client now: the burst (per 12 s window) or the "
                          "per-minute figure.", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests that would still be admitted if sent now.",
                              "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix time (seconds) when that limit is whole again.",
                          "schema": {"type": "integer"}},
}


_COMMON_HEADERS = {
    "X-Request-ID": {"description": "Correlation id (echoed or generated).", "schema": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {**_COMMON_HEADERS, **(headers or {})},
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


ERROR_RESPONSES = {
    "400": _error("Invalid input (`VALIDATION_ERROR`, `INVALID_JSON`, ...); `details` names each bad field."),
    "401": _error("Missing, malformed, expired or invalid credentials (`UNAUTHORIZED`)."),
    "403": _error("Valid token without the needed scope (`INSUFFICIENT_SCOPE`) or a device acting on another."),
    "404": _error("No such resource or route (`NOT_FOUND`, `DEVICE_NOT_FOUND`, ...)."),
    "405": _error("Method not allowed (`METHOD_NOT_ALLOWED`); `Allow` lists the methods."),
    "409": _error("Conflict with the current state."),
    "412": _error("If-Match does not match the current ETag (`PRECONDITION_FAILED`)."),
    "413": _error("Body larger than MAX_MESSAGE_SIZE_BYTES (`PAYLOAD_TOO_LARGE`)."),
    "415": _error("Body is not JSON (`UNSUPPORTED_MEDIA_TYPE`)."),
    "422": _error(
        "The command does not fit the device's declared type: `UNKNOWN_COMMAND` (`details.commands` lists the "
        "declared names) or `INVALID_PARAMS` (`details.errors`: `[{pointer, message, keyword}]`, RFC 6901 pointers "
        "into the request body). Nothing was stored or sent."
    ),
    "429": _error(
        "Rate limit exceeded (`RATE_LIMITED`), or `DEVICE_QUEUE_FULL`.",
        {**_RATE_HEADERS, "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
    "500": _error("Unexpected error (`INTERNAL_ERROR`); never carries a stack trace."),
    "503": _error("A dependency is unavailable (`SERVICE_UNAVAILABLE`, `DEVICE_OFFLINE`).",
                  {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERROR_RESPONSES[code] for code in codes}


AUTHED = ("401", "403", "404", "405", "429", "500", "503")


WITH_BODY = ("400", "413", "415")


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


DEVICE_ID = _param("device_id", "path", {"type": "string", "pattern": IDENTIFIER_PATTERN}, "Device id.")


MESSAGE_ID = _param("message_id", "path", {"type": "string", "minLength": 1, "maxLength": 128}, "Message id.")


LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size.")


OFFSET = _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0},
                "Items to skip.")


ETAG = {"ETag": {"description": "Quoted device version, for If-Match / If-None-Match.", "schema": {"type": "string"}}}


LOCATION = {"Location": {"description": "URL of the created resource.", "schema": {"type": "string"}}}


# A bearer token from the `oauth2` scheme (client credentials at the token endpoint); `_op` fills in the scope.
BEARER = [{"oauth2": []}]


DEVICE_OR_BEARER = [{"deviceBasic": []}, {"oauth2": []}]


TOKEN_PATH = f"{API_PREFIX}/auth/token"


def _security_schemes() -> dict[str, Any]:
    """`oauth2` tells a client generator where tokens come from, so its generated client can fetch them;
    relative URLs resolve against the document's server (`/`)."""
    return {
        "oauth2": {
            "type": "oauth2",
            "description": "A bearer token (JWT) from the token endpoint; `admin` implies every scope.",
            "flows": {"clientCredentials": {"tokenUrl": TOKEN_PATH, "scopes": {
                "device:read": "Read devices, device types, Thing Descriptions and properties.",
                "device:write": "Register, change and delete devices.",
                "device:command": "Send commands to devices.",
                "message:read": "Read commands (messages) and their outcome.",
                "admin": "Everything, including declaring device types.",
            }}},
        },
        "deviceBasic": {"type": "http", "scheme": "basic", "description": "device_id:device_secret"},
        "clientBasic": {"type": "http", "scheme": "basic", "description": "client_id:client_secret"},
    }


def _with_scope(security: list[dict[str, list[str]]], scope: str | None) -> list[dict[str, list[str]]]:
    """The route's security requirements with its scope named in the `oauth2` one."""
    return [{name: ([scope] if name == "oauth2" and scope else needed) for name, needed in requirement.items()}
            for requirement in security]


def _op(
    summary: str, responses: dict[str, Any], *, tag: str, security=None, scope: str | None = None, **extra,
) -> dict[str, Any]:
    description = extra.pop("description", "")
    if scope:
        description = (description + "\n\n" if description else "") + f"Scope: `{scope}` (or `admin`)."
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses, **extra}
    if description:
        operation["description"] = description
    operation["security"] = _with_scope(security, scope) if security is not None else []
    return operation


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _COMMON_HEADERS,
            "content": {"text/html": {"schema": {"type": "string"}}}}
