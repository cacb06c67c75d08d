"""The hub's MCP tools: a small fixed set (list_devices, get_device, send_command, get_command,
wait_for_events, and for device state get_state, set_desired, get_state_history), each a thin adapter
over the same services the REST blueprints call.

Each tool declares the scope it needs, a pydantic model for its arguments (the model is the `inputSchema`, so the
schema cannot drift from validation), an `outputSchema` its `structuredContent` always matches, and annotations
that say what it does to the world. Names, titles and descriptions are fixed text written here; device and
client data only ever appears inside results, scrubbed (app/core/text.py).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import psycopg2
import pydantic
from flask import current_app

from app.api.models import (
    MAX_IDEMPOTENCY_KEY,
    MAX_WAIT_SECONDS,
    Capability,
    CommandName,
    DeviceId,
    DeviceType,
    Priority,
    Qos,
    TtlMs,
)
from app.auth.tokens import Principal
from app.core.errors import APIError
from app.core.json_input import StrictModel
from app.core.statuses import DEVICE_STATUSES, EVENT_TYPES
from app.core.text import scrub
from app.infra.db import DatabaseUnavailable, get_db
from app.schemas.resources import (
    DEVICE_SCHEMA,
    DEVICE_TYPE_SCHEMA,
    EVENT_PAGE_SCHEMA,
    MESSAGE_SCHEMA,
    STATE_HISTORY_SCHEMA,
    STATE_SCHEMA,
)
from app.services import device_types, event_log, registry, state, state_history
from app.services.commands import messages, submit
from app.services.state_model import parse_timestamp
from app.web import device_state, event_follow
from app.web.delivery import deliver
from app.web.parsing import refuse_colliding_keys

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 50
MAX_EVENTS_LIMIT = 100


@dataclass(frozen=True)
class Caller:
    """Who calls a tool: the token's principal, and the request id that error bodies and commands carry."""

    principal: Principal
    request_id: str | None


# --- arguments -----------------------------------------------------------------------------------------


class ListDevicesArguments(StrictModel):
    type: DeviceType | None = pydantic.Field(None, description="Only devices of this device_type.")
    status: Literal[DEVICE_STATUSES] | None = pydantic.Field(None, description="Only devices with this status.")
    capability: Capability | None = pydantic.Field(None, description="Only devices that have this capability.")
    limit: Annotated[int, pydantic.Field(ge=1, le=MAX_LIST_LIMIT)] = pydantic.Field(20, description="Page size.")
    offset: Annotated[int, pydantic.Field(ge=0, le=10_000_000)] = pydantic.Field(0, description="Devices to skip.")


class DeviceArguments(StrictModel):
    device_id: DeviceId = pydantic.Field(description="The device's id.")


IdempotencyKey = Annotated[str, pydantic.StringConstraints(pattern=rf"^[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}$")]


class SendCommandArguments(StrictModel):
    device_id: DeviceId = pydantic.Field(description="The device to command.")
    command: CommandName = pydantic.Field(description="The command's name (see the device type's commands).")
    params: dict[str, Any] = pydantic.Field({}, description="The command's parameters, an object.")
    qos: Qos = pydantic.Field(1, description="0: deliver now or refuse if the device is offline; 1 or 2 (default "
                              "1): keep and re-send until acknowledged or expired.")
    priority: Priority = pydantic.Field(5, description="0-10, higher first when commands queue up.")
    ttl_ms: TtlMs | None = pydantic.Field(None, description="Milliseconds before an unfinished command expires "
                                          "(default: the hub's DEFAULT_MESSAGE_TTL_MS).")
    wait_seconds: Annotated[int, pydantic.Field(ge=0, le=MAX_WAIT_SECONDS)] = pydantic.Field(
        0, description="Wait up to this many seconds for the device's result (0: return once sent)."
    )
    idempotency_key: IdempotencyKey | None = pydantic.Field(
        None, description="Printable ASCII, at most 128 characters: a retry with the same key and arguments within "
        "24 hours returns the first command instead of sending another."
    )


