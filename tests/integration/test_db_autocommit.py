"""app/infra/db.py's fast paths on a real PostgreSQL: Database.read / Database.autocommit (statements outside a
transaction block, what they return, the pooled connection going back as it was, the one-round-trip "mark sent"
write) and execute_prepared (planned once per connection, healed when the session loses its statements)."""

import uuid

import psycopg2
import pytest

from app.core.timestamps import timestamp
from app.infra.db import Database, _prepared_forms, execute_prepared
from app.infra.messaging import MessagingUnavailable
from app.services.commands import messages, submit
from app.telemetry import tracing
from tests.conftest import capture_logs

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
    query = ("SELECT 'x' AS a, '2026-01-02 03:04:05.6789+00'::timestamptz AS at, NULL::timestamptz AS never, "
             "now() AS now")
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
    message_id = client.post(f"/api/v1/devices/{device_id}/command", json={"command": "x"},
                             headers=auth).json["message_id"]
    one_connection.transaction(lambda cur: cur.execute(
        "UPDATE commands SET status = 'queued', sent_at = NULL WHERE message_id = %s", (message_id,)))

    class Offline:
        def publish(self, *args, **kwargs):
            raise MessagingUnavailable("test: NATS is down")

    row = one_connection.read(lambda cur: (cur.execute(
        f"SELECT {messages.MESSAGE_COLUMNS} FROM commands WHERE message_id = %s", (message_id,)), cur.fetchone())[1])
    assert submit.publish_and_mark_sent(one_connection, Offline(), [row], 10.0) is False  # stays queued, due now
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

    assert submit.publish_and_mark_sent(one_connection, Online(), [row], 10.0) is True
    assert Online.published == [(f"uaip.devices.{device_id}.commands", message_id, False)]
    state = one_connection.read(lambda cur: (cur.execute(
        "SELECT status, attempts, next_attempt_at > now() + interval '5 seconds' AS backed_off FROM commands "
        "WHERE message_id = %s", (message_id,)), cur.fetchone())[1])
    assert state == {"status": "sent", "attempts": 2, "backed_off": True}
    setting = one_connection.read(lambda cur: (cur.execute("SHOW synchronous_commit"), cur.fetchone())[1])
    assert setting["synchronous_commit"] == "on"


PREPARED_PROBE = ("SELECT %(a)s::int + %(b)s::int AS sum, %(a)s::int * 2 AS twice, '100%%' AS text, "
                  "cardinality(%(ids)s::uuid[]) AS ids")


def _prepared_names(cur) -> list[str]:
    cur.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'uaip_%%' ORDER BY name")
    return [row["name"] for row in cur.fetchall()]


def test_a_prepared_statement_is_planned_once_per_connection(one_connection):
    def run(cur):
        execute_prepared(cur, PREPARED_PROBE, {"a": 20, "b": 2, "ids": [str(uuid.uuid4()), str(uuid.uuid4())]})
        return cur.fetchone(), _prepared_names(cur)

    first, names = one_connection.transaction(run)
    second, names_again = one_connection.transaction(run)  # the same connection: EXECUTE only
    assert first == second == {"sum": 22, "twice": 40, "text": "100%", "ids": 2}
    assert names == names_again == [_prepared_forms(PREPARED_PROBE)[0]]


def test_a_session_that_lost_its_prepared_statements_prepares_them_again(one_connection):
    one_connection.transaction(lambda cur: execute_prepared(cur, PREPARED_PROBE, {"a": 1, "b": 1, "ids": []}))
    one_connection.autocommit(lambda cur: cur.execute("DEALLOCATE ALL"))  # behind the pool's back
    logs = capture_logs()
    row = one_connection.transaction(lambda cur: (execute_prepared(cur, PREPARED_PROBE, {"a": 2, "b": 3, "ids": []}),
                                                  cur.fetchone())[1])
    assert row["sum"] == 5
    assert [line["sqlstate"] for line in logs() if "prepared statements" in line["message"]] == ["26000"]


def test_with_tracing_on_statements_run_as_their_own_text(one_connection, monkeypatch):
    """So that a span is named after the SQL (SELECT, INSERT), not EXECUTE."""
    monkeypatch.setattr(tracing, "active", True)
    seen = []

    def run(cur):
        real = cur.execute
        cur.execute = lambda sql, params=None: (seen.append(sql), real(sql, params))[1]
        execute_prepared(cur, PREPARED_PROBE, {"a": 3, "b": 4, "ids": []})
        return cur.fetchone()["sum"]

    assert one_connection.autocommit(run) == 7
    assert seen == [PREPARED_PROBE]


def test_placeholders_become_numbered_parameters():
    name, prepare, execute = _prepared_forms("SELECT %(x)s::int, %(y)s::text, %(x)s::int WHERE a LIKE 'b%%'")
    assert prepare == f"PREPARE {name} AS SELECT $1::int, $2::text, $1::int WHERE a LIKE 'b%'"
    assert execute == f"EXECUTE {name} (%(x)s::int, %(y)s::text)"  # each argument with its placeholder's cast
    assert len(name) <= 63
    assert name == _prepared_forms("SELECT %(x)s::int, %(y)s::text, %(x)s::int WHERE a LIKE 'b%%'")[0]
