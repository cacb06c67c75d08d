"""The history of reported values (docs/state.md, "History"): points, buckets, and the daily partitions.

Every accepted change of a reported value is a row of `device_state_history` (device, property, the report's
timestamp, value), partitioned by UTC day on that timestamp. Retention (STATE_HISTORY_HOURS) drops whole
partitions once they lie entirely before the cut-off, and reads never show a point older than it, so the
answer is exact although a partition holds up to a day more. `maintain_partitions` (run by the relay's sweep)
creates the partitions of the next days and drops the expired ones; a point written while its day's partition
is missing lands in the default partition and is moved when that day's partition is created.

Every INSERT of points also folds them into their minutes' aggregates (`device_state_minutes`; a trigger of
migration 013, so every writer does, whatever its release; state_history_minutes.py). The minutes have partitions
of the same days, made, moved and dropped with the points' partitions, and the default partitions of both are
purged at the cut-off's minute, so a minute row always aggregates exactly the points kept for it. A bucketed read
whose bucket is a multiple of 60 s combines the minutes wholly inside the window with the raw points of its
partial edge minutes; other buckets read the points.

Paging: points are ordered by (timestamp, seq) — seq breaks ties between points of one timestamp — and a
cursor is the last one's position; buckets (aligned to the Unix epoch, empty ones left out) are paged by start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import logging
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from app.core.errors import APIError
from app.core.timestamps import timestamp
from app.infra.db import Database, execute_prepared
from app.services import state_history_minutes as minutes

log = logging.getLogger(__name__)

TABLE = "device_state_history"
DAYS_AHEAD = 3
BACKFILL_DAYS = 7
AGGREGATES = ("avg", "min", "max", "last")
NUMERIC_AGGREGATES = ("avg", "min", "max")


# The points of a batch, from four arrays (one element per point), in the order given (seq follows it). The
# history's trigger (migration 013) folds them into their minutes within the same statement.
_INSERT_BATCH = (
    f"INSERT INTO {TABLE} (device_id, property, at, value) SELECT p.device_id, p.property, p.at, p.value "
    "FROM unnest(%(device_ids)s::text[], %(names)s::text[], %(ats)s::timestamptz[], %(values)s::jsonb[]) "
    "WITH ORDINALITY AS p(device_id, property, at, value, n) ORDER BY p.n")


def record_points_many(cur, points: list[tuple[str, dt.datetime, dict[str, Any]]], history_hours: int) -> None:
    """The points of many reports, (device id, timestamp, changed members) each, in one INSERT: one point per
    changed member (removals are not points), numbered (seq) in the given order and by name within a report. A
    report older than the retention window makes no point, since it would be deleted at once. Prepared: planning
    an INSERT into the partitioned table (and its minutes trigger) costs about what running it does."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=history_hours)
    rows = [(device_id, name, at, Json(value)) for device_id, at, changed in points if at >= cutoff
            for name, value in sorted(changed.items()) if value is not None]
    if not rows:
        return
    device_ids, names, ats, values = (list(column) for column in zip(*rows, strict=True))
    execute_prepared(cur, _INSERT_BATCH, {"device_ids": device_ids, "names": names, "ats": ats, "values": values})


# --- reading ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Query:
    device_id: str
    property: str
    start: dt.datetime | None
    end: dt.datetime | None
    limit: int
    cursor: str | None
    bucket: int | None
    agg: str | None


def _bad_cursor() -> APIError:
    return APIError(400, "VALIDATION_ERROR", "Query parameter 'cursor' is invalid.",
                    {"cursor": "must be a next_cursor this endpoint returned for the same query"})


