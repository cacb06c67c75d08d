"""The OpenAPI 3.1 document at GET /api/v1/openapi.json (no auth, no rate limit), built once per app.

Request bodies come from the pydantic models the views validate with (`model_json_schema()`), so the document
cannot drift from validation; everything else is written here from docs/api.md. Every error response is the
one envelope (app/web/errors.py), except the token endpoint's RFC 6749 bodies. tests/integration/test_openapi.py keeps
the document and the app's URL map equal in both directions and runs schemathesis against it.
"""

from __future__ import annotations

from typing import Any

import pydantic
from flask import Blueprint, Flask, current_app, jsonify

from app.api.models import (
    MAX_COMMAND_NAME,
    MAX_TTL_MS,
    MAX_WAIT_SECONDS,
    MIN_TTL_MS,
    TYPE_NAME_PATTERN,
    AckBody,
    CommandCreate,
    DeviceCreate,
    DevicePatch,
    DeviceReplace,
    DeviceTypeBody,
    Heartbeat,
    MessageCreate,
)
from app.auth.tokens import SCOPES
from app.core.json_input import IDENTIFIER_PATTERN
from app.core.statuses import DEVICE_STATUSES
from app.core.statuses import STATUSES as MESSAGE_STATUSES
from app.schemas.resources import (
    DEVICE_SCHEMA,
    DEVICE_TYPE_SCHEMA,
    EVENT_PAGE_SCHEMA,
    EVENT_SCHEMA,
    MESSAGE_SCHEMA,
    OBJECT,
    STATE_HISTORY_SCHEMA,
    STATE_SCHEMA,
    TIMESTAMP,
    object_schema,
)
from app.schemas.thing_description import MEDIA_TYPE as TD_MEDIA_TYPE
from app.web.urls import API_PREFIX

OPENAPI_PATH = "/openapi.json"


blueprint = Blueprint("openapi", __name__)


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


def _schemas() -> dict[str, Any]:
    dependency = object_schema(
        {
            "name": {"type": "string", "enum": ["PostgreSQL", "Redis", "NATS"]},
            "status": {"type": "string"},
            "response_time_ms": {"type": ["number", "null"]},
            "message": {"type": ["string", "null"]},
        },
        required=["name", "status"],
    )
    return {
        "Error": object_schema(
            {
                "error": {"type": "string", "description": "A sentence for humans."},
                "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$", "description": "Stable machine code."},
                "details": {"type": "object", "additionalProperties": True},
                "request_id": {"type": ["string", "null"], "description": "Same as the X-Request-ID header."},
            },
            description="The one error envelope of every non-OAuth error (docs/api.md, \"Errors\").",
        ),
        "OAuthError": object_schema(
            {
                "error": {"type": "string", "enum": ["invalid_request", "invalid_client", "unsupported_grant_type",
                                                     "invalid_scope", "invalid_target", "invalid_grant",
                                                     "invalid_redirect_uri", "invalid_client_metadata",
                                                     "unauthorized_client"]},
                "error_description": {"type": "string"},
            },
            description="RFC 6749 §5.2 error body of the token endpoint (RFC 7591 §3.2.2 for registration).",
        ),
        "TokenRequest": object_schema(
            {
                "grant_type": {"type": "string",
                               "enum": ["client_credentials", "authorization_code", "refresh_token"]},
                "client_id": {"type": "string", "maxLength": 256},
                "client_secret": {"type": "string", "maxLength": 256,
                                  "description": "client_credentials only; public clients send none."},
                "code": {"type": "string", "description": "authorization_code: the one-time code (60 s)."},
                "redirect_uri": {"type": "string", "description": "authorization_code: as in the authorization."},
                "code_verifier": {"type": "string", "minLength": 43, "maxLength": 128,
                                  "description": "authorization_code: the PKCE verifier (RFC 7636, S256)."},
                "refresh_token": {"type": "string",
                                  "description": "refresh_token: works once; the answer carries its successor."},
                "scope": {"type": "string", "description": "Space-separated subset of: " + " ".join(SCOPES)},
                "resource": {
                    "type": "string", "format": "uri",
                    "description": "RFC 8707: the resource the token is for, and its `aud`: the hub's base URL (REST "
                    "API) or `<base>/api/v1/mcp` (MCP endpoint). Default: none (REST only).",
                },
            },
            required=["grant_type"],
            description="client_credentials: credentials in the body (client_secret_post) or in HTTP Basic "
            "(client_secret_basic). authorization_code / refresh_token: a public client (docs/console.md), "
            "`client_id` in the body and no secret.",
        ),
        "TokenResponse": object_schema(
            {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "scope": {"type": "string"},
                "refresh_token": {"type": "string", "description": "authorization_code and refresh_token grants."},
            },
            required=["access_token", "token_type", "expires_in", "scope"],
        ),
        **_authorization_schemas(),
        "Device": DEVICE_SCHEMA,
        "DeviceWithSecret": {
            "allOf": [DEVICE_SCHEMA, object_schema({"device_secret": {"type": "string", "description": "Shown once."}})]
        },
        "DeviceList": _page("devices", "Device"),
        **_model_schemas(DeviceCreate, DeviceReplace, DevicePatch, Heartbeat),
        "CommandAccepted": object_schema(
            {
                "message_id": {"type": "string"},
                "device_id": {"type": "string"},
                "status": {"type": "string", "enum": list(MESSAGE_STATUSES)},
                "created_at": TIMESTAMP,
                "expires_at": TIMESTAMP,
            }
        ),
        "Message": MESSAGE_SCHEMA,
        "MessageList": _page("commands", "Message"),
        **_model_schemas(CommandCreate, MessageCreate, AckBody),
        "Health": object_schema(
            {
                "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
                "version": {"type": "string"},
                "uptime_seconds": {"type": "number"},
                "timestamp": TIMESTAMP,
                "dependencies": {"type": "array", "items": dependency},
            }
        ),
        "Probe": object_schema({"status": {"type": "string", "enum": ["alive", "ready", "draining", "not_ready"]}}),
        "JsonRpcRequest": object_schema(
            {
                "jsonrpc": {"type": "string", "enum": ["2.0"]},
                "id": {"type": ["string", "integer"], "description": "Absent only for notifications/* methods."},
                "method": {"type": "string", "minLength": 1},
                "params": OBJECT,
            },
            required=["jsonrpc", "method"],
            description="One JSON-RPC 2.0 request or notification (no batches). See docs/mcp.md.",
        ),
        "JsonRpcResponse": object_schema(
            {
                "jsonrpc": {"type": "string", "enum": ["2.0"]},
                "id": {"type": ["string", "integer", "null"],
                       "description": "null when the request's id was unreadable."},
                "result": OBJECT,
                "error": object_schema(
                    {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
                    required=["code", "message"],
                ),
            },
            required=["jsonrpc", "id"],
            description="A JSON-RPC 2.0 response: `result`, or `error` "
                        "(-32700, -32600, -32601, -32602, -32020, -32022).",
        ),
        "ProtectedResourceMetadata": object_schema(
            {
                "resource": {"type": "string", "format": "uri"},
                "authorization_servers": {"type": "array", "items": {"type": "string", "format": "uri"}},
                "scopes_supported": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
                "bearer_methods_supported": {"type": "array", "items": {"type": "string", "enum": ["header"]}},
            },
            description="RFC 9728 protected resource metadata.",
        ),
        "AuthorizationServerMetadata": object_schema(
            {
                "issuer": {"type": "string", "format": "uri"},
                "token_endpoint": {"type": "string", "format": "uri"},
                "authorization_endpoint": {"type": "string", "format": "uri"},
                "registration_endpoint": {"type": "string", "format": "uri"},
                "grant_types_supported": {"type": "array", "items": {"type": "string"}},
                "token_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
                "response_types_supported": {"type": "array", "items": {"type": "string", "enum": ["code"]}},
                "code_challenge_methods_supported": {"type": "array", "items": {"type": "string", "enum": ["S256"]}},
                "scopes_supported": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
                "revocation_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
                "introspection_endpoint_auth_methods_supported": {"type": "array", "items": {"type": "string"}},
            },
            description="RFC 8414 authorization server metadata.",
        ),
        **_typed_schemas(),
    }


