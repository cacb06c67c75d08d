"""The relay's sweep runs on a thread of its own: a batch of device messages never waits behind a sweep, and the
sweep's gauge still stops when the main loop stops turning (docs/observability.md)."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest

from app.cli import relay as relay_module
from app.cli.relay import Relay
from app.core.config import load_settings
from app.infra.db import Database
from app.infra.messaging import Messaging
from app.infra.subjects import state_reported_subject
from app.telemetry import metrics
from tests.integration.test_state import state_url
from tests.integration.test_state_nats import relay_listening
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process


@pytest.fixture()
def relay_settings(hub_env):
    return load_settings({**hub_env, "UAIP_RELAY_SWEEP_SECONDS": "0.2", "UAIP_RELAY_METRICS_PORT": "0",
                          "UAIP_RELAY_QUEUE_GROUP": f"uaip-relay-sweep-{uuid.uuid4().hex[:8]}"})


def test_a_report_is_applied_while_a_sweep_is_under_way(client, auth, make_device, database, relay_settings,
                                                         monkeypatch):
    in_sweep, release = threading.Event(), threading.Event()
    expire_due = relay_module.sweeps.expire_due

    def slow_expire_due(db):  # the sweep's first step, held until the test lets it go
        in_sweep.set()
        release.wait(60)
        return expire_due(db)

    monkeypatch.setattr(relay_module.sweeps, "expire_due", slow_expire_due)
    db = Database(database, maxconn=4)
    messaging, publisher = Messaging([NATS_URL], name="uaip-test-relay"), Messaging([NATS_URL])
    relay = Relay(db, messaging, relay_settings)
    runner = threading.Thread(target=relay.run, name="test-relay", daemon=True)
    runner.start()
    try:
        device_id = make_device()["device_id"]
        relay_listening(device_id)
        assert in_sweep.wait(10), "the sweep never started"
        assert publisher.wait_connected(10)
        publisher.publish(state_reported_subject(device_id), orjson.dumps({"reported": {"t": 21.5}}))
        wait_for(lambda: client.get(state_url(device_id), headers=auth).json["reported"].get("t") == 21.5,
                 timeout=10, message="the report applied while the sweep is held")
        assert not release.is_set() and runner.is_alive()
    finally:
        release.set()
        relay.request_stop()
        runner.join(20)
        publisher.close()
        db.close()
    assert not runner.is_alive()


def test_the_sweep_gauge_stops_when_the_main_loop_stops_turning(database, relay_settings):
    gauge = metrics.relay_last_sweep_timestamp_seconds.labels(queue_group=relay_settings.relay_queue_group)
    db = Database(database, maxconn=2)
    relay = Relay(db, Messaging([NATS_URL], name="uaip-test-relay"), relay_settings)
    try:
        relay.loop_turned_at = time.monotonic()
        relay._sweep()
        marked = gauge._value.get()
        assert marked > 0
        relay.loop_turned_at = time.monotonic() - relay_module.LOOP_ALIVE_SECONDS - 1  # a loop stuck on one batch
        time.sleep(0.01)
        relay._sweep()
        assert gauge._value.get() == marked
    finally:
        db.close()
