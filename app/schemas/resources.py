"""JSON Schemas of the hub's resources (device, message, device type) as clients receive them: the OpenAPI
document and the MCP tools' outputSchema both use these, so the two descriptions cannot drift apart."""

from __future__ import annotations

from typing import Any

from app.core.json_input import IDENTIFIER_PATTERN
from app.core.statuses import DEVICE_STATUSES, EVENT_TYPES
from app.core.statuses import STATUSES as MESSAGE_STATUSES

TYPE_NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
COMMAND_NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
PROPERTY_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIMESTAMP = {"type": "string", "format": "date-time"}


OBJECT = {"type": "object", "additionalProperties": True}


def object_schema(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


# The wire shapes of a device (§4), a message (§5) and a device type (§8), shared with the MCP tools' output
# schemas (app/mcp/tools.py).
DEVICE_SCHEMA = object_schema(
    {
        "device_id": {"type": "string", "pattern": IDENTIFIER_PATTERN},
        "name": {"type": "string"},
        "device_type": {"type": "string"},
        "status": {"type": "string", "enum": list(DEVICE_STATUSES)},
        "capabilities": {"type": "array", "items": {"type": "string"}},
        "location": {"anyOf": [{"type": "string"}, OBJECT, {"type": "null"}]},
        "metadata": OBJECT,
        "last_seen": nullable(TIMESTAMP),
        "registered_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "version": {"type": "integer", "minimum": 1},
    }
)


MESSAGE_SCHEMA = object_schema(
    {
        "message_id": {"type": "string"},
        "device_id": {"type": "string"},
        "command": {"type": "string"},
        "params": {"description": "The command's parameters, as sent."},
        "qos": {"type": "integer", "enum": [0, 1, 2]},
        "priority": {"type": "integer", "minimum": 0, "maximum": 10},
        "status": {"type": "string", "enum": list(MESSAGE_STATUSES)},
        "result": {"description": "What the device reported with its final acknowledgement (any JSON value), or null."},
        "error": {"type": ["string", "null"]},
        "created_at": TIMESTAMP,
        "sent_at": nullable(TIMESTAMP),
        "acknowledged_at": nullable(TIMESTAMP),
        "completed_at": nullable(TIMESTAMP),
        "expires_at": TIMESTAMP,
        "request_id": {"type": ["string", "null"]},
    },
    required=["message_id", "device_id", "command", "status", "created_at", "expires_at"],
)


DEVICE_TYPE_SCHEMA = object_schema(
    {
        "device_type": {"type": "string", "pattern": TYPE_NAME_PATTERN},
        "description": {"type": "string"},
        "commands": {
            "type": "object",
            "propertyNames": {"pattern": COMMAND_NAME_PATTERN},
            "additionalProperties": object_schema(
                {
                    "description": {"type": "string"},
                    "params": {"type": "object", "description": "JSON Schema (2020-12) of the params."},
                    "result": {"type": "object", "description": "JSON Schema of the result (advisory)."},
                    "safe": {"type": "boolean"},
                    "idempotent": {"type": "boolean"},
                },
                required=["description", "params", "safe", "idempotent"],
            ),
        },
        "properties": {
            "type": "object",
            "description": "State properties (docs/state.md): what devices of this type report, and which of them "
                           "agents may set (writable).",
            "propertyNames": {"pattern": PROPERTY_NAME_PATTERN},
            "additionalProperties": object_schema(
                {
                    "description": {"type": "string"},
                    "schema": {"description": "JSON Schema (2020-12) of the value, of any type."},
                    "writable": {"type": "boolean"},
                    "observable": {"type": "boolean"},
                    "unit": {"type": "string"},
                },
                required=["description", "schema", "writable", "observable"],
            ),
        },
        "version": {"type": "integer", "minimum": 1},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    }
)


# An event of the event log (docs/events.md) and a page of them (long poll and the MCP tool wait_for_events).
EVENT_SCHEMA = object_schema(
    {
        "id": {"type": "string", "description": "Opaque cursor: resume after this event with it."},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "device_id": {"type": "string"},
        "at": TIMESTAMP,
        "data": {**OBJECT, "description": "`device.*`: the device after the change (no secret); `command.status`: "
                 "`{message_id, command, status, result, error}`; `state.*`: `{version, changed}`."},
    }
)


EVENT_PAGE_SCHEMA = object_schema(
    {
        "events": {"type": "array", "items": EVENT_SCHEMA},
        "next": {"type": "string", "description": "Cursor to resume from (also after an empty page)."},
        "reset": {"type": "boolean", "const": True,
                  "description": "Present when `after` had expired: the page starts at the current end."},
    },
    required=["events", "next"],
)


# A device's state (docs/state.md), shared by GET /devices/{id}/state and the MCP tools get_state / set_desired.
STATE_SCHEMA = object_schema(
    {
        "device_id": {"type": "string"},
        "reported": {**OBJECT, "description": "What the device last reported, by property."},
        "desired": {**OBJECT, "description": "What agents want the device's properties to be."},
        "delta": {**OBJECT, "description": "The desired members whose value differs from the reported one."},
        "metadata": object_schema({
            "reported": {"type": "object", "additionalProperties": object_schema({"timestamp": TIMESTAMP})},
            "desired": {"type": "object", "additionalProperties": object_schema(
                {"timestamp": TIMESTAMP, "client_id": {"type": ["string", "null"]}})},
        }),
        "version": {"type": "integer", "minimum": 0},
        "updated_at": nullable(TIMESTAMP),
    }
)

STATE_HISTORY_SCHEMA = object_schema(
    {
        "device_id": {"type": "string"},
        "property": {"type": "string"},
        "points": {"type": "array", "items": object_schema(
            {"timestamp": TIMESTAMP, "value": {"description": "The reported value (or the bucket's aggregate)."}})},
        "next_cursor": {"type": ["string", "null"]},
    }
)
