"""Database.read / Database.autocommit (app/db.py) on a real PostgreSQL: statements outside a transaction block,
what they return, that the pooled connection goes back as it was, and the one-round-trip "mark sent" write."""

import psycopg2
import pytest

from app.db import Database
from app.services import commands
from app.timestamps import timestamp

STATEMENT_IS_ITS_OWN_TRANSACTION = "SELECT now() = statement_timestamp() AS alone, pg_backend_pid() AS pid"


@pytest.fixture()
def one_connection(database):
    pool = Database(database, maxconn=1)  # every unit of work gets the same connection
    yield pool
    pool.close()


def test_a_read_runs_without_begin_and_leaves_the_connection_transactional(one_connection):
    # psycopg2 sends BEGIN before a transaction's first statement, so now() (the transaction's start) is earlier
    # than the statement's start; a statement that is its own transaction has both equal.
    read = one_connection.read(lambda cur: (cur.execute(STATEMENT_IS_ITS_OWN_TRANSACTION), cur.fetchone())[1])
    inside = one_connection.transaction(lambda cur: (cur.execute(STATEMENT_IS_ITS_OWN_TRANSACTION), cur.fetchone())[1])
    assert read["pid"] == inside["pid"]  # the same pooled connection...
    assert read["alone"] is True and inside["alone"] is False  # ...back in transaction mode after the read


def test_read_rows_as_tuples_with_api_timestamps(one_connection):
    query = "SELECT 'x' AS a, '2026-01-02 03:04:05.6789+00'::timestamptz AS at, NULL::timestamptz AS never, now() AS now"
    row = one_connection.read(lambda cur: (cur.execute(query), cur.fetchone())[1], tuples=True, api_timestamps=True)
    assert row[:3] == ("x", "2026-01-02T03:04:05.678Z", None)
    as_datetime = one_connection.read(lambda cur: (cur.execute(query), cur.fetchone())[1])
    assert isinstance(row[3], str) and as_datetime["at"] is not None and timestamp(as_datetime["at"]) == row[1]


def test_a_failed_statement_in_autocommit_leaves_nothing_open(one_connection):
    with pytest.raises(psycopg2.errors.DivisionByZero):
        one_connection.autocommit(lambda cur: cur.execute("SELECT 1 / 0"))
    assert one_connection.transaction(lambda cur: (cur.execute("SELECT 1 AS one"), cur.fetchone())[1]) == {"one": 1}


def test_marking_sent_is_one_statement_whose_local_setting_does_not_leak(one_connection, make_device, client, auth):
    """publish_and_mark_sent's write: its synchronous_commit = off lasts for its own statement's transaction only."""
    device_id = make_device()["device_id"]
    message_id = client.post(f"/api/v1/devices/{device_id}/command", json={"command": "x"}, headers=auth).json["message_id"]
    one_connection.transaction(lambda cur: cur.execute(
        "UPDATE commands SET status = 'queued', sent_at = NULL WHERE message_id = %s", (message_id,)))

    class Offline:
        def publish(self, *args, **kwargs):
            raise commands.MessagingUnavailable("test: NATS is down")

    row = one_connection.read(lambda cur: (cur.execute(
        f"SELECT {commands.MESSAGE_COLUMNS} FROM commands WHERE message_id = %s", (message_id,)), cur.fetchone())[1])
    assert commands.publish_and_mark_sent(one_connection, Offline(), [row], 10.0) is False  # stays queued, due now
    setting = one_connection.read(lambda cur: (cur.execute("SHOW synchronous_commit"), cur.fetchone())[1])
    assert setting["synchronous_commit"] == "on"
    state = one_connection.read(lambda cur: (cur.execute(
        "SELECT status, next_attempt_at <= now() AS due FROM commands WHERE message_id = %s", (message_id,)),
        cur.fetchone())[1])
    assert state == {"status": "queued", "due": True}

    class Online:
        published = []

        def publish(self, subject, body, **kwargs):
            self.published.append((subject, body["message_id"], kwargs.get("wait")))

    assert commands.publish_and_mark_sent(one_connection, Online(), [row], 10.0) is True
    assert Online.published == [(f"uaip.devices.{device_id}.commands", message_id, False)]
    state = one_connection.read(lambda cur: (cur.execute(
        "SELECT status, attempts, next_attempt_at > now() + interval '5 seconds' AS backed_off FROM commands "
        "WHERE message_id = %s", (message_id,)), cur.fetchone())[1])
    assert state == {"status": "sent", "attempts": 2, "backed_off": True}
    setting = one_connection.read(lambda cur: (cur.execute("SHOW synchronous_commit"), cur.fetchone())[1])
    assert setting["synchronous_commit"] == "on"
