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
from app.api.things import PROPERTIES
from app.auth.tokens import SCOPES
from app.core.json_input import IDENTIFIER_PATTERN
from app.core.statuses import DEVICE_STATUSES
from app.core.statuses import STATUSES as MESSAGE_STATUSES
from app.schemas.resources import DEVICE_SCHEMA, DEVICE_TYPE_SCHEMA, MESSAGE_SCHEMA, OBJECT, TIMESTAMP, object_schema
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
                                                     "invalid_redirect_uri", "invalid_client_metadata"]},
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


BEARER = [{"bearerAuth": []}]


DEVICE_OR_BEARER = [{"deviceBasic": []}, {"bearerAuth": []}]


def _op(
    summary: str, responses: dict[str, Any], *, tag: str, security=None, scope: str | None = None, **extra,
) -> dict[str, Any]:
    description = extra.pop("description", "")
    if scope:
        description = (description + "\n\n" if description else "") + f"Scope: `{scope}` (or `admin`)."
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses, **extra}
    if description:
        operation["description"] = description
    operation["security"] = security if security is not None else []
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
        requestBody={
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": _ref("TokenRequest")},
                "application/json": {"schema": _ref("TokenRequest")},
            },
        },
    )
    device_list_query = [
        _param("status", "query", {"type": "string", "enum": list(DEVICE_STATUSES)}, "Effective status."),
        _param("type", "query", {"type": "string", "maxLength": 64}, "device_type equals."),
        _param("capability", "query", {"type": "string", "maxLength": 64}, "Has this capability."),
        LIMIT,
        OFFSET,
    ]
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
    from app.api.discovery import AUTHORIZATION_SERVER, PROTECTED_RESOURCE
    from app.web.urls import MCP_PATH

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
            "parameters": [DEVICE_ID,
                           _param("name", "path", {"type": "string", "enum": list(PROPERTIES)}, "Property.")],
            "get": _op(
                "Read one Thing Description property: the bare JSON value",
                {"200": _json({"type": ["string", "null"]}, "`status` (a string) or `last_seen` (RFC 3339 or null)."),
                 **_errors(*AUTHED)},
                tag="things", security=BEARER, scope="device:read", operationId="readProperty",
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
        "tags": [{"name": name} for name in ("auth", "devices", "device-types", "commands", "things", "mcp",
                                             "discovery", "system")],
        "paths": {**_paths(), **_typed_paths(), **_authorization_paths()},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "deviceBasic": {"type": "http", "scheme": "basic", "description": "device_id:device_secret"},
                "clientBasic": {"type": "http", "scheme": "basic", "description": "client_id:client_secret"},
            },
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
