"""Commands and messages (docs/api.md, "Commands and messages"): submit, read, list per device, acknowledge.

Views parse and validate, call one function of app/services/commands/, and answer. `?wait=N` holds the
request's gthread thread for up to N seconds, within per-process and per-client bounds (see Waiters).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from app.api.devices import checked_device_id, device_secret_lookup
from app.api.models import (
    COMMAND_IN_PATH,
    MAX_COMMAND_NAME,
    MAX_IDEMPOTENCY_KEY,
    MAX_TTL_MS,
    MAX_WAIT_SECONDS,
    MIN_TTL_MS,
    AckBody,
    CommandCreate,
    MessageCreate,
)
from app.core.errors import APIError
from app.core.statuses import STATUSES as COMMAND_STATUSES
from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.services.commands import acks, messages, submit
from app.web.authz import device_or_scope, require_device_self, require_scope
from app.web.delivery import deliver
from app.web.parsing import has_body, json_body, parse_model, query_choice, query_int

blueprint = Blueprint("messages", __name__)


def _settings():
    return current_app.config["SETTINGS"]


def _idempotency(route: str, body: Any) -> submit.Idempotency | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise APIError(
            400, "VALIDATION_ERROR", "The Idempotency-Key header is invalid.",
            {"Idempotency-Key": f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"},
        )
    return submit.Idempotency(g.principal.subject, key, submit.request_hash(route, body))



def _submit(spec: submit.CommandSpec, route: str, raw_body: Any):
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



@blueprint.post("/devices/<device_id>/command")
@require_scope("device:command")
def send_command(device_id: str):
    raw = json_body()
    body = parse_model(CommandCreate, raw)
    device_id = checked_device_id(device_id)
    spec = submit.CommandSpec(
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
    spec = submit.CommandSpec(
        device_id=body.destination, command=command[:128], params=params, qos=body.qos, priority=body.priority,
        ttl_ms=body.ttl_ms or _settings().default_message_ttl_ms, source=body.source, pointer_prefix=where,
    )
    return _submit(spec, "messages", raw)


def _action_params() -> dict[str, Any]:
    """The action route's body is the params object itself; an empty body means `{}`, and a body without a
    Content-Type is JSON (the TD's form says so)."""
    if not has_body():
        return {}
    params = json_body(untyped_is_json=True)
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
    spec = submit.CommandSpec(
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
    return jsonify(messages.get_message(get_db(), message_id))


@blueprint.get("/devices/<device_id>/commands")
@device_or_scope("device:read", device_secret_lookup)
def list_commands(device_id: str):
    device_id = checked_device_id(device_id)
    require_device_self(device_id)
    limit = query_int("limit", 100, 1, 1000)
    offset = query_int("offset", 0, 0, 10_000_000)
    items, total = messages.list_device_commands(
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
        owner = messages.get_message(get_db(), message_id)["device_id"]
    ack = acks.Ack(owner, message_id, body.status, body.result, body.error)
    return jsonify(acks.acknowledge(get_db(), get_messaging(), ack))
