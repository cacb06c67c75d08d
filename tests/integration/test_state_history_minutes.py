"""The state history's per-minute aggregates on real PostgreSQL (docs/state.md, "History"): kept exact by the
history's insert trigger whatever order points arrive in and whoever inserts them, backfilled by migration 013,
dropped with their partitions, and a bucketed read from them equal to the same read from the raw points."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import threading

import psycopg2
import pytest
from psycopg2.extras import Json, RealDictCursor

from app.core.errors import APIError
from app.infra.db import Database
from app.infra.migrate import available_migrations, migrate
from app.services import state_history
from app.services.state_history_minutes import floor_minute
from tests.support import services

MINUTES_COLUMNS = ("points", "numbers", "num_sum", "num_min", "num_max", "last_at", "last_seq", "last_value")


class OneTransaction:
    """A stand-in for Database whose reads all run on one open transaction's cursor: every read then sees the same
    `now()`, so the retention cut-off is the same for the two reads being compared."""

    def __init__(self, cur) -> None:
        self.cur = cur

    def read(self, work, **_options):
        return work(self.cur)


def expected_minutes(rows) -> dict[tuple, tuple]:
    """The minute rows computed in Python from the raw points (device_id, property, at, seq, value, num)."""
    minutes: dict[tuple, dict] = {}
    for row in rows:
        key = (row["device_id"], row["property"], floor_minute(row["at"]))
        minute = minutes.setdefault(key, {"points": 0, "numbers": 0, "sum": None, "min": None, "max": None,
                                          "last": None})
        minute["points"] += 1
        if row["num"] is not None:
            num = row["num"]
            minute["numbers"] += 1
            minute["sum"] = num if minute["sum"] is None else minute["sum"] + num
            minute["min"] = num if minute["min"] is None else min(minute["min"], num)
            minute["max"] = num if minute["max"] is None else max(minute["max"], num)
        if minute["last"] is None or (row["at"], row["seq"]) > minute["last"][:2]:
            minute["last"] = (row["at"], row["seq"], row["value"])
    return {key: (m["points"], m["numbers"], m["sum"], m["min"], m["max"], *m["last"]) for key, m in minutes.items()}


def stored_minutes(cur, device_ids: list[str]) -> tuple[dict[tuple, tuple], dict[tuple, tuple]]:
    """(the minute rows stored, the minute rows the stored points make) for the devices."""
    cur.execute("SELECT device_id, property, at, seq, value, num FROM device_state_history "
                "WHERE device_id = ANY(%s)", (device_ids,))
    expected = expected_minutes(cur.fetchall())
    cur.execute(f"SELECT device_id, property, minute, {', '.join(MINUTES_COLUMNS)} FROM device_state_minutes "
                "WHERE device_id = ANY(%s)", (device_ids,))
    stored = {(r["device_id"], r["property"], r["minute"]): tuple(r[c] for c in MINUTES_COLUMNS)
              for r in cur.fetchall()}
    return stored, expected


def random_value(rng: random.Random, numeric: bool):
    if numeric or rng.random() < 0.6:
        return rng.choice([rng.randint(-40, 40), round(rng.uniform(-50, 50), rng.choice([1, 2, 3])),
                           10**20 + rng.randint(0, 9), 0.1])
    return rng.choice(["heat", "off", {"on": "07:00"}, [1, 2], True])


def random_reports(rng: random.Random, device_id: str, start: dt.datetime, seconds: int, count: int) -> list:
    """Reports (device, at, changed) over [start, start + seconds): numbers for `t`, sometimes `m` (any JSON),
    rarely `s` (numbers, sparse); a tenth repeat an earlier timestamp (ties broken by seq); shuffled, so older
    points keep arriving after newer ones."""
    reports, used = [], []
    for _ in range(count):
        if used and rng.random() < 0.1:
            at = rng.choice(used)
        else:
            at = start + dt.timedelta(microseconds=rng.randrange(seconds * 1_000_000))
            at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # reports carry milliseconds
            used.append(at)
        changed = {"t": random_value(rng, True)}
        if rng.random() < 0.3:
            changed["m"] = random_value(rng, False)
        if rng.random() < 0.02:
            changed["s"] = random_value(rng, True)
        reports.append((device_id, at, changed))
    rng.shuffle(reports)
    return reports


def insert_in_batches(db: Database, rng: random.Random, reports: list) -> None:
    while reports:
        size = rng.randint(1, 40)
        batch, reports = reports[:size], reports[size:]
        db.transaction(lambda cur, batch=batch: state_history.record_points_many(cur, batch, 168))


def pages(db, query: state_history.Query, hours: int) -> list:
    """Every page of a read, followed by cursor (or the APIError status and code that refused it)."""
    found, cursor = [], None
    while True:
        try:
            page = state_history.read_history(db, state_history.Query(**{**query.__dict__, "cursor": cursor}), hours)
        except APIError as exc:
            return found + [(exc.status, exc.code)]
        found.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return found


@pytest.fixture()
def device_ids(make_device) -> list[str]:
    return [make_device()["device_id"] for _ in range(2)]


def test_out_of_order_batches_keep_every_minute_exact(db, device_ids):
    rng = random.Random(20261207)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    reports = random_reports(rng, device_ids[0], start, 7200, 1500)
    reports += random_reports(rng, device_ids[1], start, 600, 300)
    insert_in_batches(db, rng, reports)
    stored, expected = db.read(lambda cur: stored_minutes(cur, device_ids))
    assert len(expected) > 100 and stored == expected


def test_concurrent_batches_on_the_same_minutes_stay_exact(db, device_ids):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    failures, written = [], []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        reports = random_reports(rng, device_ids[0], start, 240, 400)
        written.append(sum(len(changed) for _, _, changed in reports))
        try:
            insert_in_batches(db, rng, reports)
        except Exception as exc:  # noqa: BLE001 - reported below: a failed writer fails the test
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == [] and not any(thread.is_alive() for thread in threads)
    stored, expected = db.read(lambda cur: stored_minutes(cur, device_ids[:1]))
    assert sum(row[0] for row in stored.values()) == sum(written)  # every point counted once
    assert stored == expected


def _windows(base: dt.datetime) -> list[tuple[dt.datetime | None, dt.datetime | None, int]]:
    """(from, to, retention hours): edges off and on minute boundaries, inside one minute, empty, open-ended, and
    a retention cut-off inside the data."""
    minute = floor_minute(base)
    return [
        (None, None, 168),
        (base + dt.timedelta(seconds=917.25), base + dt.timedelta(seconds=6133.5), 168),
        (minute + dt.timedelta(minutes=20), minute + dt.timedelta(minutes=95), 168),
        (minute + dt.timedelta(minutes=20, seconds=11), minute + dt.timedelta(minutes=20, seconds=49), 168),
        (minute + dt.timedelta(minutes=20, seconds=11), minute + dt.timedelta(minutes=21, seconds=3), 168),
        (base + dt.timedelta(seconds=4000.5), None, 168),
        (None, base + dt.timedelta(seconds=3001.125), 168),
        (base + dt.timedelta(seconds=500), base + dt.timedelta(seconds=400), 168),
        (None, None, 1),  # the cut-off (now - 1 h) lands inside a minute that has points on both sides
        (base + dt.timedelta(seconds=10.5), base + dt.timedelta(seconds=5000.5), 1),
    ]


def test_bucketed_reads_from_minutes_equal_the_raw_points(db, device_ids, monkeypatch):
    rng = random.Random(7)
    base = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    insert_in_batches(db, rng, random_reports(rng, device_ids[0], base, 7200, 3000))

    def compare(cur):
        one = OneTransaction(cur)
        compared = 0
        for start, end, hours in _windows(base):
            for bucket in (60, 120, 300, 3600):
                for prop, aggs in (("t", ("avg", "min", "max", "last")), ("m", ("last", "avg")),
                                   ("s", ("avg", "last"))):
                    for agg in aggs:
                        query = state_history.Query(device_ids[0], prop, start, end, rng.choice([3, 25, 1000]),
                                                    None, bucket, agg)
                        fast = pages(one, query, hours)
                        with monkeypatch.context() as patched:
                            patched.setattr(state_history, "_from_minutes", lambda _bucket: False)
                            raw = pages(one, query, hours)
                        assert fast == raw, (start, end, hours, bucket, prop, agg)
                        compared += sum(len(page["points"]) for page in raw if isinstance(page, dict))
        return compared

    assert db.transaction(compare) > 5000  # buckets compared (the windows are not all empty)


def test_the_fast_path_is_taken_for_whole_minutes(db, device_ids, monkeypatch):
    """The comparison above is only meaningful if the minute rows are what answers: a minute row changed by hand
    shows in a bucketed read of a multiple of 60 s, and not in any other."""
    base = floor_minute(dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=30)
    db.transaction(lambda cur: state_history.record_points_many(
        cur, [(device_ids[0], base + dt.timedelta(seconds=s), {"t": s}) for s in (1, 2, 3)], 168))
    db.transaction(lambda cur: cur.execute(
        "UPDATE device_state_minutes SET num_max = 99 WHERE device_id = %s", (device_ids[0],)))

    def maximum(bucket: int):
        query = state_history.Query(device_ids[0], "t", None, None, 10, None, bucket, "max")
        return state_history.read_history(db, query, 168)["points"][0]["value"]

    assert (maximum(60), maximum(600), maximum(90), maximum(30)) == (99, 99, 3, 3)


def test_migration_backfills_the_minutes_of_stored_points():
    name, url = services.create_database()
    try:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                        "applied_at timestamptz NOT NULL DEFAULT now())")
            for migration in available_migrations():
                if migration.version < 13:
                    cur.execute(migration.sql)
                    cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                (migration.version, migration.name))
            cur.execute("INSERT INTO devices (device_id, name, device_type, secret_hash) VALUES "
                        "('old-1', 'old', 'sensor', 'x'), ('old-2', 'old', 'sensor', 'x')")
            rng = random.Random(13)
            start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)  # two days' partitions
            reports = random_reports(rng, "old-1", start, 30 * 3600, 2000) + random_reports(rng, "old-2", start,
                                                                                              600, 100)
            rows = [(device, prop, at, Json(value)) for device, at, changed in reports
                    for prop, value in sorted(changed.items())]
            cur.executemany("INSERT INTO device_state_history (device_id, property, at, value) "
                            "VALUES (%s, %s, %s, %s)", rows)
            assert migrate(url) == ["013_state_history_minutes"]
            stored, expected = stored_minutes(cur, ["old-1", "old-2"])
            assert len(expected) > 1000 and stored == expected
            # A writer that only inserts points (the previous release while pods roll, one row per statement as
            # here) keeps the minutes exact too: the trigger folds every INSERT in.
            more = random_reports(rng, "old-1", start, 30 * 3600, 300)
            cur.executemany("INSERT INTO device_state_history (device_id, property, at, value) "
                            "VALUES (%s, %s, %s, %s)", [(device, prop, at, Json(value)) for device, at, changed in more
                                                       for prop, value in sorted(changed.items())])
            stored, expected = stored_minutes(cur, ["old-1", "old-2"])
            assert stored == expected
            cur.execute("SELECT p.relname AS parent, c.relname AS part FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
                        "WHERE p.relname IN ('device_state_history', 'device_state_minutes')")
            parts = [(r["parent"], r["part"].removeprefix(r["parent"])) for r in cur.fetchall()]
            days = {table: sorted(day for parent, day in parts if parent == table)
                    for table in ("device_state_history", "device_state_minutes")}
            assert days["device_state_history"] == days["device_state_minutes"]
            assert len(days["device_state_minutes"]) > 5
        conn.close()
    finally:
        services.drop_database(name)


def test_retention_drops_and_moves_the_minutes_with_their_points(db, device_ids):
    old = dt.datetime(1998, 6, 10, 12, 0, 30, tzinfo=dt.UTC)

    def insert(cur):
        cur.execute("INSERT INTO device_state_history (device_id, property, at, value) VALUES (%s, 't', %s, '5')",
                    (device_ids[0], old))
        cur.execute("SELECT tableoid::regclass::text AS part FROM device_state_minutes WHERE device_id = %s",
                    (device_ids[0],))
        return [row["part"] for row in cur.fetchall()]

    def parts(cur):
        cur.execute("SELECT tableoid::regclass::text AS part, points FROM device_state_minutes "
                    "WHERE device_id = %s", (device_ids[0],))
        return [(row["part"], row["points"]) for row in cur.fetchall()]

    try:
        assert db.transaction(insert) == ["device_state_minutes_default"]
        made = state_history.maintain_partitions(db, 168, now=dt.datetime(1998, 6, 12, tzinfo=dt.UTC))
        assert "device_state_minutes_19980610" in made["created"]
        assert db.read(parts) == [("device_state_minutes_19980610", 1)]  # moved with its point
        later = state_history.maintain_partitions(db, 168, now=dt.datetime(1998, 7, 1, tzinfo=dt.UTC))
        assert {"device_state_history_19980610", "device_state_minutes_19980610"} <= set(later["dropped"])
        assert db.read(parts) == []
    finally:
        state_history.maintain_partitions(db, 168)  # today's partitions back, the old ones gone


def test_default_partition_purge_keeps_minutes_and_points_together(db, device_ids):
    """Points too old for a partition of their own (more than BACKFILL_DAYS back) stay in the default partitions;
    the purge of those cuts at the cut-off's minute, so a minute row never outlives some of its points."""
    old = dt.datetime(1997, 3, 3, 12, 0, 10, tzinfo=dt.UTC)
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO device_state_history (device_id, property, at, value) "
        "SELECT %s, 't', unnest(%s::timestamptz[]), '1'::jsonb",
        (device_ids[0], [old, old + dt.timedelta(seconds=30)])))
    later = old + dt.timedelta(days=9)
    try:
        # The cut-off (12:00:30) lies between the two points: the minute and both points stay (the cut is 12:00).
        state_history.maintain_partitions(db, 9 * 24, now=later + dt.timedelta(seconds=20))
        stored, expected = db.read(lambda cur: stored_minutes(cur, device_ids[:1]))
        assert stored == expected and [row[0] for row in stored.values()] == [2]
        state_history.maintain_partitions(db, 9 * 24, now=later + dt.timedelta(minutes=1))
        assert db.read(lambda cur: stored_minutes(cur, device_ids[:1])) == ({}, {})
    finally:
        state_history.maintain_partitions(db, 168)


def test_deleting_a_device_deletes_its_minutes(db, client, auth, device_ids):
    db.transaction(lambda cur: state_history.record_points_many(
        cur, [(device_ids[1], dt.datetime.now(dt.UTC), {"t": 1})], 168))
    assert client.delete(f"/api/v1/devices/{device_ids[1]}", headers=auth).status_code == 204
    assert db.read(lambda cur: stored_minutes(cur, device_ids[1:])) == ({}, {})


def test_numbers_keep_their_exact_value(db, device_ids):
    """Sums are numeric: no float rounding, however large or many the values."""
    at = floor_minute(dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=3)
    values = [0.1, 0.2, 10**20 + 1, -(10**20)]
    db.transaction(lambda cur: state_history.record_points_many(
        cur, [(device_ids[0], at + dt.timedelta(seconds=i), {"t": v}) for i, v in enumerate(values)], 168))
    query = state_history.Query(device_ids[0], "t", None, None, 10, None, 60, "avg")
    assert state_history.read_history(db, query, 168)["points"][0]["value"] == float(
        (decimal.Decimal("0.1") + decimal.Decimal("0.2") + 1) / 4)