def _typed_schemas() -> dict[str, Any]:
    """Device types, Thing Descriptions and the action route (docs/device-types.md)."""
    return {
        "DeviceType": DEVICE_TYPE_SCHEMA,
        "DeviceTypeList": _page("device_types", "DeviceType"),
        **_model_schemas(DeviceTypeBody),
        "ThingDescription": object_schema(
            {
                "@context": {"const": "https://www.w3.org/2022/wot/td/v1.1"},
                "id": {"type": "string"},
                "title": {"type": "string"},
                "securityDefinitions": OBJECT,
                "security": {"type": "array", "items": {"type": "string"}},
                "properties": OBJECT,
                "actions": OBJECT,
            },
            required=["@context", "id", "title", "securityDefinitions", "security", "properties"],
            additionalProperties=True,
            description="W3C WoT Thing Description 1.1 (validates against the W3C TD 1.1 JSON Schema).",
        ),
        "ActionParams": {**OBJECT, "description": "The command's params (validated against its declared schema)."},
        "Event": EVENT_SCHEMA,
        "EventPage": {**EVENT_PAGE_SCHEMA, "properties": {**EVENT_PAGE_SCHEMA["properties"], "events": {
            "type": "array", "items": _ref("Event")}}},
        "State": STATE_SCHEMA,
        "StateHistory": STATE_HISTORY_SCHEMA,
        "DesiredPatch": {**OBJECT, "description": "A JSON merge patch (RFC 7396) of the desired state: members to "
                         "set (objects merge), `null` to remove one."},
        "StateReport": object_schema(
            {"reported": {**OBJECT, "description": "Members to merge into the reported state (`null` removes)."},
             "timestamp": {**TIMESTAMP, "description": "When the device measured (default: when the hub receives "
                           "it; more than 5 s ahead counts as now)."}},
            required=["reported"], additionalProperties=False,
        ),
    }


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


