"""Commands and messages (docs/api.md, "Commands and messages"): submit, read, list per device, acknowledge.

Views parse and validate, call one function of app/services/commands.py, and answer. `?wait=N` holds the
request's gthread thread for up to N seconds, within per-process and per-client bounds (see Waiters).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic
from flask import Blueprint, current_app, g, jsonify, request

from app.api.devices import PRINTABLE, DeviceId, checked_device_id, device_secret_lookup
from app.db import get_db
from app.errors import APIError
from app.messaging import get_messaging
from app.security import device_or_scope, require_device_self, require_scope
from app.services import commands
from app.services.command_statuses import STATUSES as COMMAND_STATUSES
from app.validation import (
    InvalidJSON,
    StrictModel,
    decode_json,
    has_body,
    json_body,
    parse_model,
    query_choice,
    query_int,
    validation_details,
)

blueprint = Blueprint("messages", __name__)

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

    source: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)] | None = None
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


def _settings():
    return current_app.config["SETTINGS"]


def _idempotency(route: str, body: Any) -> commands.Idempotency | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise APIError(
            400, "VALIDATION_ERROR", "The Idempotency-Key header is invalid.",
            {"Idempotency-Key": f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"},
        )
    return commands.Idempotency(g.principal.subject, key, commands.request_hash(route, body))


def deliver(
    spec: commands.CommandSpec, *, client_id: str, wait_seconds: int, idempotency: commands.Idempotency | None,
) -> tuple[commands.Submitted, dict[str, Any] | None]:
    """Submit a command and, with `wait_seconds`, wait that long for its final state: what every entry point that
    sends commands (REST and MCP's send_command) does. Returns the submit and the final message (None: not final
    in time, or no wait)."""
    settings = _settings()
    submitted = commands.submit_command(
        get_db(), get_messaging(), spec,
        client_id=client_id, request_id=g.get("request_id"), idempotency=idempotency,
        max_pending=settings.max_pending_commands_per_device, heartbeat_timeout=settings.heartbeat_timeout_seconds,
        retry_seconds=settings.command_retry_seconds,
    )
    finished = None
    if wait_seconds:
        finished = waiters().wait(get_db(), submitted.message_id, wait_seconds, client_id=client_id)
    return submitted, finished


def _submit(spec: commands.CommandSpec, route: str, raw_body: Any):
    wait = query_int("wait", 0, 0, MAX_WAIT_SECONDS)
    idempotency = _idempotency(route, raw_body)
    submitted, finished = deliver(spec, client_id=g.principal.subject, wait_seconds=wait, idempotency=idempotency)
    location = f"/api/v1/messages/{submitted.message_id}"
    response = jsonify(finished if finished is not None else submitted.body)
    response.status_code = 200 if finished is not None else 202
    response.headers["Location"] = location
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def waiters() -> commands.Waiters:
    extensions = current_app.extensions
    if "uaip.waiters" not in extensions:
        settings = _settings()
        extensions.setdefault("uaip.waiters", commands.Waiters(
            get_messaging(), settings.max_waiters, settings.max_waiters_per_client))
    return extensions["uaip.waiters"]


@blueprint.post("/devices/<device_id>/command")
@require_scope("device:command")
def send_command(device_id: str):
    raw = json_body()
    body = parse_model(CommandCreate, raw)
    device_id = checked_device_id(device_id)
    spec = commands.CommandSpec(
        device_id=device_id, command=body.command or body.action, params=body.params, qos=body.qos,
        priority=body.priority, ttl_ms=body.ttl_ms or _settings().default_message_ttl_ms,
    )
    return _submit(spec, f"device:{device_id}", raw)


@blueprint.post("/messages")
@require_scope("device:command")
def send_message():
    raw = json_body()
    body = parse_model(MessageCreate, raw)
    payload = body.payload
    name = payload.get("command", payload.get("action"))
    if isinstance(name, str) and name:
        command, params, where = name, payload.get("params", {}), "/payload/params"
    else:
        command, params, where = "message", payload, "/payload"
    spec = commands.CommandSpec(
        device_id=body.destination, command=command[:128], params=params, qos=body.qos, priority=body.priority,
        ttl_ms=body.ttl_ms or _settings().default_message_ttl_ms, source=body.source, pointer_prefix=where,
    )
    return _submit(spec, "messages", raw)


def _action_params() -> dict[str, Any]:
    """The action route's body is the params object itself; an empty body means `{}`."""
    if not has_body():
        return {}
    params = json_body()
    if not isinstance(params, dict):
        raise APIError(400, "VALIDATION_ERROR", "The request body must be a JSON object: the command's params.",
                       {"body": "must be an object"})
    return params


