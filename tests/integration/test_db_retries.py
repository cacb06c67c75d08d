"""What app/infra/db.py retries, on a real PostgreSQL: a rolled-back conflict (deadlock) runs again on the same healthy
connection, a lost connection is replaced (and its pool retired), and the two writers that lock a device's
commands (device delete, relay ack batch) take their row locks in one order, so they never deadlock."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from app.infra.db import Database
from app.services.commands import acks, sweeps
from tests.conftest import capture_logs
from tests.support.services import wait_for


@pytest.fixture()
def probe_table(database):
    """A two-row table of this test's own."""
    name = f"probe_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL)")
        cur.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE {name}")
    conn.close()


def waiting_on_a_lock(monitor, pid: int) -> bool:
    with monitor.cursor() as cur:
        cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = cur.fetchone()
    return row is not None and row[0] == "Lock"


def test_a_deadlock_is_retried_on_the_same_connection_and_keeps_the_pool(database, probe_table):
    """The pool's transaction locks row 1, another session locks row 2 and waits for row 1, then the pool's
    transaction asks for row 2: a deadlock, which PostgreSQL resolves by rolling the pool's transaction back
    (its deadlock_timeout is the shorter). It runs again, on the same backend, and applies exactly once."""
    pool = Database(database, maxconn=2)
    other = psycopg2.connect(database)
    monitor = psycopg2.connect(database)
    monitor.autocommit = True
    first_locked, backends = threading.Event(), []

    def work(cur):
        cur.execute("SET LOCAL deadlock_timeout = '50ms'")
        cur.execute("SELECT pg_backend_pid() AS pid")
        backends.append(cur.fetchone()["pid"])
        cur.execute(f"UPDATE {probe_table} SET v = v + 1 WHERE id = 1")
        if len(backends) == 1:
            first_locked.set()
            wait_for(lambda: waiting_on_a_lock(monitor, other.get_backend_pid()), timeout=10,
                     message="the other session waiting for row 1")
        cur.execute(f"UPDATE {probe_table} SET v = v + 1 WHERE id = 2")
        return "done"

    def other_session():
        with other.cursor() as cur:
            cur.execute("SET deadlock_timeout = '10s'")
            assert first_locked.wait(10)
            cur.execute(f"UPDATE {probe_table} SET v = v + 10 WHERE id = 2")
            cur.execute(f"UPDATE {probe_table} SET v = v + 10 WHERE id = 1")  # waits for the pool's transaction
        other.commit()

    logs = capture_logs()
    try:
        with ThreadPoolExecutor(1) as executor:
            others = executor.submit(other_session)
            assert pool.transaction(work) == "done"
            others.result(timeout=20)
        # The pool was not retired: the next unit of work gets the very same connection again.
        after = pool.transaction(lambda cur: (cur.execute("SELECT pg_backend_pid() AS pid"), cur.fetchone())[1]["pid"])
        with monitor.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {probe_table} ORDER BY id")
            values = cur.fetchall()
    finally:
        other.close()
        monitor.close()
        pool.close()
    assert len(backends) == 2 and backends[0] == backends[1] == after, (backends, after)  # never discarded
    assert values == [(1, 11), (2, 11)]  # the rolled-back attempt left nothing; the retry applied once
    warnings = [line for line in logs() if "retrying once" in line["message"]]
    assert [line.get("sqlstate") for line in warnings] == ["40P01"], warnings


def test_a_lost_connection_is_replaced_and_the_unit_retried(database):
    """The other half of the rule still holds: a pooled connection killed by the server (57P01) is discarded."""
    pool = Database(database, maxconn=2)
    killer = psycopg2.connect(database)
    killer.autocommit = True
    pid_of = lambda cur: (cur.execute("SELECT pg_backend_pid() AS pid"), cur.fetchone())[1]["pid"]  # noqa: E731
    try:
        first = pool.transaction(pid_of)
        with killer.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (first,))
        wait_for(lambda: _gone(killer, first), timeout=10, message="the backend terminated")
        second = pool.transaction(pid_of)
    finally:
        killer.close()
        pool.close()
    assert second != first


def _gone(conn, pid: int) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()[0] == 0


def insert_command(db, device_id: str, message_id: str, created_offset: str) -> None:
    db.transaction(lambda cur: cur.execute(
        "INSERT INTO commands (message_id, device_id, command, qos, priority, status, created_at, expires_at) "
        "VALUES (%s, %s, 'x', 1, 5, 'sent', now() + %s::interval, now() + interval '1 hour')",
        (message_id, device_id, created_offset)))


def test_deleting_a_device_and_an_ack_batch_never_deadlock(database, db, make_device):
    """The relay locks a batch's commands in message-id order. Deleting a device used to lock its commands in
    scan order (insertion or newest-first), here the reverse: with both queued behind a third session's lock on
    the first command, the relay then held it and wanted the second, which the delete held. Now both lock in
    message-id order: the delete waits behind the relay, neither is rolled back, nothing is retried."""
    device_id = make_device()["device_id"]
    low, high = f"00000000-{uuid.uuid4().hex[:4]}-4000-8000-{uuid.uuid4().hex[:12]}", \
        f"ffffffff-{uuid.uuid4().hex[:4]}-4000-8000-{uuid.uuid4().hex[:12]}"
    insert_command(db, device_id, high, "0 seconds")  # first in the heap and newest: first in any scan
    insert_command(db, device_id, low, "-1 minute")
    gate, monitor = psycopg2.connect(database), psycopg2.connect(database)
    monitor.autocommit = True
    with gate.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        gate_pid = cur.fetchone()[0]
        cur.execute("SELECT 1 FROM commands WHERE message_id = %s FOR UPDATE", (low,))

    def blocked_behind_gate() -> int:
        with monitor.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> %s", (gate_pid,))
            return cur.fetchone()[0]

    batch = [acks.Ack(device_id, high, "completed"), acks.Ack(device_id, low, "completed")]
    logs = capture_logs()
    try:
        with ThreadPoolExecutor(2) as executor:
            relay = executor.submit(acks.apply_acks, db, batch)
            wait_for(lambda: blocked_behind_gate() == 1, timeout=10, message="the ack batch waiting")
            delete = executor.submit(sweeps.delete_device, db, device_id, 90)
            wait_for(lambda: blocked_behind_gate() == 2, timeout=10, message="the delete waiting too")
            gate.commit()
            outcomes, cancelled = relay.result(timeout=30), delete.result(timeout=30)
    finally:
        gate.close()
        monitor.close()
    assert [outcome.code for outcome in outcomes] == [None, None]
    assert cancelled == []  # the batch committed first: both commands were final when the delete got them
    assert [line["message"] for line in logs() if "retrying" in line["message"]] == []

    def statuses(cur):
        cur.execute("SELECT status FROM commands WHERE message_id = ANY(%s::uuid[])", ([low, high],))
        return sorted(row["status"] for row in cur.fetchall())

    assert db.transaction(statuses) == ["completed", "completed"]