def _paths() -> dict[str, Any]:
    p = API_PREFIX
    token = _op(
        "Get an access token (OAuth 2.0 client credentials)",
        {
            "200": _json(_ref("TokenResponse"), "Token issued; `Cache-Control: no-store`."),
            "400": _json(_ref("OAuthError"), "invalid_request / unsupported_grant_type / invalid_scope / "
                         "invalid_target (a `resource` the hub does not serve, or more than one)"),
            "401": _json(_ref("OAuthError"), "invalid_client; `WWW-Authenticate` is set."),
            **_errors("405", "413", "429", "500", "503"),
        },
        tag="auth",
        security=[{}, {"clientBasic": []}],
        description="Client authentication by HTTP Basic (client_secret_basic) or in the body (client_secret_post). "
        "`scope` asks for some of the client's scopes: the token gets those the client holds (`scope` in the answer), "
        "none of them: `invalid_scope`. The body may also be a JSON object with the same fields.",
        # Form-encoded only here, though the endpoint also reads JSON: generators (openapi-python-client) emit
        # code that does not import for a body declared under two media types.
        requestBody={
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _ref("TokenRequest")}},
        },
    )
    device_list_query = [
        _param("status", "query", {"type": "string", "enum": list(DEVICE_STATUSES)}, "Effective status."),
        _param("type", "query", {"type": "string", "maxLength": 64}, "device_type equals."),
        _param("capability", "query", {"type": "string", "maxLength": 64}, "Has this capability."),
        LIMIT,
        OFFSET,
    ]
    event_query = [
        _param("types", "query", {"type": "string"}, "Comma-separated event types; `command.status` needs "
               "`message:read`."),
        _param("device_type", "query", {"type": "string"}, "Comma-separated device types (the type when the "
               "event happened)."),
        _param("after", "query", {"type": "string"}, "Resume after this event id (or `next`); without it, from now."),
        _param("last_event_id", "query", {"type": "string"}, "Same as `after`."),
        _param("Last-Event-ID", "header", {"type": "string"}, "SSE: resume after this id (wins over the query)."),
        _param("wait", "query", {"type": "integer", "minimum": 0, "maximum": 30, "default": 0},
               "Long poll: wait up to N seconds for an event (in the `?wait` waiter slots)."),
        _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
               "Long poll: at most this many events."),
    ]
    event_responses = {
        "200": {
            "description": "`Accept: text/event-stream`: a stream of `id:`/`event:`/`data:` frames, `: keep-alive` "
                           "every 15 s, ending with `retry:` after UAIP_STREAM_MAX_SECONDS. Otherwise a JSON page.",
            "headers": _COMMON_HEADERS,
            "content": {"application/json": {"schema": _ref("EventPage")},
                        "text/event-stream": {"schema": {"type": "string"}}},
        },
        **_errors("400", *AUTHED),
    }
    event_op = dict(tag="events", security=BEARER, scope="device:read",
                    description="400 `INVALID_CURSOR` for an id this hub did not issue; 503 `STREAMS_FULL` (with "
                                "`Retry-After`) when every stream slot of the worker is taken.")
    update = dict(
        parameters=[_param("If-Match", "header", {"type": "string"}, "Only if the ETag still matches (`*`: any).")],
        scope="device:write",
        tag="devices",
        security=BEARER,
    )
    return {
        f"{p}/auth/token": {"post": {**token, "operationId": "token"}},
        f"{p}/auth/login": {"post": {**token, "operationId": "login", "summary": "Same as /auth/token (old hub name)"}},
        f"{p}/devices": {
            "post": _op(
                "Register a device", {
                    "201": _json(_ref("DeviceWithSecret"), "Registered; `device_secret` is shown only here.",
                                 {**ETAG, **LOCATION}),
                    **_errors(*WITH_BODY, *AUTHED, "409"),
                },
                tag="devices", security=BEARER, scope="device:write", requestBody=_body("DeviceCreate"),
                operationId="registerDevice",
            ),
            "get": _op(
                "List devices", {"200": _json(_ref("DeviceList"), "A page of devices."), **_errors("400", *AUTHED)},
                tag="devices", security=BEARER, scope="device:read", parameters=device_list_query,
                operationId="listDevices",
            ),
        },
        f"{p}/devices/register": {
            "post": _op(
                "Register a device (old hub name)", {
                    "201": _json(_ref("DeviceWithSecret"), "Registered.", {**ETAG, **LOCATION}),
                    **_errors(*WITH_BODY, *AUTHED, "409"),
                },
                tag="devices", security=BEARER, scope="device:write", requestBody=_body("DeviceCreate"),
                operationId="registerDeviceAlias",
            ),
        },
        f"{p}/devices/{{device_id}}": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "Get a device", {
                    "200": _json(_ref("Device"), "The device.", ETAG),
                    "304": {"description": "If-None-Match matched the current ETag.",
                            "headers": {**_COMMON_HEADERS, **ETAG}},
                    **_errors(*AUTHED),
                },
                tag="devices", security=BEARER, scope="device:read", operationId="getDevice",
                parameters=[_param("If-None-Match", "header", {"type": "string"}, "Answer 304 if the ETag matches.")],
            ),
            "patch": _op(
                "Change some fields",
                {"200": _json(_ref("Device"), "Updated.", ETAG), **_errors(*WITH_BODY, *AUTHED, "412")},
                requestBody=_body("DevicePatch"), operationId="patchDevice", **update,
            ),
            "put": _op(
                "Replace every mutable field",
                {"200": _json(_ref("Device"), "Replaced.", ETAG), **_errors(*WITH_BODY, *AUTHED, "412")},
                requestBody=_body("DeviceReplace"), operationId="replaceDevice", **update,
            ),
            "delete": _op(
                "Delete a device; its undelivered commands become `cancelled`",
                {"204": {"description": "Deleted.", "headers": _COMMON_HEADERS}, **_errors(*AUTHED)},
                tag="devices", security=BEARER, scope="device:write", operationId="deleteDevice",
            ),
        },
        f"{p}/devices/{{device_id}}/heartbeat": {
            "parameters": [DEVICE_ID],
            "post": _op(
                "Device heartbeat: status `online` (or `error`), `last_seen` now",
                {"200": _json(_ref("Device"), "The device after the heartbeat.", ETAG), **_errors(*WITH_BODY, *AUTHED)},
                tag="devices", security=DEVICE_OR_BEARER, scope="device:write",
                description="HTTP Basic `device_id:device_secret` (the device itself) or a bearer token.",
                requestBody=_body("Heartbeat", required=False), operationId="heartbeat",
            ),
        },
        f"{p}/devices/{{device_id}}/command": {
            "parameters": [DEVICE_ID],
            "post": _op(
                "Send a command to a device", {
                    "200": _json(_ref("Message"), "With `wait`: the command finished in time."),
                    "202": _json(_ref("CommandAccepted"), "Stored and queued.", LOCATION),
                    **_errors(*WITH_BODY, *AUTHED, "409", "422"),
                },
                tag="commands", security=BEARER, scope="device:command", requestBody=_body("CommandCreate"),
                operationId="sendCommand",
                parameters=[
                    _param("Idempotency-Key", "header", {"type": "string", "maxLength": 128},
                           "Same key and body within 24 h: the first response; another body: 409."),
                    _param("wait", "query", {"type": "integer", "minimum": 0, "maximum": 30},
                           "Wait up to N seconds for the device's result. Waiting is bounded per worker and per "
                           "client; over the bound the answer is the 202 at once (poll the Location)."),
                ],
            ),
        },
        f"{p}/devices/{{device_id}}/commands": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "List a device's commands, newest first",
                {"200": _json(_ref("MessageList"), "A page of commands."), **_errors("400", *AUTHED)},
                tag="commands", security=DEVICE_OR_BEARER, scope="device:read", operationId="listCommands",
                parameters=[_param("status", "query", {"type": "string", "enum": list(MESSAGE_STATUSES)}, "Status."),
                            LIMIT, OFFSET],
            ),
        },
        f"{p}/events": {"get": _op("Follow events (SSE stream or JSON long poll)", event_responses,
                                   operationId="followEvents",
                                   parameters=[*event_query, _param("device_id", "query", {"type": "string"},
                                                                    "Comma-separated device ids (at most 100).")],
                                   **event_op)},
        f"{p}/devices/{{device_id}}/events": {
            "parameters": [DEVICE_ID],
            "get": _op("Follow one device's events (SSE stream or JSON long poll)", event_responses,
                       operationId="followDeviceEvents", parameters=event_query, **event_op),
        },
        f"{p}/messages": {
            "post": _op(
                "Route a message to device `destination`",
                {"202": _json(_ref("CommandAccepted"), "Stored and queued.", LOCATION),
                 **_errors(*WITH_BODY, *AUTHED, "409", "422")},
                tag="commands", security=BEARER, scope="device:command", requestBody=_body("MessageCreate"),
                operationId="routeMessage",
            ),
        },
        f"{p}/messages/{{message_id}}": {
            "parameters": [MESSAGE_ID],
            "get": _op(
                "Get a message (command) and its result",
                {"200": _json(_ref("Message"), "The message."), **_errors(*AUTHED)},
                tag="commands", security=BEARER, scope="message:read", operationId="getMessage",
            ),
        },
        f"{p}/messages/{{message_id}}/ack": {
            "parameters": [MESSAGE_ID],
            "post": _op(
                "Device acknowledges or completes a command; status never moves backwards",
                {"200": _json(_ref("Message"), "The message after the ack."), **_errors(*WITH_BODY, *AUTHED, "409")},
                tag="commands", security=[{"deviceBasic": []}], requestBody=_body("AckBody"), operationId="ackMessage",
            ),
        },
        f"{p}/mcp": {"post": _mcp_operation()},
        **_discovery_paths(),
        f"{p}/system/health": {
            "get": _op(
                "Dependency health (cached ≤ 2 s per worker)",
                {"200": _json(_ref("Health"), "healthy or degraded."),
                 "503": _json(_ref("Health"), "unhealthy (PostgreSQL down).")},
                tag="system", operationId="health",
            ),
        },
        f"{p}/system/health/liveness": {
            "get": _op("Liveness: touches no dependency", {"200": _json(_ref("Probe"), "alive")},
                       tag="system", operationId="liveness"),
        },
        f"{p}/system/health/readiness": {
            "get": _op(
                "Readiness: 503 while draining or when PostgreSQL is unreachable",
                {"200": _json(_ref("Probe"), "ready"), "503": _json(_ref("Probe"), "draining or not_ready")},
                tag="system", operationId="readiness",
            ),
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics, aggregated over all workers",
                {"200": {"description": "Prometheus text exposition format.",
                         "content": {"text/plain": {"schema": {"type": "string"}}}}},
                tag="system", operationId="metrics",
            ),
        },
        f"{p}{OPENAPI_PATH}": {
            "get": _op("This document",
                       {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": OBJECT}}}},
                       tag="system", operationId="openapi"),
        },
    }


