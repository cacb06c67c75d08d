"""The device registry: every SQL statement about devices lives here.

`status` as stored is what the device last reported; `status` as *read* is computed: a device that heartbeats
(`online`, or `error`: it reported a fault but is alive) whose last heartbeat is older than
HEARTBEAT_TIMEOUT_SECONDS reads as `offline` everywhere (get, list, list filter, the qos 0 check), whether or
not the relay's sweeper has written that down yet.

`version` (and so the ETag) counts changes to what a client manages (name, type, capabilities, location,
metadata). Heartbeats change `status`/`last_seen` only, so a device that heartbeats every few seconds does not
make every client's If-Match fail.
"""

from __future__ import annotations

import secrets
from typing import Any

import psycopg2.errors
from psycopg2.extras import Json

from app.auth.secrets import generate_secret, hash_secret
from app.core.errors import APIError
from app.core.statuses import DEVICE_STATUSES
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services import events
from app.services.audit import record_audit

MUTABLE_FIELDS = ("name", "device_type", "capabilities", "location", "metadata")

# Statuses a heartbeat sets; both fall to `offline` when the heartbeats stop. The partial index
# devices_heartbeating_idx (migration 005) has exactly this condition, so keep the two in step.
HEARTBEATING = "status IN ('online', 'error')"
# %(timeout)s is HEARTBEAT_TIMEOUT_SECONDS.
STALE = f"{HEARTBEATING} AND last_seen < now() - make_interval(secs => %(timeout)s)"
EFFECTIVE_STATUS = f"CASE WHEN {STALE} THEN 'offline' ELSE status END"
DEVICE_COLUMNS = (
    f"device_id, name, device_type, {EFFECTIVE_STATUS} AS status, capabilities, location, metadata, "
    "last_seen, registered_at, updated_at, version"
)
# The device object's fields: the columns above, in their order (rows read as tuples map onto it).
DEVICE_FIELDS = ("device_id", "name", "device_type", "status", "capabilities", "location", "metadata", "last_seen",
                 "registered_at", "updated_at", "version")


def device_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": row["device_id"],
        "name": row["name"],
        "device_type": row["device_type"],
        "status": row["status"],
        "capabilities": list(row["capabilities"]),
        "location": row["location"],
        "metadata": row["metadata"],
        "last_seen": timestamp(row["last_seen"]),
        "registered_at": timestamp(row["registered_at"]),
        "updated_at": timestamp(row["updated_at"]),
        "version": row["version"],
    }


def device_not_found(device_id: str) -> APIError:
    return APIError(404, "DEVICE_NOT_FOUND", f"Device '{device_id}' was not found.", {"device_id": device_id})


def precondition_failed(current_version: int) -> APIError:
    return APIError(
        412, "PRECONDITION_FAILED", "The device has changed since you read it (If-Match does not match).",
        {"current_etag": etag_for(current_version)},
    )


def hold_type(cur, name: str) -> None:
    """Inside a device insert/update transaction: keep type `name` (if declared) from being deleted until commit.
    KEY SHARE does not conflict with a type PUT's UPDATE, only with DELETE's row lock (app/services/device_types.py
    locks the type row before counting its devices)."""
    cur.execute("SELECT 1 FROM device_types WHERE name = %s FOR KEY SHARE", (name,))


def register_device(db: Database, fields: dict[str, Any], timeout: int) -> tuple[dict[str, Any], str]:
    """Insert a device; returns (device, plaintext secret). 409 DEVICE_EXISTS if the id is taken."""
    device_id = fields.get("device_id") or f"dev-{secrets.token_hex(8)}"
    secret = generate_secret()
    secret_hash = hash_secret(secret)

    def insert(cur):
        hold_type(cur, fields["device_type"])
        cur.execute(
            "INSERT INTO devices (device_id, name, device_type, capabilities, location, metadata, secret_hash) "
            f"VALUES (%(id)s, %(name)s, %(type)s, %(caps)s, %(location)s, %(metadata)s, %(hash)s) "
            f"ON CONFLICT (device_id) DO NOTHING RETURNING {DEVICE_COLUMNS}",
            {
                "id": device_id,
                "name": fields["name"],
                "type": fields["device_type"],
                "caps": fields.get("capabilities") or [],
                "location": Json(fields.get("location")) if fields.get("location") is not None else None,
                "metadata": Json(fields.get("metadata") or {}),
                "hash": secret_hash,
                "timeout": timeout,
            },
        )
        row = cur.fetchone()
        if row is not None:
            events.record_event(cur, events.DEVICE_REGISTERED, device_id, device_view(row), row["device_type"])
            record_audit(cur, "device.register", f"device:{device_id}",
                         {"name": fields["name"], "device_type": fields["device_type"]})
        return row

    row = db.transaction(insert)
    if row is None:
        raise APIError(409, "DEVICE_EXISTS", f"Device '{device_id}' is already registered.", {"device_id": device_id})
    return device_view(row), secret