@blueprint.post("/devices/<device_id>/commands/<command>")
@require_scope("device:command")
def invoke_action(device_id: str, command: str):
    """A Thing Description's action form: POST the params, the rest of the command in the query string."""
    params = _action_params()
    if not COMMAND_IN_PATH.fullmatch(command):
        raise APIError(400, "VALIDATION_ERROR", "The command name in the path is invalid.",
                       {"command": f"must be 1-{MAX_COMMAND_NAME} printable characters"})
    qos = query_int("qos", 1, 0, 2)
    priority = query_int("priority", 5, 0, 10)
    ttl_ms = query_int("ttl_ms", 0, MIN_TTL_MS, MAX_TTL_MS) or None
    device_id = checked_device_id(device_id)
    spec = commands.CommandSpec(
        device_id=device_id, command=command, params=params, qos=qos, priority=priority,
        ttl_ms=ttl_ms or _settings().default_message_ttl_ms, pointer_prefix="",
    )
    # For Idempotency-Key, "the same body" is the params plus the command's query values as given.
    given = {name: value for name, value in (("qos", qos), ("priority", priority), ("ttl_ms", ttl_ms))
             if request.args.get(name, "") != ""}
    return _submit(spec, f"action:{device_id}:{command}", {"params": params, "query": given})


@blueprint.get("/messages/<message_id>")
@require_scope("message:read")
def get_message(message_id: str):
    return jsonify(commands.get_message(get_db(), message_id))


@blueprint.get("/devices/<device_id>/commands")
@device_or_scope("device:read", device_secret_lookup)
def list_commands(device_id: str):
    device_id = checked_device_id(device_id)
    require_device_self(device_id)
    limit = query_int("limit", 100, 1, 1000)
    offset = query_int("offset", 0, 0, 10_000_000)
    items, total = commands.list_device_commands(
        get_db(), device_id, status=query_choice("status", COMMAND_STATUSES), limit=limit, offset=offset
    )
    return jsonify({"commands": items, "total": total, "limit": limit, "offset": offset})


@blueprint.post("/messages/<message_id>/ack")
@device_or_scope("admin", device_secret_lookup)
def acknowledge(message_id: str):
    """Device Basic auth (the device must own the message); an admin token may ack on a device's behalf."""
    body = parse_model(AckBody, json_body())
    if g.principal.kind == "device":
        owner = g.principal.subject
    else:
        owner = commands.get_message(get_db(), message_id)["device_id"]
    ack = commands.Ack(owner, message_id, body.status, body.result, body.error)
    return jsonify(commands.acknowledge(get_db(), get_messaging(), ack))


def ack_from_nats(device_id: str, data: bytes) -> commands.Ack:
    """An ack published on `uaip.devices.{id}.acks`, decoded and validated like the REST body (unknown fields
    ignored). Raises InvalidJSON saying what is wrong, so the relay can drop this one message and log why."""
    raw = decode_json(data)
    if not isinstance(raw, dict) or not isinstance(raw.get("message_id"), str):
        raise InvalidJSON("An ack must be a JSON object with a string message_id.")
    try:
        body = AckBody.model_validate({key: raw[key] for key in ("status", "result", "error") if key in raw})
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{field}: {text}" for field, text in validation_details(exc).items())
        raise InvalidJSON(f"The ack is invalid ({problems}).") from None
    return commands.Ack(device_id, raw["message_id"], body.status, body.result, body.error)
