"""Reading the event outbox: cursors, pages after a cursor, the sequencer and the retention purge.

Why events are numbered after commit: an id taken when a row is inserted (a bigserial) is not in commit order,
so a reader that resumes with "id > my last" skips a row whose transaction commits late. Here an event's place in
the stream (`pos`) is given by `event_outbox_sequence()` (migration 008) to rows that are already committed,
one sequencer at a time (they queue on the head row), and the head moves in the same transaction. So whoever sees
head H sees every event at or below H, and nothing can appear below it later: "pos > my last" is exact.

A cursor (the event `id`, and `next`) is opaque to clients: `<pos>-<unix ms>`, the position and the time it
stands for (the event's time, or when an empty page was answered). It is valid across filters, routes, pods and
the MCP tool. A cursor older than EVENT_RETENTION_HOURS, or below what the retention sweep deleted, is expired:
the reader starts again from the current end and is told so (`reset`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

from app.core.errors import APIError
from app.infra.db import Database

PURGE_BATCH = 5_000
SEQUENCE_BATCH = 10_000
_CURSOR = re.compile(r"^([0-9]{1,18})-([0-9]{1,15})$")


@dataclasses.dataclass(frozen=True)
class Cursor:
    pos: int
    ms: int

    def __str__(self) -> str:
        return f"{self.pos}-{self.ms}"


def parse_cursor(value: str | None) -> Cursor | None:
    """The cursor in `value` (None for an absent or empty one); 400 INVALID_CURSOR for anything else."""
    if value is None or value == "":
        return None
    match = _CURSOR.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise invalid_cursor(value)
    return Cursor(int(match.group(1)), int(match.group(2)))


def invalid_cursor(value: Any) -> APIError:
    shown = value[:64] if isinstance(value, str) else None
    return APIError(400, "INVALID_CURSOR", "The event id is not one this hub issued.", {"cursor": shown})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass(frozen=True)
class Filters:
    """Which events a reader wants; None means any. `types` is never None once the caller's scopes applied."""

    types: tuple[str, ...] | None = None
    device_ids: tuple[str, ...] | None = None
    device_types: tuple[str, ...] | None = None

    def sql(self) -> tuple[str, dict[str, Any]]:
        clauses, params = [], {}
        for column, name, values in (("type", "types", self.types), ("device_id", "devices", self.device_ids),
                                     ("device_type", "device_types", self.device_types)):
            if values is not None:
                clauses.append(f" AND {column} = ANY(%({name})s::text[])")
                params[name] = list(values)
        return "".join(clauses), params


@dataclasses.dataclass
class Page:
    events: list[dict[str, Any]]
    next: Cursor
    reset: bool = False

    def body(self) -> dict[str, Any]:
        body = {"events": self.events, "next": str(self.next)}
        if self.reset:
            body["reset"] = True
        return body


def sequence(db: Database) -> int:
    """Number the committed, unnumbered events; returns the head. Cheap when there are none (one index probe), and
    one round trip unless a whole batch was numbered: `before` is the head in the statement's snapshot, taken
    before the function ran, so a call that numbered SEQUENCE_BATCH events moved the head at least that far and
    the loop goes on (a concurrent sequencer's events only make it loop once more, harmlessly)."""

    def work(cur):
        while True:
            cur.execute("SELECT h.last_pos AS before, event_outbox_sequence(%s) AS head FROM event_head h",
                        (SEQUENCE_BATCH,))
            row = cur.fetchone()
            if row["head"] - row["before"] < SEQUENCE_BATCH:
                return row["head"]

    return db.autocommit(work, retry=True)


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(Cursor(row["pos"], row["at_ms"])), "type": row["type"], "device_id": row["device_id"],
            "at": row["at"], "data": row["data"]}


def _read(db: Database, after: int, filters: Filters, limit: int) -> tuple[list[dict[str, Any]], int, int]:
    """(events after `after` matching `filters`, at most `limit`; head; purged position), from one snapshot."""
    where, params = filters.sql()
    params.update(after=after, limit=limit)

    def query(cur):
        cur.execute(
            "SELECT h.last_pos, h.purged_pos, e.pos, e.type, e.device_id, e.at, "
            "(extract(epoch FROM e.at) * 1000)::bigint AS at_ms, e.data FROM event_head h LEFT JOIN LATERAL ("
            "  SELECT pos, type, device_id, at, data FROM event_outbox "
            f"  WHERE pos > %(after)s AND pos <= h.last_pos{where} ORDER BY pos LIMIT %(limit)s) e ON true "
            "ORDER BY e.pos",
            params,
        )
        return cur.fetchall()

    rows = db.read(query, api_timestamps=True)
    head, purged = rows[0]["last_pos"], rows[0]["purged_pos"]
    return [event_view(row) for row in rows if row["pos"] is not None], head, purged


def expired(cursor: Cursor, purged: int, retention_hours: float) -> bool:
    return cursor.pos < purged or cursor.ms < now_ms() - retention_hours * 3_600_000


def current_end(db: Database) -> Cursor:
    """The cursor of "now": everything committed so far lies at or before it."""
    return Cursor(sequence(db), now_ms())


def read_page(db: Database, after: Cursor | None, filters: Filters, limit: int, retention_hours: float,
              fresh: bool = True) -> Page:
    """The events after `after` (None: from now on, so an empty page). An expired cursor gives an empty page at
    the current end with `reset`; a cursor beyond the head was not issued here (400 INVALID_CURSOR). `fresh`
    numbers the events committed so far first (a reader woken by the process's listener can skip that: the
    listener just did it)."""
    if after is None:
        return Page([], current_end(db))
    if fresh:
        sequence(db)
    events, head, purged = _read(db, after.pos, filters, limit)
    if after.pos > head:
        raise invalid_cursor(str(after))
    if expired(after, purged, retention_hours):
        return Page([], Cursor(head, now_ms()), reset=True)
    if len(events) == limit:
        return Page(events, parse_cursor(events[-1]["id"]))
    return Page(events, Cursor(head, now_ms()))


def purge_expired(db: Database, retention_hours: float, max_batches: int = 20) -> int:
    """The relay's sweep: delete events older than the retention, a batch per transaction (by the `at` index, so
    each batch costs what it deletes), and move `purged_pos` so cursors into the deleted range read as expired."""
    total = 0
    for _ in range(max_batches):
        def work(cur):
            cur.execute(
                "WITH gone AS (DELETE FROM event_outbox WHERE seq IN (SELECT seq FROM event_outbox "
                "WHERE at < now() - make_interval(secs => %(seconds)s) AND pos IS NOT NULL ORDER BY at "
                "LIMIT %(batch)s) RETURNING pos), "
                "moved AS (UPDATE event_head SET purged_pos = greatest(purged_pos, (SELECT max(pos) FROM gone)) "
                "WHERE EXISTS (SELECT 1 FROM gone)) SELECT count(*) AS n FROM gone",
                {"seconds": retention_hours * 3600, "batch": PURGE_BATCH},
            )
            return cur.fetchone()["n"]

        deleted = db.transaction(work)
        total += deleted
        if deleted < PURGE_BATCH:
            break
    return total