def _filters(status: str | None, device_type: str | None, capability: str | None) -> tuple[str, dict]:
    clauses, params = [], {}
    if status is not None:
        clauses.append(f"{EFFECTIVE_STATUS} = %(status)s")
        params["status"] = status
    if device_type is not None:
        clauses.append("device_type = %(type)s")
        params["type"] = device_type
    if capability is not None:
        clauses.append("capabilities @> ARRAY[%(capability)s]::text[]")
        params["capability"] = capability
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_devices(
    db: Database, *, status: str | None, device_type: str | None, capability: str | None,
    limit: int, offset: int, timeout: int,
) -> tuple[list[dict[str, Any]], int]:
    where, params = _filters(status, device_type, capability)
    params.update(limit=limit, offset=offset, timeout=timeout)

    def query(cur):
        # One statement, one round trip, one snapshot: the total always agrees with the page. The page walks the
        # (registered_at, device_id) index and stops at LIMIT; the count is an uncorrelated sub-select that
        # PostgreSQL runs once (a window count(*) OVER () would project every matching row: 1.8 ms vs 0.5 ms).
        cur.execute(
            f"SELECT {DEVICE_COLUMNS}, (SELECT count(*) FROM devices{where}) AS total FROM devices{where} "
            "ORDER BY registered_at, device_id LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        rows = cur.fetchall()
        if rows or offset == 0:
            return rows, rows[0][-1] if rows else 0
        cur.execute(f"SELECT count(*) FROM devices{where}", params)  # paged past the end: no row carries it
        return rows, cur.fetchone()[0]

    # Tuples and timestamps as text: building dict rows, datetimes and their strings was most of this request's
    # Python time (docs/performance.md).
    rows, total = db.read(query, tuples=True, api_timestamps=True)
    # Each row ends with the total, which zip leaves out.
    return [dict(zip(DEVICE_FIELDS, row, strict=False)) for row in rows], total


def get_device(db: Database, device_id: str, timeout: int) -> dict[str, Any]:
    def query(cur):
        cur.execute(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = %(id)s",
                    {"id": device_id, "timeout": timeout})
        return cur.fetchone()

    row = db.transaction(query)
    if row is None:
        raise device_not_found(device_id)
    return device_view(row)


def update_device(
    db: Database, device_id: str, changes: dict[str, Any], *, expected_version: int | None, timeout: int,
) -> dict[str, Any]:
    """Set the given mutable fields (a PATCH's subset, or all of them for PUT), bumping `version`.

    `expected_version` comes from If-Match: the update only applies to that version, else 412. The check and
    the write are one statement, so two racing PATCHes with the same If-Match cannot both win.
    """
    assignments, params = [], {"id": device_id, "timeout": timeout, "expected": expected_version}
    for field in MUTABLE_FIELDS:
        if field in changes:
            value = changes[field]
            if field in ("location", "metadata"):
                value = Json(value) if value is not None else None
            assignments.append(f"{field} = %({field})s")
            params[field] = value
    assignments += ["version = version + 1", "updated_at = now()"]
    version_check = " AND version = %(expected)s" if expected_version is not None else ""

    def update(cur):
        if "device_type" in changes:
            hold_type(cur, changes["device_type"])
        cur.execute(
            f"UPDATE devices SET {', '.join(assignments)} WHERE device_id = %(id)s{version_check} "
            f"RETURNING {DEVICE_COLUMNS}",
            params,
        )
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT version FROM devices WHERE device_id = %(id)s", params)
            current = cur.fetchone()
            return None, (current["version"] if current else None)
        events.record_event(cur, events.DEVICE_UPDATED, device_id, device_view(row), row["device_type"])
        record_audit(cur, "device.update", f"device:{device_id}",
                     {"fields": sorted(field for field in MUTABLE_FIELDS if field in changes),
                      "version": row["version"]})
        return row, row["version"]

    row, current_version = db.transaction(update)
    if row is None:
        if current_version is None:
            raise device_not_found(device_id)
        raise precondition_failed(current_version)
    return device_view(row)


def delete_device_in(cur, device_id: str, timeout: int) -> dict[str, Any] | None:
    """Inside a transaction: remove the device row; its last state (the `device.deleted` event's data), or None
    for an unknown device. The caller (`commands.delete_device`) cancels the device's unfinished commands in the
    same transaction, then records the event (`record_deleted`), so it comes after the cancellations."""
    cur.execute(f"DELETE FROM devices WHERE device_id = %(id)s RETURNING {DEVICE_COLUMNS}",
                {"id": device_id, "timeout": timeout})
    row = cur.fetchone()
    if row is None:
        return None
    record_audit(cur, "device.delete", f"device:{device_id}")
    return device_view(row)


def record_deleted(cur, device: dict[str, Any]) -> None:
    events.record_event(cur, events.DEVICE_DELETED, device["device_id"], device, device["device_type"])


def presence_events(row: dict[str, Any]) -> list[tuple[str, str, dict, str | None]]:
    """The events of a heartbeat that changed something: `device.online` when the device was offline or pending
    (preceded by `device.offline` when it read as offline only because the relay's sweeper had not marked it
    yet, so a follower sees every presence change); `device.updated` when it moved between online and error.
    A heartbeat that only moves last_seen is no event."""
    previous, status = row["previous_status"], row["status"]
    device = device_view(row)
    found = []
    if previous == "offline" and row["stored_status"] in ("online", "error"):
        found.append((events.DEVICE_OFFLINE, device["device_id"], {**device, "status": "offline",
                                                                     "last_seen": timestamp(row["previous_seen"])},
                      device["device_type"]))
    if previous in ("offline", "pending"):
        found.append((events.DEVICE_ONLINE, device["device_id"], device, device["device_type"]))
    elif previous != status:
        found.append((events.DEVICE_UPDATED, device["device_id"], device, device["device_type"]))
    return found


def heartbeat_in(cur, device_id: str, status: str, timeout: int) -> dict[str, Any] | None:
    """Inside a transaction: mark the device `status` and seen now. The row (with `previous_status`, the status
    it read as before) or None for an unknown device. Concurrent heartbeats serialise on the row lock, so only
    one of them sees a device come online."""
    # The UPDATE joins the locked row: a sub-select in RETURNING would not see a row this statement updated.
    cur.execute(
        f"WITH before AS (SELECT device_id AS locked_id, {EFFECTIVE_STATUS} AS previous_status, "
        f"status AS stored_status, last_seen AS previous_seen FROM devices WHERE device_id = %(id)s FOR UPDATE) "
        f"UPDATE devices SET status = %(status)s, last_seen = now() FROM before WHERE device_id = before.locked_id "
        f"RETURNING {DEVICE_COLUMNS}, before.previous_status, before.stored_status, before.previous_seen",
        {"id": device_id, "status": status, "timeout": timeout},
    )
    row = cur.fetchone()
    if row is not None:
        events.record_events(cur, presence_events(row))
    return row


def heartbeats_in(cur, device_ids: list[str], status: str, timeout: int) -> dict[str, dict[str, Any]]:
    """`heartbeat_in` for many devices in one statement (rows locked in device-id order), without recording the
    presence events: the caller records them (`presence_events`) in order with its own events. Device id → row
    (`status`, `previous_status`, `stored_status`, `previous_seen`; the whole device only where the status
    changed, which is all `presence_events` reads then); unknown devices are missing."""
    if not device_ids:
        return {}
    cur.execute(
        f"WITH before AS (SELECT device_id AS locked_id, {EFFECTIVE_STATUS} AS previous_status, "
        f"status AS stored_status, last_seen AS previous_seen FROM devices WHERE device_id = ANY(%(ids)s) "
        f"ORDER BY device_id FOR UPDATE) "
        f"UPDATE devices SET status = %(status)s, last_seen = now() FROM before WHERE device_id = before.locked_id "
        f"RETURNING device_id, {EFFECTIVE_STATUS} AS status, before.previous_status, before.stored_status, "
        f"before.previous_seen",
        {"ids": sorted(device_ids), "status": status, "timeout": timeout},
    )
    rows = {row["device_id"]: row for row in cur.fetchall()}
    # Most heartbeats only move last_seen (no event): the whole device is read only for the others.
    moved = sorted(device_id for device_id, row in rows.items() if row["previous_status"] != row["status"])
    if moved:
        cur.execute(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ANY(%(ids)s)",
                    {"ids": moved, "timeout": timeout})
        for device in cur.fetchall():
            rows[device["device_id"]] = {**rows[device["device_id"]], **device}
    return rows


def apply_heartbeats(db: Database, heartbeats: dict[str, str], timeout: int, lock_timeout_ms: int = 200,
                     max_waits: int = 5) -> tuple[list[dict[str, Any]], list[str]]:
    """The relay's heartbeats (device id → `online` or `error`): mark each device and seen now. Returns the rows
    applied (with `previous_status`, as `heartbeat_in`) and the ids skipped because their row stayed locked.

    A device row another transaction holds locked (an update of that device under way, say) must not hold up
    every other device's heartbeat, nor drop them: one statement applies every row it can lock at once (SKIP
    LOCKED); each row it skipped is then tried alone, in a transaction of its own that waits at most
    `lock_timeout_ms` (SET LOCAL lock_timeout), and at most `max_waits` of them per call, so one batch waits a
    second at most. (Savepoints per device would do it in one transaction, but more than 64 subtransactions in one
    transaction slow every other session's snapshots.) Unknown devices are ignored."""
    if not heartbeats:
        return [], []
    ids = sorted(heartbeats)

    def apply_unlocked(cur):
        cur.execute(
            f"WITH before AS (SELECT device_id AS locked_id, {EFFECTIVE_STATUS} AS previous_status FROM devices "
            f"WHERE device_id = ANY(%(ids)s) ORDER BY device_id FOR UPDATE SKIP LOCKED), "
            f"wanted AS (SELECT * FROM unnest(%(ids)s::text[], %(statuses)s::text[]) AS w(wanted_id, wanted_status)) "
            f"UPDATE devices SET status = wanted.wanted_status, last_seen = now() "
            f"FROM before JOIN wanted ON wanted.wanted_id = before.locked_id WHERE device_id = before.locked_id "
            f"RETURNING {DEVICE_COLUMNS}, before.previous_status",
            {"ids": ids, "statuses": [heartbeats[device_id] for device_id in ids], "timeout": timeout},
        )
        applied = cur.fetchall()
        done = {row["device_id"] for row in applied}
        cur.execute("SELECT device_id FROM devices WHERE device_id = ANY(%s) ORDER BY device_id",
                    ([device_id for device_id in ids if device_id not in done],))
        return applied, [row["device_id"] for row in cur.fetchall()]

    applied, skipped = db.transaction(apply_unlocked)
    locked: list[str] = []
    for index, device_id in enumerate(skipped):
        if index >= max_waits:
            locked.extend(skipped[index:])
            break

        def wait_briefly(cur, device_id=device_id):
            cur.execute("SET LOCAL lock_timeout = %s", (f"{lock_timeout_ms}ms",))
            return heartbeat_in(cur, device_id, heartbeats[device_id], timeout)

        try:
            row = db.transaction(wait_briefly)
        except psycopg2.errors.LockNotAvailable:
            locked.append(device_id)
            continue
        if row is not None:
            applied.append(row)
    return applied, locked


def record_heartbeat(db: Database, device_id: str, status: str, timeout: int) -> tuple[dict[str, Any], str]:
    """Mark the device `status` (online or error) and seen now; returns (device, status it had before)."""
    row = db.transaction(lambda cur: heartbeat_in(cur, device_id, status, timeout))
    if row is None:
        raise device_not_found(device_id)
    return device_view(row), row["previous_status"]


def mark_stale_devices_offline(db: Database, timeout: int) -> list[dict[str, Any]]:
    """Devices stored `online` or `error` with no heartbeat for `timeout` seconds become `offline`. The
    conditions are re-checked after the row lock, so with several relays each transition is reported by exactly
    one."""

    def update(cur):
        cur.execute(
            "UPDATE devices SET status = 'offline' WHERE device_id IN ("
            f"  SELECT device_id FROM devices WHERE {STALE} LIMIT 1000 FOR UPDATE SKIP LOCKED) "
            f"AND {STALE} RETURNING {DEVICE_COLUMNS}",
            {"timeout": timeout},
        )
        devices = sorted((device_view(row) for row in cur.fetchall()), key=lambda device: device["device_id"])
        events.record_events(cur, [(events.DEVICE_OFFLINE, device["device_id"], device, device["device_type"])
                                   for device in devices])
        return [{"device_id": device["device_id"], "last_seen": device["last_seen"]} for device in devices]

    return db.transaction(update)


def device_secret_hash(db: Database, device_id: str) -> str | None:
    def query(cur):
        cur.execute("SELECT secret_hash FROM devices WHERE device_id = %s", (device_id,))
        row = cur.fetchone()
        return row["secret_hash"] if row else None

    return db.transaction(query)


def count_devices_by_status(db: Database, timeout: int) -> dict[str, int]:
    """Devices per effective status (the `uaip_devices` gauge); one short, retry-free statement."""

    def query(cur):
        cur.execute("SET LOCAL statement_timeout = 2000")
        cur.execute(f"SELECT {EFFECTIVE_STATUS} AS status, count(*) AS n FROM devices GROUP BY 1", {"timeout": timeout})
        return {row["status"]: row["n"] for row in cur.fetchall()}

    counts = db.transaction(query, retry=False)
    return {status: counts.get(status, 0) for status in DEVICE_STATUSES}


def etag_for(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> int | None:
    """The version an If-Match header demands: None for no header or `*` (any existing version), -1 when the
    header holds no tag this hub ever issued (so it can never match, as RFC 9110 requires)."""
    if header is None or header.strip() == "*":
        return None
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag.isdigit() and len(tag) < 10:
            return int(tag)
    return -1