class CommandArguments(StrictModel):
    message_id: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)] = pydantic.Field(
        description="The message_id send_command returned."
    )


DeviceIds = Annotated[list[DeviceId], pydantic.Field(min_length=1, max_length=event_follow.MAX_DEVICE_IDS)]


class WaitForEventsArguments(StrictModel):
    after: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64)] | None = pydantic.Field(
        None, description="The `next` of the previous call (or an event's id): continue after it. Leave it out to "
        "start from now (the answer is then empty, with the `next` to use)."
    )
    types: Annotated[list[Literal[EVENT_TYPES]], pydantic.Field(min_length=1)] | None = pydantic.Field(
        None, description="Only these event types (command.status needs the message:read scope)."
    )
    device_ids: DeviceIds | None = pydantic.Field(None, description="Only events of these devices (at most 100).")
    wait_seconds: Annotated[int, pydantic.Field(ge=0, le=MAX_WAIT_SECONDS)] = pydantic.Field(
        0, description="When nothing is there yet, wait up to this many seconds (0-30) for an event."
    )
    limit: Annotated[int, pydantic.Field(ge=1, le=MAX_EVENTS_LIMIT)] = pydantic.Field(
        100, description="At most this many events per call (1-100)."
    )


class GetStateArguments(StrictModel):
    device_id: DeviceId = pydantic.Field(description="The device's id.")


class SetDesiredArguments(StrictModel):
    device_id: DeviceId = pydantic.Field(description="The device whose desired state to change.")
    desired: dict[str, Any] = pydantic.Field(description="A JSON merge patch of the desired state: members to set "
                                             "(objects merge into objects), null to remove a member.")
    if_version: Annotated[int, pydantic.Field(ge=0)] | None = pydantic.Field(
        None, description="Only if the state is still at this version (from get_state); else nothing changes.")


class GetStateHistoryArguments(StrictModel):
    device_id: DeviceId = pydantic.Field(description="The device's id.")
    property: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256)] = pydantic.Field(
        description="The reported property whose history to read.")
    from_: str | None = pydantic.Field(None, alias="from", description="RFC 3339 start (inclusive).")
    to: str | None = pydantic.Field(None, description="RFC 3339 end (exclusive).")
    limit: Annotated[int, pydantic.Field(ge=1, le=1000)] = pydantic.Field(100, description="Points (or buckets) "
                                                                          "per page.")
    cursor: Annotated[str, pydantic.StringConstraints(max_length=64)] | None = pydantic.Field(
        None, description="next_cursor of the previous page.")
    bucket: Annotated[int, pydantic.Field(ge=1, le=366 * 24 * 3600)] | None = pydantic.Field(
        None, description="Bucket size in seconds (aligned to the Unix epoch): one point per non-empty bucket.")
    agg: Literal["avg", "min", "max", "last"] | None = pydantic.Field(
        None, description="Aggregate per bucket (default last); avg, min and max need numeric values.")


# --- what the tools do ---------------------------------------------------------------------------------


def _settings():
    return current_app.config["SETTINGS"]


def list_devices(arguments: ListDevicesArguments, _caller: Caller) -> dict[str, Any]:
    devices, total = registry.list_devices(
        get_db(), status=arguments.status, device_type=arguments.type, capability=arguments.capability,
        limit=arguments.limit, offset=arguments.offset, timeout=_settings().heartbeat_timeout_seconds,
    )
    summary = [{key: device[key] for key in ("device_id", "name", "device_type", "status")} for device in devices]
    return {"devices": summary, "total": total, "limit": arguments.limit, "offset": arguments.offset}


def get_device(arguments: DeviceArguments, _caller: Caller) -> dict[str, Any]:
    device, device_type = device_types.get_device_with_type(
        get_db(), arguments.device_id, _settings().heartbeat_timeout_seconds
    )
    return {"device": device, "device_type": device_type}