def _mcp_operation() -> dict[str, Any]:
    from app.mcp.protocol import METHOD_HEADER, NAME_HEADER, SUPPORTED_VERSIONS, VERSION_HEADER

    rpc_error = _json(_ref("JsonRpcResponse"), "")
    return _op(
        "Model Context Protocol endpoint for AI agents (Streamable HTTP, stateless)",
        {
            "200": _json(_ref("JsonRpcResponse"), "The JSON-RPC response: a result, or an error that is not a refusal "
                         "of the message (-32601 and -32602 before 2026-07-28)."),
            "202": {"description": "A notification, accepted; no body.", "headers": _COMMON_HEADERS},
            "400": {**rpc_error, "description": "Malformed JSON (-32700), not one valid request (-32600), an "
                    "unsupported MCP-Protocol-Version (-32022); with 2026-07-28 also -32602 and -32020."},
            "404": {**rpc_error, "description": "2026-07-28 only: unknown method (-32601)."},
            **_errors("405", "413", "415", "429", "500", "503"),
            "401": _error("No token, or one not issued for this endpoint (`aud`); `WWW-Authenticate: Bearer "
                          "resource_metadata=\"<base>/.well-known/oauth-protected-resource/api/v1/mcp\"`."),
            "403": _error("An Origin not in CORS_ORIGINS (`ORIGIN_NOT_ALLOWED`), or a tool outside the token's scopes "
                          "(`INSUFFICIENT_SCOPE`, "
                          "`WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=...`)."),
            "406": _error("An Accept header that rules out application/json (`NOT_ACCEPTABLE`)."),
        },
        tag="mcp", security=BEARER, operationId="mcp",
        description="JSON-RPC 2.0, one message per POST, answered with one application/json response; no sessions, "
        "GET and DELETE get 405. Methods: initialize (2025-06-18, 2025-11-25), ping, tools/list, tools/call; with "
        "`MCP-Protocol-Version: 2026-07-28`: server/discover, tools/list, tools/call. Tools: list_devices, "
        "get_device (scope device:read), send_command (device:command), get_command (message:read). The token must "
        "be issued for this endpoint (`resource` = `<base>/api/v1/mcp`); without one, 401 with `WWW-Authenticate: "
        "Bearer resource_metadata=...`. See docs/mcp.md.",
        parameters=[
            _param(VERSION_HEADER, "header", {"type": "string", "enum": list(SUPPORTED_VERSIONS)},
                   "Protocol revision of this request; absent: a handshake-era client."),
            _param(METHOD_HEADER, "header", {"type": "string"}, "2026-07-28: the body's method."),
            _param(NAME_HEADER, "header", {"type": "string"}, "2026-07-28: the tool name of a tools/call."),
        ],
        requestBody=_body("JsonRpcRequest"),
    )


