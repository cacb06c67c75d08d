"""Command metrics in one process, on real PostgreSQL and NATS: time to completion observed once per finished
command, acks by source and outcome, final statuses counted once, redeliveries by trigger, NATS connection state.
(The same metrics on a live gunicorn and relay: tests/process/test_metrics_live.py.)"""

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from app.infra.db import get_db
from app.infra.messaging import Messaging, get_messaging
from app.services.commands import acks, sweeps
from tests.conftest import basic
from tests.support.servers import NatsServer
from tests.support.services import wait_for

MESSAGES = "/api/v1/messages"


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Snapshot:
    """Metric values before an action, to assert exact differences after it (the registry is process-wide)."""

    SERIES = [
        ("uaip_command_completion_seconds_count", {"status": "completed"}),
        ("uaip_command_completion_seconds_count", {"status": "failed"}),
        ("uaip_command_completion_seconds_sum", {"status": "completed"}),
        ("uaip_command_completion_seconds_bucket", {"status": "completed", "le": "30.0"}),
        ("uaip_command_completion_seconds_bucket", {"status": "completed", "le": "60.0"}),
        ("uaip_commands_total", {"status": "completed"}),
        ("uaip_commands_total", {"status": "failed"}),
        ("uaip_commands_total", {"status": "acknowledged"}),
        ("uaip_commands_total", {"status": "expired"}),
        ("uaip_commands_total", {"status": "sent"}),
        *[("uaip_acks_total", {"source": "rest", "outcome": outcome})
          for outcome in ("applied", "duplicate", "expired", "invalid_transition", "not_found", "forbidden")],
        *[("uaip_command_redeliveries_total", {"reason": reason}) for reason in ("retry", "restart", "device_online")],
    ]

    def __init__(self):
        self.before = {self.key(name, labels): sample(name, **labels) for name, labels in self.SERIES}

    @staticmethod
    def key(name, labels):
        return name + "".join(f",{k}={v}" for k, v in sorted(labels.items()))

    def changes(self) -> dict[str, float]:
        """Every tracked series that moved, with its difference."""
        after = {self.key(name, labels): sample(name, **labels) for name, labels in self.SERIES}
        return {key: after[key] - self.before[key] for key in after if after[key] != self.before[key]}


def submit(client, auth, device_id) -> str:
    r = client.post(f"/api/v1/devices/{device_id}/command", json={"command": "x"}, headers=auth)
    assert r.status_code == 202, r.json
    return r.json["message_id"]


def ack(client, device, message_id, status, **extra):
    return client.post(f"{MESSAGES}/{message_id}/ack", json={"status": status, **extra},
                       headers=basic(device["device_id"], device["device_secret"]))


def backdate(db, message_id, seconds):
    db.transaction(lambda cur: cur.execute(
        "UPDATE commands SET created_at = now() - make_interval(secs => %s) WHERE message_id = %s",
        (seconds, message_id)))


@pytest.fixture()
def device(make_device):
    return make_device()


def test_a_completed_command_is_observed_once_with_its_time_since_creation(client, auth, device, db):
    message_id = submit(client, auth, device["device_id"])
    backdate(db, message_id, 42)  # created 42 s ago: lands in the 60 s bucket, not the 30 s one
    snapshot = Snapshot()
    assert ack(client, device, message_id, "acknowledged").status_code == 200
    assert ack(client, device, message_id, "completed", result={"ok": True}).status_code == 200
    assert ack(client, device, message_id, "completed").status_code == 200  # a duplicate changes nothing
    changes = snapshot.changes()
    completion_sum = changes.pop("uaip_command_completion_seconds_sum,status=completed")
    assert 42 <= completion_sum < 42 + 30
    assert changes == {
        "uaip_command_completion_seconds_count,status=completed": 1,
        "uaip_command_completion_seconds_bucket,le=60.0,status=completed": 1,
        "uaip_commands_total,status=acknowledged": 1,
        "uaip_commands_total,status=completed": 1,
        "uaip_acks_total,outcome=applied,source=rest": 2,
        "uaip_acks_total,outcome=duplicate,source=rest": 1,
    }