def _point_cursor(at: dt.datetime, seq: int) -> str:
    micros = int((at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
    return f"p{micros}.{seq}"


def _parse_point_cursor(cursor: str) -> tuple[dt.datetime, int]:
    if not cursor.startswith("p"):
        raise _bad_cursor()
    micros, _, seq = cursor[1:].partition(".")
    try:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(micros)), int(seq)
    except (ValueError, OverflowError):
        raise _bad_cursor() from None


def _parse_bucket_cursor(cursor: str) -> int:
    if not cursor.startswith("b"):
        raise _bad_cursor()
    try:
        return int(cursor[1:])
    except ValueError:
        raise _bad_cursor() from None


def _number(value: decimal.Decimal | float | int) -> int | float:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    return value


def _window(query: Query, history_hours: int) -> tuple[str, dict[str, Any]]:
    """The WHERE clause shared by every read: the device's property within [from, to) and the retention."""
    where = ("device_id = %(device_id)s AND property = %(property)s "
             "AND at >= now() - make_interval(hours => %(hours)s)")
    params: dict[str, Any] = {"device_id": query.device_id, "property": query.property, "hours": history_hours}
    if query.start is not None:
        where += " AND at >= %(start)s"
        params["start"] = query.start
    if query.end is not None:
        where += " AND at < %(end)s"
        params["end"] = query.end
    return where, params


def _from_minutes(bucket: int) -> bool:
    """Whether a bucket is answered from the per-minute aggregates: when every minute lies inside one bucket."""
    return bucket % 60 == 0


def _grouped_points(where: str, agg: str, numeric: bool) -> str:
    """The SELECT of (bin, value, mixed) per bucket from the points themselves (a bucket that is not a multiple of
    a minute). avg/min/max read `num` (the value as a number, NULL for anything else; migration 012), so one pass
    over the index answers both them and the count of non-numbers. date_bin on the timestamp (buckets aligned to
    the epoch) is far cheaper per row than epoch arithmetic."""
    column = {"avg": "avg(num)", "min": "min(num)", "max": "max(num)",
              "last": "(array_agg(value ORDER BY at DESC, seq DESC))[1]"}[agg]
    mixed = "count(*) FILTER (WHERE num IS NULL)" if numeric else "0"
    return (f"SELECT date_bin(make_interval(secs => %(bucket)s), at, 'epoch'::timestamptz) AS bin, {column} AS value, "
            f"{mixed} AS mixed FROM {TABLE} WHERE {where} GROUP BY 1")


def read_history(db: Database, query: Query, history_hours: int) -> dict[str, Any]:
    """`{"device_id", "property", "points", "next_cursor"}` (the caller has checked that the device exists)."""
    where, params = _window(query, history_hours)
    params["limit"] = query.limit + 1
    if query.bucket is None:
        if query.cursor is not None:
            params["after_at"], params["after_seq"] = _parse_point_cursor(query.cursor)
            where += " AND (at, seq) > (%(after_at)s, %(after_seq)s)"

        def points(cur):
            cur.execute(f"SELECT at, seq, value FROM {TABLE} WHERE {where} ORDER BY at, seq LIMIT %(limit)s", params)
            return cur.fetchall()

        rows = db.read(points)
        more = len(rows) > query.limit
        rows = rows[:query.limit]
        return {"device_id": query.device_id, "property": query.property,
                "points": [{"timestamp": timestamp(r["at"]), "value": r["value"]} for r in rows],
                "next_cursor": _point_cursor(rows[-1]["at"], rows[-1]["seq"]) if more else None}

    agg = query.agg or "last"
    params["bucket"] = query.bucket
    after = ""
    if query.cursor is not None:
        params["after"] = _parse_bucket_cursor(query.cursor)
        # Rows before the cursor still carry the window's count of non-numbers when it is not 0 (the 400 holds
        # on every page).
        after = "WHERE (start > %(after)s OR mixed > 0)"
    numeric = agg in NUMERIC_AGGREGATES

    def buckets(cur):
        # Every bucket of the window is computed (before the cursor and the limit apply) so that the non-numbers of
        # the whole window are counted in the same statement (a window sum over every bucket).
        if _from_minutes(query.bucket):  # whole minutes from their aggregates, the edges from the points
            grouped = minutes.grouped_buckets(params, agg, numeric)
        else:
            grouped = _grouped_points(where, agg, numeric)
        cur.execute(
            "SELECT start, value, mixed FROM ("
            "SELECT extract(epoch FROM bin)::bigint AS start, value, sum(mixed) OVER () AS mixed FROM ("
            f"{grouped}) grouped) windowed {after} ORDER BY start LIMIT %(limit)s", params)
        found = cur.fetchall()
        if found and found[0]["mixed"]:
            return None
        return found

    rows = db.read(buckets)
    if rows is None:
        raise APIError(400, "VALIDATION_ERROR", f"agg={agg} needs numbers, and property '{query.property}' has "
                       "values that are not numbers in this range; use agg=last.",
                       {"agg": f"{agg} works on numbers only"})
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    points = [{"timestamp": timestamp(epoch + dt.timedelta(seconds=r["start"])),
               "value": r["value"] if agg == "last" else _number(r["value"])} for r in rows]
    return {"device_id": query.device_id, "property": query.property, "points": points,
            "next_cursor": f"b{rows[-1]['start']}" if more else None}


# --- partitions ---------------------------------------------------------------------------------------

# The day-partitioned tables, with the column they are partitioned on and the columns a move copies: the points and
# their minutes share their days, so a day's minutes are made, moved and dropped with its points.
PARTITIONED = {
    TABLE: ("at", "device_id, property, at, seq, value"),
    minutes.MINUTES: ("minute", "device_id, property, minute, points, numbers, num_sum, num_min, num_max, "
                                "last_at, last_seq, last_value"),
}


def _partition_name(table: str, day: dt.date) -> str:
    return f"{table}_{day:%Y%m%d}"


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def maintain_partitions(db: Database, history_hours: int, now: dt.datetime | None = None) -> dict[str, list[str]]:
    """Create the partitions (of the points and of their minutes) from the retention cut-off's day (at most
    BACKFILL_DAYS back) to DAYS_AHEAD days ahead, drop those wholly before the cut-off, and purge default-partition
    rows older than it. Safe to run from several relays at once (one advisory lock per run). Returns what it
    created and dropped."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(hours=history_hours)

    def work(cur):
        cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s)) AS locked", (TABLE,))
        if not cur.fetchone()["locked"]:
            return {"created": [], "dropped": []}
        created, dropped = [], []
        for table, (column, columns) in PARTITIONED.items():
            _maintain_table(cur, table, column, columns, now, cutoff, created, dropped)
        return {"created": created, "dropped": dropped}

    done = db.transaction(work)
    if done["created"] or done["dropped"]:
        log.info("state history partitions maintained",
                 extra={"partitions_created": done["created"], "partitions_dropped": done["dropped"]})
    return done


def _maintain_table(cur, table: str, column: str, columns: str, now: dt.datetime, cutoff: dt.datetime,
                    created: list[str], dropped: list[str]) -> None:
    cur.execute(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (table,))
    existing = {row["name"] for row in cur.fetchall()}
    # Back to the cut-off, but at most BACKFILL_DAYS: a point older than that (a device sending old data) lands in
    # the default partition, so a long retention does not mean thousands of partitions at once.
    day = max(cutoff.date(), now.date() - dt.timedelta(days=BACKFILL_DAYS))
    while day <= now.date() + dt.timedelta(days=DAYS_AHEAD):
        name = _partition_name(table, day)
        if name not in existing:
            _create_partition(cur, table, column, columns, name, _day_start(day),
                              _day_start(day + dt.timedelta(days=1)))
            created.append(name)
        day += dt.timedelta(days=1)
    for name in sorted(existing):
        suffix = name.removeprefix(table + "_")
        if not (len(suffix) == 8 and suffix.isdigit()):
            continue
        day = dt.datetime.strptime(suffix, "%Y%m%d").date()
        if _day_start(day + dt.timedelta(days=1)) <= cutoff:
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    # Cut at the cut-off's minute, in both tables: a minute row then always sums exactly the points kept for it
    # (reads skip what lies before the cut-off either way).
    cur.execute(sql.SQL("DELETE FROM {} WHERE {} < %s").format(
        sql.Identifier(f"{table}_default"), sql.Identifier(column)), (minutes.floor_minute(cutoff),))


def _create_partition(cur, parent: str, column: str, columns: str, name: str, start: dt.datetime,
                      end: dt.datetime) -> None:
    """A new day's partition, with the rows the default partition holds for that day moved into it first (a
    partition cannot be attached while the default one holds rows of its range)."""
    table = sql.Identifier(name)
    # INCLUDING GENERATED: a history partition's `num` must be generated like its parent's (and is not inserted).
    cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)")
                .format(table, sql.Identifier(parent)))
    cur.execute(sql.SQL("WITH moved AS (DELETE FROM {} WHERE {} >= %s AND {} < %s RETURNING *) "
                        "INSERT INTO {} ({}) SELECT {} FROM moved").format(
                            sql.Identifier(f"{parent}_default"), sql.Identifier(column), sql.Identifier(column),
                            table, sql.SQL(columns), sql.SQL(columns)),
                (start, end))
    cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (%s) TO (%s)").format(
        sql.Identifier(parent), table), (start, end))