def _discovery_paths() -> dict[str, Any]:
    from app.api.discovery import AUTHORIZATION_SERVER
    from app.web.urls import MCP_PATH, PROTECTED_RESOURCE

    def document(summary: str, schema: str, operation_id: str) -> dict[str, Any]:
        return {"get": _op(summary, {"200": _json(_ref(schema), summary), **_errors("405", "500")},
                           tag="discovery", operationId=operation_id)}

    return {
        PROTECTED_RESOURCE: document("RFC 9728 metadata of the REST API (resource `<base>`)",
                                     "ProtectedResourceMetadata", "restResourceMetadata"),
        PROTECTED_RESOURCE + MCP_PATH: document("RFC 9728 metadata of the MCP endpoint (resource `<base>/api/v1/mcp`)",
                                                "ProtectedResourceMetadata", "mcpResourceMetadata"),
        AUTHORIZATION_SERVER: document("RFC 8414 metadata of the hub as its own authorization server",
                                       "AuthorizationServerMetadata", "authorizationServerMetadata"),
    }


def _typed_paths() -> dict[str, Any]:
    p = API_PREFIX
    type_name = _param("device_type", "path", {"type": "string", "pattern": TYPE_NAME_PATTERN}, "Device type name.")
    if_match = _param("If-Match", "header", {"type": "string"},
                      "Only if the type exists with this ETag (`*`: exists at all); else 412.")
    property_name = _param("name", "path", {"type": "string", "minLength": 1, "maxLength": 128},
                           "Property: status, last_seen, or a state property.")
    command_in_path = _param("command", "path", {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_NAME},
                             "Command name (a declared one for a typed device).")
    return {
        f"{p}/device-types": {
            "get": _op(
                "List device types",
                {"200": _json(_ref("DeviceTypeList"), "A page of types, by name."), **_errors("400", *AUTHED)},
                tag="device-types", security=BEARER, scope="device:read", parameters=[LIMIT, OFFSET],
                operationId="listDeviceTypes",
            ),
        },
        f"{p}/device-types/{{device_type}}": {
            "parameters": [type_name],
            "put": _op(
                "Declare or replace a device type", {
                    "200": _json(_ref("DeviceType"), "Replaced (the version moves only if something changed).", ETAG),
                    "201": _json(_ref("DeviceType"), "Created.", {**ETAG, **LOCATION}),
                    **_errors(*WITH_BODY, *AUTHED, "412"),
                },
                tag="device-types", security=BEARER, scope="admin", requestBody=_body("DeviceTypeBody"),
                operationId="putDeviceType",
                description="400 `INVALID_SCHEMA` names the command, the schema (`params`/`result`), a pointer into "
                "it and the problem.",
                parameters=[if_match, _param("If-None-Match", "header", {"type": "string"},
                                             "`*`: create only (412 if it exists).")],
            ),
            "get": _op(
                "Get a device type", {
                    "200": _json(_ref("DeviceType"), "The type.", ETAG),
                    "304": {"description": "If-None-Match matched the current ETag.",
                            "headers": {**_COMMON_HEADERS, **ETAG}},
                    **_errors(*AUTHED),
                },
                tag="device-types", security=BEARER, scope="device:read", operationId="getDeviceType",
                parameters=[_param("If-None-Match", "header", {"type": "string"}, "Answer 304 if the ETag matches.")],
            ),
            "delete": _op(
                "Delete a device type (409 `DEVICE_TYPE_IN_USE` while devices have it)",
                {"204": {"description": "Deleted.", "headers": _COMMON_HEADERS}, **_errors(*AUTHED, "409", "412")},
                tag="device-types", security=BEARER, scope="admin", operationId="deleteDeviceType",
                parameters=[if_match],
            ),
        },
        f"{p}/devices/{{device_id}}/thing-description": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "The device's W3C Thing Description (TD 1.1)", {
                    "200": {"description": "The Thing Description.", "headers": _COMMON_HEADERS,
                            "content": {TD_MEDIA_TYPE: {"schema": _ref("ThingDescription")}}},
                    **_errors(*AUTHED),
                },
                tag="things", security=BEARER, scope="device:read", operationId="getThingDescription",
            ),
        },
        f"{p}/devices/{{device_id}}/properties/{{name}}": {
            "parameters": [DEVICE_ID, property_name],
            "get": _op(
                "Read one Thing Description property: the bare JSON value",
                {"200": _json({}, "`status` (a string), `last_seen` (RFC 3339 or null), or the reported value of a "
                              "state property."), **_errors(*AUTHED)},
                tag="things", security=BEARER, scope="device:read", operationId="readProperty",
                description="404 `PROPERTY_NOT_FOUND` for a name the device's type does not declare, "
                "`PROPERTY_NO_VALUE` before the device first reports it.",
            ),
            "put": _op(
                "Write a state property (sets its desired value): the body is the bare value",
                {"204": {"description": "Desired set (and published to the device).", "headers": _COMMON_HEADERS},
                 **_errors(*WITH_BODY, *AUTHED, "422")},
                tag="things", security=BEARER, scope="device:command", operationId="writeProperty",
                requestBody={"required": True, "content": {"application/json": {"schema": {}}}},
                description="Checks as PATCH /state/desired; 422 `PROPERTY_NOT_WRITABLE` for a read-only one. A "
                "missing Content-Type is read as JSON.",
            ),
        },
        f"{p}/devices/{{device_id}}/properties/{{name}}/observe": {
            "parameters": [DEVICE_ID, property_name],
            "get": _op(
                "Observe a state property (long poll, or SSE): the next changed reported value",
                {"200": {**_json({}, "The new value, or the current one when UAIP_OBSERVE_SECONDS passed first. "
                                 "With `Accept: text/event-stream`: a stream, one frame per change, `data:` the "
                                 "bare new value, `id:` the event id."),
                         "content": {"application/json": {"schema": {}},
                                     "text/event-stream": {"schema": {"type": "string"}}}},
                 **_errors(*AUTHED)},
                tag="things", security=BEARER, scope="device:read", operationId="observeProperty",
                description="Waits within the same per-process bounds as `?wait`; with every slot taken it answers "
                "the current value at once. 404 `PROPERTY_NO_VALUE` when there is none. The SSE form takes an "
                "event-stream slot (503 `STREAMS_FULL`) and resumes with `Last-Event-ID` (400 `INVALID_CURSOR`).",
            ),
        },
        f"{p}/devices/{{device_id}}/commands/{{command}}": {
            "parameters": [DEVICE_ID, command_in_path],
            "post": _op(
                "Invoke a command (a Thing Description action): the body is its params", {
                    "200": _json(_ref("Message"), "With `wait`: the command finished in time."),
                    "202": _json(_ref("CommandAccepted"), "Stored and queued.", LOCATION),
                    **_errors(*WITH_BODY, *AUTHED, "409", "422"),
                },
                tag="commands", security=BEARER, scope="device:command", operationId="invokeAction",
                requestBody={"required": False, "content": {"application/json": {"schema": _ref("ActionParams")}}},
                description="An empty body is `{}`. Idempotency-Key compares the params and the query values given.",
                parameters=[
                    _param("Idempotency-Key", "header", {"type": "string", "maxLength": 128},
                           "Same key, params and query within 24 h: the first response; otherwise 409."),
                    _param("wait", "query", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
                           "Wait up to N seconds for the device's result."),
                    _param("qos", "query", {"type": "integer", "enum": [0, 1, 2], "default": 1}, "Delivery guarantee."),
                    _param("priority", "query", {"type": "integer", "minimum": 0, "maximum": 10, "default": 5},
                           "Priority."),
                    _param("ttl_ms", "query", {"type": "integer", "minimum": MIN_TTL_MS, "maximum": MAX_TTL_MS},
                           "Time to live (default DEFAULT_MESSAGE_TTL_MS)."),
                ],
            ),
        },
    }