def test_a_failed_command_is_observed_under_failed(client, auth, device):
    message_id = submit(client, auth, device["device_id"])
    snapshot = Snapshot()
    assert ack(client, device, message_id, "failed", error="jammed").status_code == 200
    changes = snapshot.changes()
    assert changes.pop("uaip_command_completion_seconds_count,status=failed") == 1
    assert changes == {
        "uaip_commands_total,status=acknowledged": 1,  # reached implicitly: the device reported failed at once
        "uaip_commands_total,status=failed": 1,
        "uaip_acks_total,outcome=applied,source=rest": 1,
    }


def test_an_ack_that_overtakes_the_sent_mark_still_counts_sent_once(client, auth, device, db):
    """A fast device can ack before the submitting worker records `sent`: the ack then moves the command from
    queued, and counts the steps it skipped (the worker's late mark finds nothing to mark and counts nothing)."""
    message_id = submit(client, auth, device["device_id"])
    db.transaction(lambda cur: cur.execute(
        "UPDATE commands SET status = 'queued', sent_at = NULL WHERE message_id = %s", (message_id,)))
    snapshot = Snapshot()
    assert ack(client, device, message_id, "completed").status_code == 200
    changes = snapshot.changes()
    changes.pop("uaip_command_completion_seconds_sum,status=completed")
    assert changes == {
        "uaip_commands_total,status=sent": 1,
        "uaip_commands_total,status=acknowledged": 1,
        "uaip_commands_total,status=completed": 1,
        "uaip_command_completion_seconds_count,status=completed": 1,
        "uaip_command_completion_seconds_bucket,le=30.0,status=completed": 1,
        "uaip_command_completion_seconds_bucket,le=60.0,status=completed": 1,
        "uaip_acks_total,outcome=applied,source=rest": 1,
    }
    message = client.get(f"{MESSAGES}/{message_id}", headers=auth).json
    assert message["sent_at"] and message["acknowledged_at"] and message["completed_at"]


def test_refused_acks_are_counted_by_outcome_and_never_observed(client, auth, device, make_device, db):
    done = submit(client, auth, device["device_id"])
    assert ack(client, device, done, "completed").status_code == 200
    late = submit(client, auth, device["device_id"])
    db.transaction(lambda cur: cur.execute(
        "UPDATE commands SET expires_at = now() - interval '1 second' WHERE message_id = %s", (late,)))
    other = make_device()
    snapshot = Snapshot()
    assert ack(client, device, done, "failed").status_code == 409                     # invalid_transition
    assert ack(client, device, late, "completed").status_code == 409                  # expired (recorded now)
    assert ack(client, device, late, "completed").status_code == 409                  # expired (already)
    assert ack(client, other, done, "completed").status_code == 403                   # forbidden
    assert ack(client, device, "0" * 8 + "-0000-4000-8000-" + "0" * 12, "completed").status_code == 404
    assert snapshot.changes() == {
        "uaip_commands_total,status=expired": 1,  # the first late ack records the expiry, once
        "uaip_acks_total,outcome=invalid_transition,source=rest": 1,
        "uaip_acks_total,outcome=expired,source=rest": 2,
        "uaip_acks_total,outcome=forbidden,source=rest": 1,
        "uaip_acks_total,outcome=not_found,source=rest": 1,
    }


