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


def _summary(event_type: str, data: dict[str, Any]) -> str:
    """A short line for the activity tail (text the operator reads; values stay in the device page)."""
    if event_type == "command.status":
        return f"{data.get('command') or ''} {data.get('status') or ''}".strip()
    if event_type.startswith("state."):
        changed = sorted(data.get("changed") or {})
        return ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
    return str(data.get("status") or "")


def recent_activity(db: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest events (docs/events.md), newest first: the overview's activity tail. The same events the
    console's live stream then adds to it."""

    def query(cur):
        cur.execute("SELECT at, type, device_id, data FROM event_outbox WHERE pos IS NOT NULL "
                    "ORDER BY pos DESC LIMIT %(limit)s", {"limit": limit})
        return cur.fetchall()

    return [{"at": timestamp(row["at"]), "type": row["type"], "device_id": row["device_id"],
             "summary": _summary(row["type"], row["data"])} for row in db.read(query)]
