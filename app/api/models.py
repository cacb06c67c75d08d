"""Request bodies and identifier types of the HTTP API, shared with the MCP tools and the relay.

Views import their bodies from here, and so do the MCP tools (the same arguments, the same limits) and the relay (an
ack on NATS is validated like one over REST), so none of them has to import a view module. The OpenAPI document
derives the request schemas from these models.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic

from app.core.json_input import IDENTIFIER_PATTERN, StrictModel
from app.core.text import scrub, visible_name, without_controls
from app.schemas.resources import COMMAND_NAME_PATTERN, PROPERTY_NAME_PATTERN, TYPE_NAME_PATTERN
from app.schemas.rules import MAX_SCHEMA_BYTES

PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
DeviceId = Annotated[str, pydantic.StringConstraints(pattern=IDENTIFIER_PATTERN)]


# A new device's id: the identifier alphabet, and NATS-safe. The id becomes tokens of `uaip.devices.{id}.…`, so a
# leading or trailing "." or ".." (an empty subject token) is refused at registration; every other id works end to
# end over NATS. Ids in paths keep the plain identifier rule, so a device registered before this rule stays
# reachable over REST.
NEW_DEVICE_ID_PATTERN = r"^[A-Za-z0-9_:-]+(?:\.[A-Za-z0-9_:-]+)*$"
NEW_DEVICE_ID = re.compile(NEW_DEVICE_ID_PATTERN)


def _nats_safe_device_id(value: str) -> str:
    if len(value) > 128 or not NEW_DEVICE_ID.fullmatch(value):
        raise ValueError(
            "must be 1-128 of the characters A-Z a-z 0-9 . _ : - without a leading or trailing '.' and without '..'"
        )
    return value


NewDeviceId = Annotated[
    str, pydantic.AfterValidator(_nats_safe_device_id),
    pydantic.WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 128, "pattern": NEW_DEVICE_ID_PATTERN}),
]


def _visible(value: str) -> str:
    """Names, types, capabilities and locations are shown to people and AI agents: characters that do not show (or
    change how the text around them reads) are removed at input, the rule the MCP tools apply to everything they
    return (app/core/text.py), so what is stored is what everyone sees. Control characters (C0, DEL) are refused
    before this, by the PRINTABLE pattern; a value left empty is refused."""
    clean = without_controls(value)
    if value and not clean:
        raise ValueError("must contain visible characters")
    return clean


def _visible_location(value: dict[str, Any]) -> dict[str, Any]:
    """A location object: every key and string inside it, as a location string (keys that would then collide are
    refused earlier, for the whole body: app/web/parsing.py)."""
    return scrub(value)


Visible = pydantic.AfterValidator(_visible)
Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE), Visible]
DeviceType = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE), Visible]
# An API client's name: the device-name rule, then trimmed as client names always were (app/core/text.py).
ClientName = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE,
                                                       strip_whitespace=True), pydantic.AfterValidator(visible_name)]
Capability = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64, pattern=PRINTABLE), Visible]
Capabilities = Annotated[list[Capability], pydantic.Field(max_length=64)]
Location = (Annotated[str, pydantic.StringConstraints(max_length=256, pattern=PRINTABLE), Visible]
            | Annotated[dict[str, Any], pydantic.AfterValidator(_visible_location)] | None)


class DeviceReplace(StrictModel):
    """Body of PUT /devices/{id}: every mutable field; omitted optional ones are reset."""

    name: Name
    device_type: DeviceType
    capabilities: Capabilities = []
    location: Location = None
    metadata: dict[str, Any] = {}


class DeviceCreate(DeviceReplace):
    """Body of POST /devices: the mutable fields and an optional `device_id` (generated when absent)."""

    device_id: NewDeviceId | None = None


class DevicePatch(StrictModel):
    """Body of PATCH /devices/{id}: only the fields given change."""

    name: Name | None = None
    device_type: DeviceType | None = None
    capabilities: Capabilities | None = None
    location: Location = None
    metadata: dict[str, Any] | None = None

    @pydantic.model_validator(mode="after")
    def _no_null_for_required(self):
        for field in ("name", "device_type", "capabilities", "metadata"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class Heartbeat(pydantic.BaseModel):
    """Optional body of POST /devices/{id}/heartbeat; extra telemetry fields are accepted and ignored."""

    model_config = pydantic.ConfigDict(strict=True, extra="allow")
    status: Literal["online", "error"] = "online"


MAX_COMMANDS = 64
MAX_DESCRIPTION = 1024
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # printable, tabs and line breaks allowed
TypeName = Annotated[str, pydantic.StringConstraints(pattern=TYPE_NAME_PATTERN)]
DeclaredCommandName = Annotated[str, pydantic.StringConstraints(pattern=COMMAND_NAME_PATTERN)]
Description = Annotated[str, pydantic.StringConstraints(max_length=MAX_DESCRIPTION, pattern=TEXT)]


# Any JSON here: app/schema_rules.py says what is wrong with it, with INVALID_SCHEMA rather than a type error.
Schema = Annotated[Any, pydantic.WithJsonSchema({
    "type": "object",
    "description": f'A JSON Schema (draft 2020-12) whose root is {{"type": "object"}}; at most {MAX_SCHEMA_BYTES} '
                   "bytes, local $refs only (docs/device-types.md).",
})]


NO_PARAMS = {"type": "object", "additionalProperties": False}
TYPE_NAME = pydantic.TypeAdapter(TypeName)


class CommandDeclaration(StrictModel):
    """One command of a type. Without `params` the command takes none (`{}` only)."""

    description: Description = ""
    params: Schema = NO_PARAMS
    result: Schema = None
    safe: bool = False
    idempotent: bool = False


MAX_PROPERTIES = 128
RESERVED_PROPERTIES = ("status", "last_seen")  # the Thing Description's own properties of every device
MAX_UNIT = 64


class PropertyDeclaration(StrictModel):
    """One state property of a type (docs/state.md). Checked by the view, so a bad one is INVALID_SCHEMA naming
    the property; without `schema` any JSON value is allowed."""

    description: Description = ""
    schema_: Schema = pydantic.Field({}, alias="schema")
    writable: bool = False
    observable: bool = True
    unit: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=MAX_UNIT, pattern=TEXT)] | None = None


PropertiesSchema = Annotated[dict[str, Any], pydantic.WithJsonSchema({
    "type": "object",
    "description": f"State properties by name (at most {MAX_PROPERTIES}; names {PROPERTY_NAME_PATTERN}, not "
                   "status or last_seen), each {description, schema, writable, observable, unit} "
                   "(docs/state.md).",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "schema": {"description": "A JSON Schema (draft 2020-12) of the value, of any type."},
            "writable": {"type": "boolean", "default": False},
            "observable": {"type": "boolean", "default": True},
            "unit": {"type": "string", "maxLength": MAX_UNIT},
        },
        "additionalProperties": False,
    },
})]


class DeviceTypeBody(StrictModel):
    """Body of PUT /device-types/{device_type}: the whole declaration (it replaces the previous one)."""

    description: Description = ""
    commands: Annotated[dict[DeclaredCommandName, CommandDeclaration], pydantic.Field(max_length=MAX_COMMANDS)]
    properties: PropertiesSchema = {}


MAX_WAIT_SECONDS = 30
MIN_TTL_MS = 1_000
MAX_TTL_MS = 86_400_000
MAX_IDEMPOTENCY_KEY = 128
MAX_COMMAND_NAME = 128


# As CommandName: printable. %-formatting, because an f-string would double the quantifier's braces.
COMMAND_IN_PATH = re.compile(r"[^\x00-\x1f\x7f]{1,%d}" % MAX_COMMAND_NAME)  # noqa: UP031
CommandName = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=MAX_COMMAND_NAME, pattern=PRINTABLE)]
Qos = Literal[0, 1, 2]
Priority = Annotated[int, pydantic.Field(ge=0, le=10)]
TtlMs = Annotated[int, pydantic.Field(ge=MIN_TTL_MS, le=MAX_TTL_MS)]
ErrorText = Annotated[str, pydantic.StringConstraints(max_length=4096)]


class CommandCreate(StrictModel):
    """Body of POST /devices/{id}/command. `action` is the old hub's name for `command`."""

    command: CommandName | None = None
    action: CommandName | None = None
    params: dict[str, Any] = {}
    qos: Qos = 1
    priority: Priority = 5
    ttl_ms: TtlMs | None = None

    @pydantic.model_validator(mode="after")
    def _one_name(self):
        if self.command is None and self.action is None:
            raise ValueError("command (or action) is required")
        if self.command is not None and self.action is not None and self.command != self.action:
            raise ValueError("command and action differ; send one of them")
        return self


class MessageCreate(StrictModel):
    """Body of POST /messages: route `payload` to device `destination` as a command."""

    source: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE),
                      Visible] | None = None
    destination: DeviceId
    payload: dict[str, Any]
    qos: Qos = 1
    priority: Priority = 5
    ttl_ms: TtlMs | None = None


class AckBody(StrictModel):
    """Body of POST /messages/{id}/ack (and of acks on NATS, where unknown fields are ignored)."""

    status: Literal["acknowledged", "completed", "failed"]
    result: Any = None
    error: ErrorText | None = None
