"""A stored command is never answered with an error, and a finished one never ends `expired` because an ack was
lost (docs/decisions.md, "Once stored, the answer is 202" and "Redelivery"). Real PostgreSQL, NATS and relay processes;
the failures are made by the test: a trigger that fails or blocks the `sent` mark, a table lock under `?wait`, a
device whose first completion report is lost, a relay killed between a device's two acks.
"""

import signal
import threading
import uuid

import psycopg2
import pytest

from app import create_app
from app.cli.simulate import DeviceSimulator
from app.infra.subjects import command_subject
from tests.support.hub_api import Api, token
from tests.support.listen import NatsCollector
from tests.support.processes import start_relay
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process

ACCEPTED_FIELDS = {"message_id", "device_id", "status", "created_at", "expires_at"}
LOCK_KEY = 0x75AC0004  # an advisory lock only these tests take


class MarkSentSabotage:
    """A trigger on `commands` that makes the queued → sent UPDATE of one device's commands fail at once
    ("fails"), or wait for an advisory lock the test holds until the statement times out ("blocked")."""

    def __init__(self, database_url: str, device_id: str, mode: str) -> None:
        self.conn = psycopg2.connect(database_url)
        self.conn.autocommit = True
        self.name = f"sabotage_{uuid.uuid4().hex[:10]}"
        action = ("RAISE EXCEPTION 'the test refuses this update'" if mode == "fails"
                  else f"PERFORM pg_advisory_xact_lock({LOCK_KEY})")
        with self.conn.cursor() as cur:
            if mode == "blocked":
                cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            cur.execute(f"CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                        f"BEGIN {action}; RETURN NEW; END $$")
            cur.execute(f"CREATE TRIGGER {self.name} BEFORE UPDATE ON commands FOR EACH ROW "
                        f"WHEN (OLD.device_id = %s AND OLD.status = 'queued' AND NEW.status = 'sent') "
                        f"EXECUTE FUNCTION {self.name}()", (device_id,))

    def remove(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP TRIGGER IF EXISTS {self.name} ON commands")
            cur.execute(f"DROP FUNCTION IF EXISTS {self.name}()")
            cur.execute("SELECT pg_advisory_unlock_all()")
        self.conn.close()


@pytest.mark.parametrize("mode", ["fails", "blocked"])
def test_a_failed_sent_mark_is_still_202_and_the_command_completes(relay_env, api_client_factory, relay, mode):
    app = create_app(relay_env)
    client = app.test_client()
    api = Api(client, token(client, *api_client_factory()))
    device_id = api.register()["device_id"]
    with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=0.5) as simulator:
        wait_for(lambda: api.device_status(device_id) == "online", timeout=20, message="online")
        sabotage = MarkSentSabotage(relay_env["DATABASE_URL"], device_id, mode)
        try:
            status, body, headers = api.command(device_id)
        finally:
            sabotage.remove()
        assert status == 202, body
        assert set(body) == ACCEPTED_FIELDS and body["status"] == "queued"  # as stored: the mark did not commit
        assert headers["Location"].endswith(body["message_id"])
        wait_for(lambda: api.status(body["message_id"]) == "completed", timeout=30, message="completed")
        assert body["message_id"] in simulator.received_ids()


def test_a_database_error_while_waiting_is_202_with_the_accepted_body(relay_env, api_client_factory):
    """A table lock held by the test makes the waiter's re-read hit the statement timeout."""
    app = create_app(relay_env)
    client = app.test_client()
    api = Api(client, token(client, *api_client_factory()))
    device_id = api.register()["device_id"]  # nothing answers it
    answer = {}

    def submit():
        answer["response"] = api.command(device_id, "?wait=25")

    with NatsCollector(NATS_URL, [command_subject(device_id)]) as device_side:
        waiter = threading.Thread(target=submit)
        waiter.start()
        [envelope] = device_side.wait_for(lambda s, b: True)
    locker = psycopg2.connect(relay_env["DATABASE_URL"])
    try:
        with locker.cursor() as cur:
            wait_for(lambda: (cur.execute("SELECT status FROM commands WHERE message_id = %s",
                                          (envelope["message_id"],)), cur.fetchone())[1] == ("sent",),
                     message="the command marked sent")
            cur.execute("LOCK TABLE commands IN ACCESS EXCLUSIVE MODE")
            waiter.join(timeout=20)
            assert not waiter.is_alive(), "the waiting request did not answer"
    finally:
        locker.rollback()
        locker.close()
    status, body, headers = answer["response"]
    assert status == 202, body
    assert set(body) == ACCEPTED_FIELDS and body["message_id"] == envelope["message_id"] and body["status"] == "sent"
    assert headers["Location"].endswith(body["message_id"])
    assert app.extensions["uaip.waiters"].waiting() == 0  # the slot came back


class FirstOutcomeLost(DeviceSimulator):
    """A device whose first completion report of each command never reaches NATS (its link dropped it); asked
    again (a re-sent envelope), it reports the remembered outcome, as every device must."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lost: set[str] = set()

    def _ack(self, device_id, body):
        if body["status"] in ("completed", "failed") and body["message_id"] not in self.lost:
            self.lost.add(body["message_id"])
            return True
        return super()._ack(device_id, body)


def test_a_lost_completion_report_is_recovered_while_the_relay_keeps_running(api, relay):
    device_id = api.register()["device_id"]
    with FirstOutcomeLost(NATS_URL, [device_id], heartbeat_seconds=0.5) as device:
        wait_for(lambda: api.device_status(device_id) == "online", timeout=20, message="online")
        _, accepted, _ = api.command(device_id, ttl_ms=120_000)
        message_id = accepted["message_id"]
        wait_for(lambda: message_id in device.lost, timeout=20, message="the first completion report lost")
        wait_for(lambda: api.status(message_id) == "completed", timeout=30,
                 message="completed after the acknowledged command was re-sent")
        assert len([e for e in device.received if e["message_id"] == message_id]) >= 2


def test_a_relay_killed_between_the_two_acks_still_ends_completed(api, relay_env, relay):
    device_id = api.register()["device_id"]
    with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=0.5) as device:
        wait_for(lambda: api.device_status(device_id) == "online", timeout=20, message="online")
        _, accepted, _ = api.command(device_id, ttl_ms=120_000, params={"delay_ms": 4000})
        message_id = accepted["message_id"]
        wait_for(lambda: api.status(message_id) == "acknowledged", timeout=20, message="acknowledged")
        relay.signal(signal.SIGKILL)
        relay.wait(timeout=10)
        assert message_id not in device.outcomes, "the device finished before the relay was killed"
        wait_for(lambda: message_id in device.outcomes, timeout=20, message="completion reported, no relay listening")
        assert api.status(message_id) == "acknowledged"
        replacement = start_relay(relay_env)
        try:
            wait_for(lambda: api.status(message_id) == "completed", timeout=30, message="completed after the restart")
        finally:
            replacement.stop()
