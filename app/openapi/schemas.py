"""The OpenAPI component schemas of the hub's core resources: devices, messages, device types, OAuth and MCP bodies;
request schemas come from the pydantic models."""

from __future__ import annotations

from typing import Any

from app.api.models import (
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
from app.core.statuses import STATUSES as MESSAGE_STATUSES
from app.openapi.common import _model_schemas, _page, _ref
from app.openapi.governance import _authorization_schemas
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