def _state_paths() -> dict[str, Any]:
    """Device state (docs/state.md)."""
    p = API_PREFIX
    state_etag = {"ETag": {"description": "Quoted state version, for If-Match.", "schema": {"type": "string"}}}
    write_errors = _errors(*WITH_BODY, *AUTHED, "422")
    write_errors["413"] = _error("Body larger than MAX_MESSAGE_SIZE_BYTES (`PAYLOAD_TOO_LARGE`), or a side of the "
                                 "state beyond MAX_STATE_BYTES or 16 levels (`STATE_TOO_LARGE`).")
    write_errors["422"] = _error("`UNKNOWN_PROPERTY` (`details.properties` lists the declared names), "
                                 "`PROPERTY_NOT_WRITABLE`, or `INVALID_VALUE` (`details.errors`: `[{pointer, message, "
                                 "keyword}]`). Nothing changed.")
    merge_patch = {"required": True, "content": {
        "application/merge-patch+json": {"schema": _ref("DesiredPatch")},
        "application/json": {"schema": _ref("DesiredPatch")},
    }}
    return {
        f"{p}/devices/{{device_id}}/state": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "Get the device's state: reported, desired, delta, metadata, version",
                {"200": _json(_ref("State"), "The state.", state_etag),
                 "304": {"description": "If-None-Match matched the current ETag.",
                         "headers": {**_COMMON_HEADERS, **state_etag}},
                 **_errors(*AUTHED)},
                tag="devices", security=DEVICE_OR_BEARER, scope="device:read", operationId="getState",
                parameters=[_param("If-None-Match", "header", {"type": "string"}, "Answer 304 if the ETag matches.")],
            ),
        },
        f"{p}/devices/{{device_id}}/state/desired": {
            "parameters": [DEVICE_ID],
            "patch": _op(
                "Merge-patch the desired state (published to the device on `.state.desired`)",
                {"200": _json(_ref("State"), "The new state.", state_etag), **write_errors, **_errors("412")},
                tag="devices", security=BEARER, scope="device:command", operationId="patchDesiredState",
                requestBody=merge_patch,
                parameters=[_param("If-Match", "header", {"type": "string"}, "Only if the state has this ETag.")],
                description="Checks in order: body 400, device 404, If-Match 412, size 413, then 422.",
            ),
        },
        f"{p}/devices/{{device_id}}/state/reported": {
            "parameters": [DEVICE_ID],
            "patch": _op(
                "Report state (the device, or a client with device:write); counts as a heartbeat",
                {"200": _json(_ref("State"), "The new state.", state_etag), **write_errors},
                tag="devices", security=DEVICE_OR_BEARER, scope="device:write", operationId="reportState",
                requestBody=_body("StateReport"),
                description="Per property, a report older than the stored timestamp is ignored; an equal one "
                "applies; a repeated value refreshes only its timestamp.",
            ),
        },
        f"{p}/devices/{{device_id}}/state/history": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "History of one reported property (oldest first), raw or in buckets",
                {"200": _json(_ref("StateHistory"), "A page of points.", state_etag), **_errors("400", *AUTHED)},
                tag="devices", security=BEARER, scope="device:read", operationId="getStateHistory",
                parameters=[
                    _param("property", "query", {"type": "string", "minLength": 1, "maxLength": 256},
                           "The reported member.", required=True),
                    _param("from", "query", {"type": "string", "format": "date-time"}, "Inclusive (RFC 3339)."),
                    _param("to", "query", {"type": "string", "format": "date-time"}, "Exclusive (RFC 3339)."),
                    LIMIT,
                    _param("cursor", "query", {"type": "string", "maxLength": 64}, "next_cursor of the last page."),
                    _param("bucket", "query", {"type": "integer", "minimum": 1}, "Bucket size in seconds "
                           "(aligned to the Unix epoch; empty buckets are left out)."),
                    _param("agg", "query", {"type": "string", "enum": ["avg", "min", "max", "last"]},
                           "Aggregate per bucket (default last; avg/min/max need numbers)."),
                ],
            ),
        },
    }


