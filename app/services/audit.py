"""The audit log: who changed what, when, through which request. Append-only.

`record_audit(cur, action, target, details)` inserts one entry in the caller's transaction, so an entry exists
exactly when its change committed. The actor (`client:<id>`, `operator:<email>` or `cli`) and the request id come
from app/core/audit_context.py, set by the web pipeline after authentication and by the CLI. Nothing here updates
or deletes entries, except the retention purge (entries older than AUDIT_RETENTION_DAYS, from the relay's sweep);
a trigger in PostgreSQL refuses UPDATE.

Vocabulary: `action` is `<kind>.<verb>` (client.create, device.register, command.submit, ...), `target` is
`<kind>:<id>`. Details never hold a secret.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import psycopg2.extras

from app.core.audit_context import current_actor, current_request_id
from app.core.errors import APIError
from app.core.timestamps import timestamp
from app.infra.db import Database, execute_prepared

UNKNOWN_ACTOR = "system"


def record_audit(cur, action: str, target: str, details: dict | None = None) -> None:
    """Append one entry in the caller's transaction (actor and request id from the current context)."""
    execute_prepared(  # prepared: it rides along with every command submit
        cur,
        "INSERT INTO audit_log (actor, action, target, request_id, details) "
        "VALUES (%(actor)s::text, %(action)s::text, %(target)s::text, %(request_id)s::text, %(details)s::jsonb)",
        {"actor": current_actor() or UNKNOWN_ACTOR, "action": action, "target": target,
         "request_id": current_request_id(), "details": psycopg2.extras.Json(details or {})},
    )


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id after which (older than which) the next page starts; 400 for anything this hub did not hand out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not text.startswith("a") or not text[1:].isdigit():
            raise ValueError
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise APIError(400, "VALIDATION_ERROR", "Query parameter 'cursor' is invalid.",
                       {"cursor": "must be a next_cursor value from a previous page"}) from None


def list_audit(db: Database, *, actor: str | None = None, action: str | None = None, target: str | None = None,
               since: datetime | None = None, until: datetime | None = None, limit: int = 100,
               before_id: int | None = None) -> dict[str, Any]:
    """Entries newest first, filtered (`since` ≤ at < `until`), at most `limit`, older than `before_id`."""
    clauses, params = [], {"limit": limit + 1}
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None:
            clauses.append(f"{column} = %({column})s")
            params[column] = value
    if since is not None:
        clauses.append("at >= %(since)s")
        params["since"] = since
    if until is not None:
        clauses.append("at < %(until)s")
        params["until"] = until
    if before_id is not None:
        clauses.append("id < %(before)s")
        params["before"] = before_id
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""

    def query(cur):
        cur.execute(f"SELECT id, at, actor, action, target, request_id, details FROM audit_log {where}"
                    f"ORDER BY id DESC LIMIT %(limit)s", params)
        return cur.fetchall()

    rows = db.read(query)
    more = len(rows) > limit
    rows = rows[:limit]
    entries = [{"id": row["id"], "at": timestamp(row["at"]), "actor": row["actor"], "action": row["action"],
                "target": row["target"], "request_id": row["request_id"], "details": row["details"]}
               for row in rows]
    return {"entries": entries, "next_cursor": encode_cursor(rows[-1]["id"]) if more else None}


def purge_audit(db: Database, retention_days: int) -> int:
    """Delete entries older than the retention period; the number deleted."""

    def purge(cur):
        cur.execute("DELETE FROM audit_log WHERE at < now() - make_interval(days => %s)", (retention_days,))
        return cur.rowcount

    return db.autocommit(purge)