def send_command(arguments: SendCommandArguments, caller: Caller) -> dict[str, Any]:
    """Like POST /devices/{id}/command with `?wait=` and `Idempotency-Key`, through the same code path; returns the
    whole message, final or not."""
    refuse_colliding_keys(arguments.params, "params")
    spec = submit.CommandSpec(
        device_id=arguments.device_id, command=arguments.command, params=arguments.params, qos=arguments.qos,
        priority=arguments.priority, ttl_ms=arguments.ttl_ms or _settings().default_message_ttl_ms,
    )
    idempotency = None
    if arguments.idempotency_key is not None:
        # What "the same arguments" means: the command itself, not how long this caller waits for it.
        sent = arguments.model_dump(exclude={"idempotency_key", "wait_seconds"})
        idempotency = submit.Idempotency(
            caller.principal.subject, arguments.idempotency_key, submit.request_hash("mcp:send_command", sent)
        )
    submitted, finished = deliver(
        spec, client_id=caller.principal.subject, wait_seconds=arguments.wait_seconds, idempotency=idempotency
    )
    if finished is not None:
        return finished
    try:
        return messages.get_message(get_db(), submitted.message_id)
    except (DatabaseUnavailable, psycopg2.Error) as exc:
        # Once stored, always answered (docs/decisions.md): an error now would invite a retry, hence a second
        # actuation. The message as it was stored is known without reading it back.
        log.warning("reading the stored command back failed; answering with it as stored",
                    extra={"message_id": submitted.message_id, "error": str(exc).strip() or exc.__class__.__name__})
        return as_stored(spec, submitted, None if submitted.replayed else caller.request_id)


def as_stored(spec: submit.CommandSpec, submitted: submit.Submitted, request_id: str | None) -> dict[str, Any]:
    """The message (as GET /messages/{id} shows it) of a command just stored, from what its submit returned: no
    timestamps after `created_at`."""
    accepted = submitted.body
    return {
        "message_id": accepted["message_id"], "device_id": accepted["device_id"], "command": spec.command,
        "params": spec.params, "qos": spec.qos, "priority": spec.priority, "status": accepted["status"],
        "result": None, "error": None, "created_at": accepted["created_at"], "sent_at": None,
        "acknowledged_at": None, "completed_at": None, "expires_at": accepted["expires_at"], "request_id": request_id,
    }


def get_command(arguments: CommandArguments, _caller: Caller) -> dict[str, Any]:
    return messages.get_message(get_db(), arguments.message_id)


def wait_for_events(arguments: WaitForEventsArguments, caller: Caller) -> dict[str, Any]:
    """The REST long poll (GET /events with `after`, `wait`, `limit`), for a stateless agent that follows devices
    by passing back each answer's `next`."""
    filters = event_follow.filters_for(caller.principal, arguments.types, arguments.device_ids, None)
    page = event_follow.long_poll(caller.principal, event_log.parse_cursor(arguments.after), filters,
                                  limit=arguments.limit, wait=arguments.wait_seconds)
    return page.body()


def get_state(arguments: GetStateArguments, _caller: Caller) -> dict[str, Any]:
    return state.get_state(get_db(), arguments.device_id)


def set_desired(arguments: SetDesiredArguments, caller: Caller) -> dict[str, Any]:
    """Like PATCH /devices/{id}/state/desired with If-Match; pointers of value errors start at /desired."""
    refuse_colliding_keys(arguments.desired, "desired")  # as REST refuses such a body (app/web/parsing.py)
    expected = None if arguments.if_version is None else frozenset({arguments.if_version})
    return device_state.set_desired(arguments.device_id, arguments.desired, expected=expected,
                                    client_id=caller.principal.subject, prefix="/desired")


def _time_argument(name: str, value: str | None):
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise APIError(400, "VALIDATION_ERROR", f"Argument '{name}' is invalid.",
                       {name: "must be an RFC 3339 date-time with an offset"}) from None