def _client_schemas() -> dict[str, Any]:
    """Client management, token revocation and introspection, the audit log (docs/clients.md)."""
    from app.api.clients import ClientCreate, ClientUpdate, SecretRotation

    secret = object_schema({
        "secret_id": {"type": "string"},
        "created_at": TIMESTAMP,
        "expires_at": {**TIMESTAMP, "type": ["string", "null"], "description": "null: no expiry."},
        "last_used_at": {**TIMESTAMP, "type": ["string", "null"],
                         "description": "Last token request with it (to the minute); null: never."},
    })
    client = object_schema({
        "client_id": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
        "disabled": {"type": "boolean"},
        "created_at": TIMESTAMP,
        "secrets": {"type": "array", "items": secret, "maxItems": 2, "description": "Live secrets, oldest first."},
    })
    token_form = object_schema(
        {"token": {"type": "string", "description": "An access token (or a refresh token) of this hub."},
         "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
         "client_id": {"type": "string"}, "client_secret": {"type": "string"}},
        required=["token"],
        description="Client credentials in HTTP Basic (client_secret_basic) or in the body (client_secret_post).",
    )
    return {
        "Client": client,
        "ClientWithSecret": {"allOf": [client, object_schema({"client_secret": {
            "type": "string", "description": "Shown once."}})]},
        "ClientList": _page("clients", "Client"),
        "NewSecret": object_schema({"secret_id": {"type": "string"},
                                    "client_secret": {"type": "string", "description": "Shown once."}}),
        **_model_schemas(ClientCreate, ClientUpdate, SecretRotation),
        "TokenForm": token_form,
        "Introspection": object_schema(
            {"active": {"type": "boolean"}, "scope": {"type": "string"}, "client_id": {"type": "string"},
             "sub": {"type": "string"}, "aud": {"type": "string", "description": "Only when the token has one."},
             "exp": {"type": "integer"}, "iat": {"type": "integer"}, "jti": {"type": "string"},
             "token_type": {"type": "string", "enum": ["Bearer"]}},
            required=["active"],
            description="RFC 7662: only `active: false` for a token that is not valid now (or another client's).",
        ),
        "AuditEntry": object_schema({
            "id": {"type": "integer"},
            "at": TIMESTAMP,
            "actor": {"type": "string", "description": "`client:<client_id>`, `operator:<email>` or `cli`."},
            "action": {"type": "string", "description": "`<kind>.<verb>`, e.g. `client.create`, `command.submit`."},
            "target": {"type": "string", "description": "`<kind>:<id>`."},
            "request_id": {"type": ["string", "null"]},
            "details": OBJECT,
        }),
        "AuditPage": object_schema({
            "entries": {"type": "array", "items": _ref("AuditEntry")},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next (older) page."},
        }),
    }


def _client_paths() -> dict[str, Any]:
    p = API_PREFIX
    client_id = _param("client_id", "path", {"type": "string", "maxLength": 128}, "Client id.")
    admin = dict(tag="clients", security=BEARER, scope="admin")
    no_store = {"Cache-Control": {"description": "no-store", "schema": {"type": "string"}}}
    token_form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": _ref("TokenForm")},
                                                "application/json": {"schema": _ref("TokenForm")}}}
    client_auth = [{}, {"clientBasic": []}]
    oauth_errors = {
        "400": _json(_ref("OAuthError"), "invalid_request (no `token`), or unauthorized_client (another "
                     "client's token, without admin)."),
        "401": _json(_ref("OAuthError"), "invalid_client; `WWW-Authenticate` is set."),
        **_errors("405", "413", "429", "500", "503"),
    }
    query = [_param(name, "query", {"type": "string"}, text) for name, text in (
        ("actor", "Exactly this actor."), ("action", "Exactly this action."), ("target", "Exactly this target."))]
    query += [
        _param("from", "query", {"type": "string", "format": "date-time"}, "Entries at or after (RFC 3339)."),
        _param("to", "query", {"type": "string", "format": "date-time"}, "Entries before (RFC 3339)."),
        LIMIT,
        _param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page."),
    ]
    return {
        f"{p}/clients": {
            "get": _op("List clients (never a secret)", {"200": _json(_ref("ClientList"), "A page of clients."),
                                                          **_errors("400", *AUTHED)},
                       parameters=[LIMIT, OFFSET], operationId="listClients", **admin),
            "post": _op("Create a client", {
                "201": _json(_ref("ClientWithSecret"), "Created; `client_secret` is shown only here.",
                             {**LOCATION, **no_store}),
                **_errors(*WITH_BODY, *AUTHED)}, requestBody=_body("ClientCreate"), operationId="createClient",
                **admin),
        },
        f"{p}/clients/{{client_id}}": {
            "parameters": [client_id],
            "get": _op("Get a client", {"200": _json(_ref("Client"), "The client."), **_errors(*AUTHED)},
                       operationId="getClient", **admin),
            "patch": _op("Change name, scopes or disabled", {
                "200": _json(_ref("Client"), "The client after the change."), **_errors(*WITH_BODY, *AUTHED)},
                description="Removing a scope or disabling revokes every token the client holds; renaming or adding "
                            "scopes revokes nothing.",
                requestBody=_body("ClientUpdate"), operationId="updateClient", **admin),
            "delete": _op("Delete a client (its tokens are revoked)",
                          {"204": {"description": "Deleted.", "headers": _COMMON_HEADERS}, **_errors(*AUTHED)},
                          operationId="deleteClient", **admin),
        },
        f"{p}/clients/{{client_id}}/secrets": {
            "parameters": [client_id],
            "post": _op("Rotate the client's secret", {
                "201": _json(_ref("NewSecret"), "The new secret, shown only here.", no_store),
                **_errors(*WITH_BODY, *AUTHED)},
                description="The previous secret works for `previous_secret_expires_in` seconds more; at most two "
                            "secrets are live (an older one ends at once).",
                requestBody=_body("SecretRotation", required=False), operationId="rotateClientSecret", **admin),
        },
        f"{p}/clients/{{client_id}}/revoke-tokens": {
            "parameters": [client_id],
            "post": _op("Revoke every token issued to the client so far",
                        {"204": {"description": "Revoked.", "headers": _COMMON_HEADERS}, **_errors(*AUTHED)},
                        description="Tokens issued before the call returned are refused (on every hub within 1 s); "
                                    "tokens issued 1 s or more after it work.",
                        operationId="revokeClientTokens", **admin),
        },
        f"{p}/auth/revoke": {
            "post": _op("Revoke a token (RFC 7009)", {
                "200": {"description": "Revoked, or nothing to revoke (unknown or expired token).",
                        "headers": {**_COMMON_HEADERS, **no_store}},
                **oauth_errors}, tag="auth", security=client_auth, requestBody=token_form, operationId="revokeToken",
                description="An access token, or a sign-in refresh token (its whole grant ends). A public client "
                            "(desktop agent) names itself with `client_id` alone."),
        },
        f"{p}/auth/introspect": {
            "post": _op("Introspect a token (RFC 7662)", {
                "200": _json(_ref("Introspection"), "The token's state.", no_store), **oauth_errors},
                tag="auth", security=client_auth, requestBody=token_form, operationId="introspectToken"),
        },
        f"{p}/audit": {
            "get": _op("Read the audit log, newest first", {"200": _json(_ref("AuditPage"), "A page of entries."),
                                                            **_errors("400", *AUTHED)},
                       tag="audit", security=BEARER, scope="admin", parameters=query, operationId="listAudit",
                       description="Append-only: no method changes it (405)."),
        },
    }


