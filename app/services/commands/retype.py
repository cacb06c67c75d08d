"""Open commands of a device type that changed: checked again before they can be delivered.

A command stores the device type and the type version its params were checked against (`device_type`,
`type_version`; the NATS envelope carries both). When the type is replaced, its open commands (`queued` or
`sent`, not yet acknowledged) checked against an older version are checked against the new one:

- those that no longer fit become `cancelled` with error `type_changed` and are never delivered again;
- those that still fit move to the new version (the envelope of their next delivery says so).

This happens right after the PUT that changed the type (`recheck_type`, a bounded number of commands) and, for
whatever that left, in the relay just before any redelivery (`recheck_rows`, called by the sweeps on the rows
they locked): a command is never delivered against a version older than the current one. An `acknowledged`
command is past the point where the device accepted it, so it is not checked again.
"""

from __future__ import annotations

import time
from typing import Any

from app.infra.db import Database
from app.infra.messaging import Messaging
from app.services import device_types, events
from app.services.commands.acks import notify_final
from app.services.commands.messages import MESSAGE_COLUMNS, count

TYPE_CHANGED = "type_changed"
OPEN_STATUSES = ("queued", "sent")
BATCH = 500
MAX_BATCHES_PER_CHANGE = 4  # beyond this many commands, the relay finishes the job before each delivery
MAX_SECONDS_PER_CHANGE = 2.0  # nor does the PUT's request spend longer than this on them


def _needs_check(row: dict[str, Any], current: dict[str, Any]) -> bool:
    if row["type_version"] is None or row["status"] not in OPEN_STATUSES:
        return False
    declared = current.get(row["device_type"])
    return declared is not None and declared["version"] != row["type_version"]


def recheck_rows(cur, scope: str, rows: list[dict[str, Any]], deadline: float | None = None,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """For command rows the caller has locked: (the rows still deliverable, their `type_version` brought up to
    date where it moved; the rows just cancelled with error `type_changed`). `scope` tells databases apart in the
    per-process cache of compiled types (the database URL). Past `deadline` (time.monotonic()) the remaining rows
    are left as they are, unchecked: only for callers that do not deliver them."""
    names = sorted({row["device_type"] for row in rows if row["type_version"] is not None})
    if not names:
        return rows, []
    cur.execute("SELECT name, version, created_at FROM device_types WHERE name = ANY(%s)", (names,))
    current = {declared["name"]: declared for declared in cur.fetchall()}
    kept, cancelled, moved = [], [], {}
    for row in rows:
        if not _needs_check(row, current) or (deadline is not None and time.monotonic() > deadline):
            kept.append(row)
            continue
        declared = current[row["device_type"]]
        compiled = device_types.compiled_type(cur, scope, declared["name"], declared["version"],
                                              declared["created_at"])
        if compiled is None:
            kept.append(row)
        elif device_types.command_problem(compiled, row["command"], row["params"], "/params") is not None:
            cancelled.append(row)
        else:
            moved[str(row["message_id"])] = compiled.version
            kept.append({**row, "type_version": compiled.version})
    if moved:
        cur.execute(
            "UPDATE commands SET type_version = moved.version, updated_at = now() FROM "
            "(SELECT unnest(%s::uuid[]) AS message_id, unnest(%s::integer[]) AS version) moved "
            "WHERE commands.message_id = moved.message_id",
            (list(moved), list(moved.values())),
        )
    done = []
    if cancelled:
        cur.execute(
            "UPDATE commands SET status = 'cancelled', error = %s, updated_at = now() "
            "WHERE message_id = ANY(%s::uuid[]) AND status IN ('queued', 'sent') "
            "RETURNING message_id, device_id, command, status, error, request_id",
            (TYPE_CHANGED, [str(row["message_id"]) for row in cancelled]),
        )
        done = [{**row, "message_id": str(row["message_id"])} for row in cur.fetchall()]
        # Every status a command reaches is an event, in the transaction that reached it.
        events.record_events(cur, [(events.COMMAND_STATUS, row["device_id"], events.command_status_data(row), None)
                                   for row in done])
    return kept, done


def recheck_type(db: Database, messaging: Messaging, scope: str, name: str) -> list[dict[str, Any]]:
    """After a PUT of type `name`: check its open commands made against an older version (at most
    MAX_BATCHES_PER_CHANGE × BATCH, for at most MAX_SECONDS_PER_CHANGE; the relay checks any others before
    delivering them). Returns the cancelled ones (`message_id`, `device_id`, `status`, `error`, `request_id`)."""
    deadline = time.monotonic() + MAX_SECONDS_PER_CHANGE

    def batch(cur):
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM commands WHERE device_type = %(name)s AND status IN ('queued', 'sent') "
            "AND type_version IS NOT NULL "
            "AND type_version <> (SELECT version FROM device_types WHERE device_types.name = %(name)s) "
            f"ORDER BY created_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED",
            {"name": name},
        )
        rows = cur.fetchall()
        return len(rows), recheck_rows(cur, scope, rows, deadline)[1]

    cancelled: list[dict[str, Any]] = []
    for _ in range(MAX_BATCHES_PER_CHANGE):
        seen, done = db.transaction(batch)
        cancelled.extend(done)
        if seen < BATCH or time.monotonic() > deadline:
            break
    count("cancelled", len(cancelled))
    notify_final(messaging, cancelled)
    return cancelled


def put_device_type(db: Database, messaging: Messaging, name: str, description: str, commands: dict[str, Any],
                    preconditions: device_types.Preconditions,
                    properties: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """Create or replace the type (app/services/device_types.py), then check its open commands against the version
    now current. Returns (type, created)."""
    stored, created = device_types.put_device_type(db, name, description, commands, preconditions, properties)
    if not created:
        recheck_type(db, messaging, db.url, name)
    return stored, created