def get_state_history(arguments: GetStateHistoryArguments, _caller: Caller) -> dict[str, Any]:
    query = state_history.Query(
        device_id=arguments.device_id, property=arguments.property, start=_time_argument("from", arguments.from_),
        end=_time_argument("to", arguments.to), limit=arguments.limit, cursor=arguments.cursor,
        bucket=arguments.bucket, agg=arguments.agg,
    )
    if query.agg is not None and query.bucket is None:
        raise APIError(400, "VALIDATION_ERROR", "Argument 'agg' needs 'bucket'.",
                       {"bucket": "required with agg: the bucket size in seconds"})
    state.get_state(get_db(), query.device_id)  # DEVICE_NOT_FOUND first
    return state_history.read_history(get_db(), query, _settings().state_history_hours)


# --- declarations --------------------------------------------------------------------------------------

DEVICE_SUMMARY = {
    "type": "object",
    "properties": {
        "device_id": DEVICE_SCHEMA["properties"]["device_id"],
        "name": {"type": "string"},
        "device_type": {"type": "string"},
        "status": DEVICE_SCHEMA["properties"]["status"],
    },
    "required": ["device_id", "name", "device_type", "status"],
}
READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    scope: str
    arguments: type[StrictModel]
    output_schema: dict[str, Any]
    annotations: dict[str, bool]
    run: Callable[[Any, Caller], dict[str, Any]]

    @functools.cached_property
    def definition(self) -> dict[str, Any]:
        """The tool as `tools/list` shows it (built once: the schemas never change while the process runs)."""
        input_schema = self.arguments.model_json_schema()
        input_schema.pop("title", None)
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": input_schema,
            "outputSchema": self.output_schema,
            "annotations": {"title": self.title, **self.annotations},
        }


