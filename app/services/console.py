"""Read models of the operator console that the API does not have: counts for the overview, every device's
commands newest first, and a short activity list. Each is one indexed statement, paged, so a page stays fast at
thousands of devices and commands."""

from __future__ import annotations

from typing import Any

from app.core.statuses import STATUSES
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services.commands.messages import MESSAGE_COLUMNS, message_view


def command_counts_last_hour(db: Database) -> dict[str, int]:
    """Commands created in the last hour, per status (every status named, zeros included)."""

    def query(cur):
        cur.execute("SELECT status, count(*) AS n FROM commands WHERE created_at > now() - interval '1 hour' "
                    "GROUP BY status")
        return {row["status"]: row["n"] for row in cur.fetchall()}

    counts = db.read(query)
    return {status: counts.get(status, 0) for status in STATUSES}


def list_commands(db: Database, *, status: str | None, device_id: str | None, limit: int,
                  offset: int) -> tuple[list[dict[str, Any]], bool]:
    """Commands of all devices (or one), newest first; (page, whether there is a next page). No total: counting
    every command of a busy hub is the one thing that would not stay fast."""
    clauses = []
    if status:
        clauses.append("status = %(status)s")
    if device_id:
        clauses.append("device_id = %(device)s")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""

    def query(cur):
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS}, client_id FROM commands{where} ORDER BY created_at DESC, message_id DESC "
            "LIMIT %(limit)s OFFSET %(offset)s",
            {"status": status, "device": device_id, "limit": limit + 1, "offset": offset},
        )
        return cur.fetchall()

    rows = db.read(query)
    return [{**message_view(row), "client_id": row["client_id"]} for row in rows[:limit]], len(rows) > limit


def recent_activity(db: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest command status changes and device sightings, newest first: the overview's activity tail."""

    def query(cur):
        cur.execute(
            "(SELECT updated_at AS at, 'command.status' AS type, device_id, command || ' ' || status AS summary "
            " FROM commands ORDER BY updated_at DESC LIMIT %(limit)s) "
            "UNION ALL (SELECT updated_at AS at, 'device.updated' AS type, device_id, status AS summary "
            " FROM devices ORDER BY updated_at DESC LIMIT %(limit)s) ORDER BY at DESC LIMIT %(limit)s",
            {"limit": limit},
        )
        return cur.fetchall()

    return [{**row, "at": timestamp(row["at"])} for row in db.read(query)]