def test_racing_completions_count_one_completion(client, auth, device, app):
    """Many acks finishing one command at once (relay and REST alike end in apply_acks): one wins, one count."""
    message_id = submit(client, auth, device["device_id"])
    snapshot = Snapshot()

    def complete(_):
        with app.app_context():
            return acks.apply_acks(get_db(), [acks.Ack(device["device_id"], message_id, "completed")],
                                       source="rest")[0].changed

    with ThreadPoolExecutor(8) as pool:
        changed = list(pool.map(complete, range(16)))
    assert changed.count(True) == 1
    changes = snapshot.changes()
    assert changes["uaip_command_completion_seconds_count,status=completed"] == 1
    assert changes["uaip_commands_total,status=completed"] == 1
    assert changes["uaip_commands_total,status=acknowledged"] == 1  # skipped by the ack, counted once
    assert changes["uaip_acks_total,outcome=applied,source=rest"] == 1
    assert changes["uaip_acks_total,outcome=duplicate,source=rest"] == 15


def test_redeliveries_are_counted_apart_from_first_deliveries(client, auth, device, app, db):
    sent = submit(client, auth, device["device_id"])
    queued = submit(client, auth, device["device_id"])
    db.transaction(lambda cur: cur.execute(
        "UPDATE commands SET status = 'queued', sent_at = NULL, attempts = 0 WHERE message_id = %s", (queued,)))
    snapshot = Snapshot()
    with app.app_context():
        published = sweeps.redeliver_for_devices(get_db(), get_messaging(), [device["device_id"]], 1.0)
    assert published == 2
    assert snapshot.changes() == {
        "uaip_commands_total,status=sent": 1,                           # the queued one: its first delivery
        "uaip_command_redeliveries_total,reason=device_online": 1,      # the sent one: a redelivery
    }
    statuses = {m: client.get(f"{MESSAGES}/{m}", headers=auth).json["status"] for m in (sent, queued)}
    assert statuses == {sent: "sent", queued: "sent"}


def test_the_periodic_pass_resends_due_commands_as_retries(client, auth, device, app, db):
    """The relay's sweep (redeliver_due): a sent command whose back-off has passed is published again."""
    due = submit(client, auth, device["device_id"])
    db.transaction(lambda cur: cur.execute(
        "UPDATE commands SET next_attempt_at = now() - interval '1 second' WHERE message_id = %s", (due,)))
    snapshot = Snapshot()
    with app.app_context():
        published = sweeps.redeliver_due(get_db(), get_messaging(), 1.0)
    assert published >= 1
    assert snapshot.changes()["uaip_command_redeliveries_total,reason=retry"] >= 1
    row = db.transaction(lambda cur: (cur.execute(
        "SELECT attempts, next_attempt_at > now() AS backed_off FROM commands WHERE message_id = %s", (due,)),
        cur.fetchone())[1])
    assert row == {"attempts": 2, "backed_off": True}


def test_nats_connected_gauge_follows_the_connection():
    """Connected → 1, server gone → 0 (nats-py reconnecting), server back → 1, closed → 0."""
    connected = lambda: REGISTRY.get_sample_value("uaip_nats_connected")  # noqa: E731
    with NatsServer() as nats:
        messaging = Messaging([nats.url])
        try:
            assert messaging.wait_connected(10)
            assert connected() == 1
            nats.stop()
            wait_for(lambda: connected() == 0, timeout=20, message="gauge 0 while NATS is down")
            nats.start()
            wait_for(lambda: connected() == 1, timeout=30, message="gauge 1 after the reconnect")
        finally:
            messaging.close()
    assert connected() == 0


def test_every_new_series_exists_before_its_first_event(client):
    """Series exist from start-up with 0, so rate() and the alerts see the first event (and absent() nothing)."""
    text = client.get("/metrics").get_data(as_text=True)
    for line in ('uaip_acks_total{outcome="applied",source="rest"}',
                 'uaip_acks_total{outcome="malformed",source="relay"}',
                 'uaip_command_redeliveries_total{reason="retry"}',
                 'uaip_command_completion_seconds_count{status="completed"}',
                 'uaip_command_completion_seconds_bucket{le="3600.0",status="failed"}'):
        assert line in text, line