TOOLS = {
    tool.name: tool
    for tool in (
        Tool(
            "list_devices", "List devices",
            "List the devices registered with the hub: id, name, device type and status of each, optionally "
            "filtered by type, status or capability, a page at a time (limit at most 50, then offset). Use "
            "get_device for one device's details and the commands it accepts.",
            "device:read", ListDevicesArguments,
            {
                "type": "object",
                "properties": {
                    "devices": {"type": "array", "items": DEVICE_SUMMARY},
                    "total": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
                "required": ["devices", "total", "limit", "offset"],
            },
            READ_ONLY, list_devices,
        ),
        Tool(
            "get_device", "Get a device",
            "Read one device: its registration (name, type, status, capabilities, location, metadata, last_seen) "
            "and its device type, which lists the commands the device accepts with a JSON Schema for each "
            "command's params. device_type is null when the type is not declared: such a device accepts any "
            "command name with any params object.",
            "device:read", DeviceArguments,
            {
                "type": "object",
                "properties": {"device": DEVICE_SCHEMA,
                               "device_type": {"anyOf": [DEVICE_TYPE_SCHEMA, {"type": "null"}]}},
                "required": ["device", "device_type"],
            },
            READ_ONLY, get_device,
        ),
        Tool(
            "send_command", "Send a command to a device",
            "Send a command to a device. The hub stores it, then delivers it; with wait_seconds (0-30) the call "
            "waits that long for the device's result. Returns the command as a message whose status is queued, "
            "sent, acknowledged, completed, failed, expired or cancelled; follow it with get_command. Params are "
            "checked against the device type's schema first: a refused command is not sent, and the error names "
            "each bad field. A retry with the same idempotency_key and arguments within 24 hours returns the "
            "first command instead of sending another.",
            "device:command", SendCommandArguments, MESSAGE_SCHEMA,
            # A command acts on a physical device: it may change or undo anything there, and repeating it repeats
            # the action (unless the caller passes an idempotency_key).
            {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True},
            send_command,
        ),
        Tool(
            "get_command", "Get a command",
            "Read a command sent earlier, by the message_id send_command returned: its status, the device's result "
            "or error, and when it was created, sent, acknowledged and completed.",
            "message:read", CommandArguments, MESSAGE_SCHEMA, READ_ONLY, get_command,
        ),
        Tool(
            "wait_for_events", "Wait for device events",
            "Follow what happens to devices: registrations, changes, deletions, devices going online or offline, "
            "state reports and desired state, and command status changes (the latter with the message:read scope). "
            "Call it first without `after`: it answers at once with no events and a `next`. Then call it again with "
            "`after` set to the last answer's `next`: you get every event since, exactly once, or with "
            "wait_seconds it waits for the next one. `reset: true` means `after` was too old (events are kept for "
            "a limited time): continue from the new `next`. Filter with types and device_ids.",
            "device:read", WaitForEventsArguments, EVENT_PAGE_SCHEMA, READ_ONLY, wait_for_events,
        ),
        Tool(
            "get_state", "Get a device's state",
            "Read a device's state: reported (what the device says, e.g. readings and settings in force), desired "
            "(what agents asked for), delta (desired values the device has not reported yet), when each member "
            "was set, and the state's version. get_device's device_type lists the declared properties and which "
            "are writable.",
            "device:read", GetStateArguments, STATE_SCHEMA, READ_ONLY, get_state,
        ),
        Tool(
            "set_desired", "Set a device's desired state",
            "Change what a device should be: desired is a JSON merge patch (members to set, null to remove one). "
            "The device is told and reports back when it has applied it (watch delta with get_state). For a "
            "declared device type only writable properties with valid values are accepted; errors name each bad "
            "member. With if_version the change applies only if the state is still at that version. Returns the "
            "new state.",
            "device:command", SetDesiredArguments, STATE_SCHEMA,
            # Setting the same values again changes nothing, but the device acts on what it is told.
            {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True, "openWorldHint": True},
            set_desired,
        ),
        Tool(
            "get_state_history", "Get a property's history",
            "Read the history of one reported property, oldest first: every change with its timestamp, or one "
            "point per time bucket (bucket in seconds, agg avg/min/max for numbers or last). Filter with from and "
            "to (RFC 3339), page with limit and next_cursor.",
            "device:read", GetStateHistoryArguments, STATE_HISTORY_SCHEMA, READ_ONLY, get_state_history,
        ),
    )
}

# What the MCP endpoint asks for (its discovery document's scopes_supported and its 401 challenge): the tools'
# scopes, never `admin` — an MCP client asks for every scope listed, and an agent needs no more than its tools do.
SCOPES_USED = tuple(dict.fromkeys(tool.scope for tool in TOOLS.values()))


def visible_tools(principal: Principal) -> list[Tool]:
    """The tools this caller's scopes allow, in a fixed order."""
    return [tool for tool in TOOLS.values() if principal.has_scope(tool.scope)]


# --- results -------------------------------------------------------------------------------------------


def _as_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def success(structured: dict[str, Any]) -> dict[str, Any]:
    """A CallToolResult: the scrubbed result as `structuredContent` and the same JSON as text."""
    clean = scrub(structured)
    return {"content": [{"type": "text", "text": _as_text(clean)}], "structuredContent": clean, "isError": False}


def failure(error: APIError, request_id: str | None) -> dict[str, Any]:
    """A tool failure the model can read and act on: the hub's error body (the REST envelope) as text."""
    body = scrub({"error": error.message, "code": error.code, "details": error.details, "request_id": request_id})
    return {"content": [{"type": "text", "text": _as_text(body)}], "isError": True}


def call(tool: Tool, arguments: Any, caller: Caller) -> dict[str, Any]:
    """Run `tool` with arguments already validated into its model; service errors become tool failures."""
    try:
        return success(tool.run(arguments, caller))
    except APIError as exc:
        return failure(exc, caller.request_id)