def _authorization_schemas() -> dict[str, Any]:
    client = {
        "client_name": {"type": "string", "maxLength": 200},
        "redirect_uris": {"type": "array", "minItems": 1, "maxItems": 10,
                          "items": {"type": "string", "maxLength": 2000},
                          "description": "http://127.0.0.1 or http://localhost (any port) or https URIs."},
        "grant_types": {"type": "array", "items": {"type": "string", "enum": ["authorization_code", "refresh_token"]}},
        "response_types": {"type": "array", "items": {"type": "string", "enum": ["code"]}},
        "token_endpoint_auth_method": {"type": "string", "enum": ["none"]},
        "scope": {"type": "string"},
    }
    return {
        "ClientRegistrationRequest": object_schema(
            client, required=["redirect_uris"],
            description="RFC 7591 client metadata; public clients only. Unknown members are ignored.",
        ),
        "ClientRegistration": object_schema(
            {"client_id": {"type": "string"}, "client_id_issued_at": {"type": "integer"}, **client},
            required=["client_id", "client_id_issued_at", "client_name", "redirect_uris", "grant_types",
                      "response_types", "token_endpoint_auth_method"],
        ),
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _COMMON_HEADERS,
            "content": {"text/html": {"schema": {"type": "string"}}}}


def _authorization_paths() -> dict[str, Any]:
    p = API_PREFIX
    redirect = {"description": "To the console's sign-in (302, then back here) or to the client's redirect URI "
                "(303) with `code` and `state`, or with `error` (access_denied, invalid_request, invalid_scope, "
                "invalid_target, unsupported_response_type).", "headers": {"Location": {"schema": {"type": "string"}}}}
    query = [
        _param(name, "query", {"type": "string"}, description, required=name in ("client_id", "redirect_uri"))
        for name, description in (
            ("response_type", "`code`."), ("client_id", "From registration."),
            ("redirect_uri", "As registered; loopback URIs with any port (RFC 8252 §7.3)."),
            ("code_challenge", "PKCE challenge (RFC 7636), 43-128 characters."),
            ("code_challenge_method", "`S256` (plain is refused)."), ("scope", "Space-separated scope names."),
            ("state", "Returned unchanged."), ("resource", "RFC 8707: the token's audience."),
        )
    ]
    return {
        f"{p}/auth/register": {"post": _op(
            "Register a desktop agent (RFC 7591 dynamic client registration, public clients)",
            {"201": _json(_ref("ClientRegistration"), "Registered; unused registrations expire after 24 hours."),
             "400": _json(_ref("OAuthError"), "invalid_redirect_uri / invalid_client_metadata"),
             **_errors("405", "413", "429", "500", "503")},
            tag="auth", operationId="registerClient", requestBody=_body("ClientRegistrationRequest"),
        )},
        f"{p}/auth/authorize": {
            "get": _op(
                "Authorization endpoint (authorization code with PKCE): operator sign-in and consent page",
                {"200": _html("The consent page: the client's name, the scopes, the resource."),
                 "302": redirect, "303": redirect,
                 "400": _html("Unknown client or unregistered redirect URI (never redirected)."),
                 **_errors("405", "429", "500", "503")},
                tag="auth", operationId="authorize", parameters=query,
                description="A browser page, not an API call: docs/console.md.",
            ),
            "post": _op(
                "The consent form's answer (approve or deny)",
                {"303": redirect,
                 "400": _html("Unknown client or unregistered redirect URI."),
                 "403": _html("No operator session, or the form's CSRF token is missing."),
                 **_errors("405", "413", "429", "500", "503")},
                tag="auth", operationId="authorizeDecision",
                requestBody={"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "properties": {"decision": {"type": "string", "enum": ["approve", "deny"]},
                                                     "csrf_token": {"type": "string"}}}}}},
            ),
        },
    }


def build_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "UAIP Hub",
            "version": version,
            "description": "REST hub through which AI agents find, inspect and command IoT devices. Every response "
            "carries `X-Request-ID`; rate-limited responses carry `X-RateLimit-*` (docs/rate-limits.md).",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in ("auth", "clients", "audit", "devices", "device-types", "commands",
                                             "events", "things", "mcp", "discovery", "system")],
        "paths": {**_paths(), **_typed_paths(), **_state_paths(), **_client_paths(), **_authorization_paths()},
        "components": {
            "schemas": {**_schemas(), **_client_schemas(), **_authorization_schemas()},
            "securitySchemes": _security_schemes(),
        },
    }


@blueprint.get(OPENAPI_PATH)
def openapi_document():
    return jsonify(current_app.extensions["uaip.openapi"])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uaip-hub")
    except PackageNotFoundError:
        return "0.0.0"


def init_app(app: Flask) -> None:
    app.extensions["uaip.openapi"] = build_document(_version())
    app.register_blueprint(blueprint, url_prefix=API_PREFIX)
