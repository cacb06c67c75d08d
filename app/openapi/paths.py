"""The OpenAPI paths of the hub's core routes: auth, devices, commands and messages, device types, Thing
Descriptions, the MCP endpoint, discovery and system."""

from __future__ import annotations

from typing import Any

from app.api.models import (
    MAX_COMMAND_NAME,
    MAX_TTL_MS,
    MAX_WAIT_SECONDS,
    MIN_TTL_MS,
    TYPE_NAME_PATTERN,
)
from app.core.statuses import DEVICE_STATUSES
from app.core.statuses import STATUSES as MESSAGE_STATUSES
from app.openapi.common import (
    _COMMON_HEADERS,
    AUTHED,
    BEARER,
    DEVICE_ID,
    DEVICE_OR_BEARER,
    ETAG,
    LIMIT,
    LOCATION,
    MESSAGE_ID,
    OFFSET,
    OPENAPI_PATH,
    WITH_BODY,
    _body,
    _error,
    _errors,
    _json,
    _op,
    _param,
    _ref,
)
from app.schemas.resources import (
    OBJECT,
)
from app.schemas.thing_description import MEDIA_TYPE as TD_MEDIA_TYPE
from app.web.urls import API_PREFIX


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
