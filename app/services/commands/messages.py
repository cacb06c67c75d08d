"""Reading commands: the message view clients see, the NATS envelope, one message, a device's list."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from app.core.errors import APIError
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services.registry import device_not_found
from app.telemetry.metrics import commands_total

log = logging.getLogger(__name__)


MESSAGE_COLUMNS = (
    "message_id, device_id, command, params, qos, priority, status, result, error, created_at, sent_at, "
    "acknowledged_at, completed_at, expires_at, request_id, device_type, type_version"
)


def message_view(row: dict[str, Any]) -> dict[str, Any]:
    """A message exactly as docs/api.md ("The message object") lists its fields."""
    return {
        "message_id": str(row["message_id"]),
        "device_id": row["device_id"],
        "command": row["command"],
        "params": row["params"],
        "qos": row["qos"],
        "priority": row["priority"],
        "status": row["status"],
        "result": row["result"],
        "error": row["error"],
        "created_at": timestamp(row["created_at"]),
        "sent_at": timestamp(row["sent_at"]),
        "acknowledged_at": timestamp(row["acknowledged_at"]),
        "completed_at": timestamp(row["completed_at"]),
        "expires_at": timestamp(row["expires_at"]),
        "request_id": row["request_id"],
    }


def accepted_view(row: dict[str, Any]) -> dict[str, Any]:
    """The 202 body of a submit."""
    return {
        "message_id": str(row["message_id"]),
        "device_id": row["device_id"],
        "status": row["status"],
        "created_at": timestamp(row["created_at"]),
        "expires_at": timestamp(row["expires_at"]),
    }


ENVELOPE_FIELDS = ("message_id", "device_id", "command", "params", "qos", "priority", "created_at", "expires_at",
                   "request_id", "device_type", "type_version")


def envelope(row: dict[str, Any]) -> dict[str, Any]:
    """The body published on `uaip.devices.{id}.commands`: the message's fields for the device, plus the device
    type and the type version its params were last checked against (null for a device of an undeclared type)."""
    view = message_view(row)
    view["device_type"] = row.get("device_type")
    view["type_version"] = row.get("type_version")
    return {field: view[field] for field in ENVELOPE_FIELDS}


def message_not_found(message_id: str) -> APIError:
    return APIError(404, "MESSAGE_NOT_FOUND", f"Message '{message_id}' was not found.", {"message_id": message_id})


def parse_message_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def count(status: str, n: int = 1) -> None:
    if n:
        commands_total.labels(status=status).inc(n)


def get_message(db: Database, message_id: str) -> dict[str, Any]:
    parsed = parse_message_id(message_id)
    if parsed is None:
        raise message_not_found(message_id[:64])

    def query(cur):
        cur.execute(f"SELECT {MESSAGE_COLUMNS} FROM commands WHERE message_id = %s", (str(parsed),))
        return cur.fetchone()

    row = db.read(query)  # one round trip: polling clients and ?wait=N waiters read this often
    if row is None:
        raise message_not_found(message_id)
    return message_view(row)


def list_device_commands(
    db: Database, device_id: str, *, status: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A device's commands, newest first. History outlives the device; an unknown device with none is 404."""
    where = "device_id = %(device)s" + (" AND status = %(status)s" if status else "")
    params = {"device": device_id, "status": status, "limit": limit, "offset": offset}

    def query(cur):
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS}, count(*) OVER () AS total FROM commands WHERE {where} "
            "ORDER BY created_at DESC, message_id DESC LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        rows = cur.fetchall()
        total = rows[0]["total"] if rows else None
        if total is None and offset:
            cur.execute(f"SELECT count(*) AS total FROM commands WHERE {where}", params)
            total = cur.fetchone()["total"]
        exists = True
        if not total:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE device_id = %(device)s) "
                "OR EXISTS (SELECT 1 FROM commands WHERE device_id = %(device)s) AS known",
                params,
            )
            exists = cur.fetchone()["known"]
        return rows, total or 0, exists

    rows, total, exists = db.transaction(query)
    if not exists:
        raise device_not_found(device_id)
    return [message_view(row) for row in rows], total
