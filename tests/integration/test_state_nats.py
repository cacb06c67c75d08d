"""Device state over NATS through a real `uaip-hub relay` (docs/state.md, "NATS"): reports applied in batches
with the per-property timestamp rule, bad reports dropped and counted, `.state.get` request/reply, desired
published after a PATCH, and reports counting as heartbeats — dotted device ids included."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import nats
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.infra.messaging import Messaging
from app.infra.subjects import state_desired_subject, state_get_subject, state_reported_subject
from tests.conftest import unique_id
from tests.integration.test_state import THERMOSTAT_PROPERTIES, _iso, state_url
from tests.support.listen import NatsCollector
from tests.support.processes import start_relay
from tests.support.services import NATS_URL, free_port, wait_for

pytestmark = pytest.mark.process

TYPES = "/api/v1/device-types"


@pytest.fixture()
def publisher():
    messaging = Messaging([NATS_URL])
    assert messaging.wait_connected(10)
    yield messaging
    messaging.close()


def state_of(client, auth, device_id):
    return client.get(state_url(device_id), headers=auth).json


def reports_total(port: int, outcome: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "uaip_state_reports_total" and sample.labels.get("outcome") == outcome:
                return sample.value
    return 0.0


def request(subject: str, body: bytes = b"", timeout: float = 5.0) -> dict:
    async def ask():
        connection = await nats.connect(NATS_URL)
        try:
            reply = await connection.request(subject, body, timeout=timeout)
            return json.loads(reply.data)
        finally:
            await connection.close()

    return asyncio.run(ask())


def relay_listening(device_id: str) -> dict:
    """Wait until the relay answers `state.get` (so it is connected and has made its subscriptions: the report
    subscriptions are made before the state.get ones, on the same connection)."""

    def answer():
        try:
            reply = request(state_get_subject(device_id), b"", timeout=1)
        except Exception:  # noqa: BLE001 - not yet subscribed: no responders, or a timeout
            return None
        return reply if "version" in reply else None  # another run's relay on the shared server: not ours

    return wait_for(answer, timeout=30, message="the relay answering state.get")


def test_reports_on_nats_apply_in_order_and_count(client, auth, make_device, relay_env, publisher):
    port = free_port()
    relay = start_relay({**relay_env, "UAIP_RELAY_METRICS_PORT": str(port)})
    try:
        device = make_device(device_id=f"sensor.{uuid.uuid4().hex[:8]}.x")  # dotted ids work
        device_id = device["device_id"]
        relay_listening(device_id)
        now = dt.datetime.now(dt.UTC)
        subject = state_reported_subject(device_id)
        publisher.publish(subject, {"reported": {"t": 20, "h": 40}, "timestamp": _iso(now - dt.timedelta(seconds=5))})
        wait_for(lambda: state_of(client, auth, device_id)["reported"] == {"t": 20, "h": 40}, timeout=20,
                 message="the report applied")
        assert state_of(client, auth, device_id)["version"] == 1
        # Out of order: older for t (ignored), equal for h (applies); then a duplicate (no version bump).
        publisher.publish(subject, {"reported": {"t": 19}, "timestamp": _iso(now - dt.timedelta(seconds=9))})
        publisher.publish(subject, {"reported": {"h": 41}, "timestamp": _iso(now - dt.timedelta(seconds=5))})
        publisher.publish(subject, {"reported": {"h": 41}, "timestamp": _iso(now - dt.timedelta(seconds=4))})
        wait_for(lambda: reports_total(port, "applied") == 3 and reports_total(port, "ignored") == 1, timeout=20,
                 message="four reports counted")
        current = state_of(client, auth, device_id)
        assert current["reported"] == {"t": 20, "h": 41} and current["version"] == 2
        assert current["metadata"]["reported"]["h"]["timestamp"] == _iso(now - dt.timedelta(seconds=4))
        # A report is a heartbeat.
        seen = client.get(f"/api/v1/devices/{device_id}", headers=auth).json
        assert seen["status"] == "online" and seen["last_seen"]
        history = client.get(state_url(device_id, "/history"), query_string={"property": "h"}, headers=auth).json
        assert [p["value"] for p in history["points"]] == [40, 41]
    finally:
        relay.stop()


def test_bad_reports_are_dropped_whole_and_counted(client, auth, admin_auth, make_device, relay_env, publisher):
    port = free_port()
    relay = start_relay({**relay_env, "UAIP_RELAY_METRICS_PORT": str(port)})
    try:
        name = f"thermo-{uuid.uuid4().hex[:8]}"
        assert client.put(f"{TYPES}/{name}", json={"commands": {}, "properties": THERMOSTAT_PROPERTIES},
                          headers=admin_auth).status_code == 201
        device_id = make_device(device_type=name)["device_id"]
        relay_listening(device_id)
        subject = state_reported_subject(device_id)
        deep: object = 1
        for _ in range(40):
            deep = [deep]
        for body in (b"not json", b'{"reported": 1}', b'{"values": {}}',
                     json.dumps({"reported": {"deep": deep}}).encode(), b"[" * 100_000,
                     json.dumps({"reported": {"temperature": "warm"}}).encode(),
                     json.dumps({"reported": {"temperature": 20, "colour": "red"}}).encode(),
                     json.dumps({"reported": {"temperature": 20}, "timestamp": "soon"}).encode()):
            publisher.publish(subject, body)
        publisher.publish(subject, {"reported": {"temperature": 21.5}})
        wait_for(lambda: reports_total(port, "rejected") == 8 and reports_total(port, "applied") == 1, timeout=20,
                 message="eight rejected, one applied")
        current = state_of(client, auth, device_id)
        assert current["reported"] == {"temperature": 21.5} and current["version"] == 1
        assert "state report dropped" in relay.output()
    finally:
        relay.stop()


def test_state_get_answers_desired_and_delta(client, auth, make_device, relay):
    device = make_device(device_id=f"dotted.{uuid.uuid4().hex[:8]}")
    client.patch(state_url(device["device_id"], "/desired"), json={"target": 21, "mode": "heat"}, headers=auth)
    client.patch(state_url(device["device_id"], "/reported"), json={"reported": {"mode": "heat"}}, headers=auth)

    def answer():
        try:
            reply = request(state_get_subject(device["device_id"]), b"ignored body", timeout=2)
        except Exception:  # noqa: BLE001 - the relay may still be subscribing
            return None
        # The NATS server is shared: another test run's relay may answer first (without the device); ask again.
        return reply if "version" in reply else None

    reply = wait_for(answer, timeout=20, message="a state.get reply")
    assert reply == {"version": 2, "desired": {"target": 21, "mode": "heat"}, "delta": {"target": 21}}


def test_a_desired_patch_is_published_to_the_device(client, auth, make_device):
    device = make_device()
    with NatsCollector(NATS_URL, [state_desired_subject(device["device_id"])]) as desired:
        response = client.patch(state_url(device["device_id"], "/desired"), json={"target": 21}, headers=auth)
        assert response.status_code == 200
        [body] = desired.wait_for(lambda s, b: True)
        assert body == {"version": 1, "desired": {"target": 21}, "delta": {"target": 21}}
        client.put(f"/api/v1/devices/{device['device_id']}/properties/target", json=22, headers=auth)
        desired.wait_for(lambda s, b: b["desired"] == {"target": 22}, count=1)
        # A patch that changes nothing publishes nothing.
        client.patch(state_url(device["device_id"], "/desired"), json={"target": 22}, headers=auth)
        client.patch(state_url(device["device_id"], "/desired"), json={"other": 1}, headers=auth)
        desired.wait_for(lambda s, b: b["desired"] == {"target": 22, "other": 1})
        assert [b["version"] for b in desired.bodies()] == [1, 2, 3]


def test_a_report_for_an_unknown_device_is_rejected(relay_env, publisher, make_device):
    port = free_port()
    relay = start_relay({**relay_env, "UAIP_RELAY_METRICS_PORT": str(port)})
    try:
        relay_listening(make_device()["device_id"])
        ghost = unique_id("ghost")
        publisher.publish(state_reported_subject(ghost), {"reported": {"t": 1}})
        wait_for(lambda: reports_total(port, "rejected") == 1, timeout=20, message="rejected")
    finally:
        relay.stop()
