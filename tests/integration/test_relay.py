"""The relay as a real `uaip-hub relay` subprocess with simulated devices over NATS: delivery, acks, expiry,
offline sweeps, and recovery from NATS, PostgreSQL and relay restarts (docs/architecture.md, "The path of a
command")."""

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.cli.simulate import DeviceSimulator
from app.infra.db import Database
from app.infra.messaging import Messaging
from app.infra.migrate import migrate
from app.infra.subjects import DEVICE_EVENTS_SUBJECT, ack_subject, heartbeat_subject
from app.services.clients import create_client
from tests.conftest import ALL_SCOPES, basic
from tests.support.hub_api import Api, token
from tests.support.listen import NatsCollector
from tests.support.processes import HubServer, Relay, start_relay
from tests.support.servers import NatsServer, PostgresServer
from tests.support.services import NATS_URL, free_port, wait_for

pytestmark = pytest.mark.process

DEVICES = "/api/v1/devices"
MESSAGES = "/api/v1/messages"


def all_final(api, message_ids, status="completed"):
    return all(api.status(mid) == status for mid in message_ids)


# --- delivery and acks ---------------------------------------------------------------------------------


def test_command_round_trip_through_gunicorn_relay_and_simulated_device(relay_env, api_client_factory, relay):
    with HubServer(relay_env) as hub:
        api = Api(hub.url, token(hub.url, *api_client_factory()))
        device = api.register()
        with DeviceSimulator(NATS_URL, [device["device_id"]], heartbeat_seconds=30) as sim:
            wait_for(lambda: api.device_status(device["device_id"]) == "online", timeout=20, message="device online")
            status, body, headers = api.command(device["device_id"], "?wait=20", params={"x": 1},
                                                headers={"X-Request-ID": "e2e-req-1"})
            assert status == 200, body
            assert body["status"] == "completed" and body["result"] == {"command": "echo", "echo": {"x": 1}}
            assert body["request_id"] == "e2e-req-1" and body["acknowledged_at"] and body["completed_at"]
            [envelope] = [e for e in sim.received if e["message_id"] == body["message_id"]]
            assert envelope["request_id"] == "e2e-req-1" and envelope["device_id"] == device["device_id"]

            status, failed, _ = api.command(device["device_id"], "?wait=20", params={"fail": True, "error": "jammed"})
            assert status == 200 and failed["status"] == "failed" and failed["error"] == "jammed"

            # Without wait: 202, then completed through polling.
            status, accepted, _ = api.command(device["device_id"])
            assert status == 202
            wait_for(lambda: api.status(accepted["message_id"]) == "completed", timeout=20, message="completed")


def test_acks_and_heartbeats_published_on_nats_are_applied(api, relay):
    device = api.register()
    device_id = device["device_id"]
    publisher = Messaging([NATS_URL])
    try:
        assert publisher.wait_connected(10)
        with NatsCollector(NATS_URL, [DEVICE_EVENTS_SUBJECT]) as events:
            publisher.publish(heartbeat_subject(device_id), {"status": "online", "battery": 80})
            wait_for(lambda: api.device_status(device_id) == "online", timeout=20, message="online via NATS")
            events.wait_for(lambda s, b: b["device_id"] == device_id and b["event"] == "online")
        _, accepted, _ = api.command(device_id)
        message_id = accepted["message_id"]
        publisher.publish(ack_subject(device_id), {"message_id": message_id, "status": "acknowledged"})
        publisher.publish(ack_subject(device_id),
                          {"message_id": message_id, "status": "completed", "result": {"ok": 1}})
        wait_for(lambda: api.status(message_id) == "completed", timeout=20, message="ack applied")
        # A late, backwards ack on NATS changes nothing; neither does another device's ack.
        publisher.publish(ack_subject(device_id), {"message_id": message_id, "status": "acknowledged"})
        _, other, _ = api.command(device_id)
        publisher.publish(ack_subject("someone-else"), {"message_id": other["message_id"], "status": "completed"})
        publisher.publish(ack_subject(device_id), {"message_id": other["message_id"], "status": "failed", "error": "e"})
        wait_for(lambda: api.status(other["message_id"]) == "failed", timeout=20, message="second ack")
        assert api.call("GET", f"/messages/{message_id}")[1]["result"] == {"ok": 1}
        assert api.status(message_id) == "completed"
    finally:
        publisher.close()


def test_a_poisoned_ack_is_dropped_alone_and_the_rest_of_the_batch_applies(api, relay):
    """Acks PostgreSQL could not store (a non-finite number, NUL, an unpaired surrogate) published together with
    good ones: each bad one is dropped and logged on its own, the good ones complete, the batch never fails."""
    device_id = api.register()["device_id"]
    good = [api.command(device_id)[1]["message_id"] for _ in range(4)]
    bad = [api.command(device_id)[1]["message_id"] for _ in range(3)]
    poisoned = [
        f'{{"message_id": "{bad[0]}", "status": "completed", "result": {{"temperature": NaN}}}}',
        f'{{"message_id": "{bad[1]}", "status": "failed", "error": "jammed\\u0000"}}',
        f'{{"message_id": "{bad[2]}", "status": "completed", "result": {{"note": "\\ud800"}}}}',
    ]
    publisher = Messaging([NATS_URL])
    try:
        assert publisher.wait_connected(10)
        subject = ack_subject(device_id)
        publisher.publish(subject, {"message_id": good[0], "status": "completed"})
        for body in poisoned:
            publisher.publish(subject, body.encode())
        for message_id in good[1:]:
            publisher.publish(subject, {"message_id": message_id, "status": "completed", "result": {"ok": True}})
        publisher.flush()
        wait_for(lambda: all_final(api, good), timeout=20, message="the good acks applied")
        wait_for(lambda: relay.output().count("malformed ack dropped") >= 3, timeout=20, message="bad acks logged")
    finally:
        publisher.close()
    assert [api.status(message_id) for message_id in bad] == ["sent"] * 3
    output = relay.output()
    assert "relay work failed" not in output, output[-3000:]
    dropped = [line for line in output.splitlines() if "malformed ack dropped" in line]
    assert len(dropped) == 3 and all(device_id in line for line in dropped)
    assert any("not finite" in line for line in dropped) and any("surrogate" in line for line in dropped)


def relay_commands_total(port: int, status: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "uaip_commands_total" and sample.labels.get("status") == status:
                return sample.value
    return 0.0


def test_relay_serves_metrics_for_the_acks_it_applies(api, relay_env):
    port = free_port()
    relay = start_relay({**relay_env, "UAIP_RELAY_METRICS_PORT": str(port)})
    publisher = Messaging([NATS_URL])
    try:
        assert relay_commands_total(port, "completed") == 0
        device_id = api.register()["device_id"]
        _, accepted, _ = api.command(device_id)
        assert publisher.wait_connected(10)
        publisher.publish(ack_subject(device_id), {"message_id": accepted["message_id"], "status": "completed"})
        wait_for(lambda: relay_commands_total(port, "completed") == 1, timeout=20, message="relay counted the ack")
    finally:
        publisher.close()
        relay.stop()


def test_relay_expires_commands_at_their_ttl(api, relay):
    device = api.register()  # never heartbeats: nothing acks
    _, accepted, _ = api.command(device["device_id"], ttl_ms=1000)
    status, body, _ = api.command(device["device_id"], "?wait=20", ttl_ms=1000)
    assert status == 200 and body["status"] == "expired"
    wait_for(lambda: api.status(accepted["message_id"]) == "expired", timeout=20, message="expired")
    code, refused, _ = api.call("POST", f"/messages/{accepted['message_id']}/ack", json={"status": "completed"},
                                headers=basic(device["device_id"], device["device_secret"]))
    assert code == 409 and refused["code"] == "MESSAGE_EXPIRED"


def test_offline_is_published_once_per_transition_with_two_relays(relay_env, api_client_factory, hub_env):
    env = {**relay_env, "HEARTBEAT_TIMEOUT_SECONDS": "1"}
    app = create_app(env)
    try:
        client = app.test_client()
        api = Api(client, token(client, *api_client_factory()))
        first, second = api.register(), api.register()
        with NatsCollector(NATS_URL, [DEVICE_EVENTS_SUBJECT]) as events:
            relays = [start_relay(env), start_relay(env)]
            try:
                beat = lambda d: client.post(f"{DEVICES}/{d['device_id']}/heartbeat",  # noqa: E731
                                             headers=basic(d["device_id"], d["device_secret"]))
                beat(first)
                offline = lambda d: lambda s, b: b["device_id"] == d["device_id"] and b["event"] == "offline"  # noqa: E731
                events.wait_for(offline(first), timeout=20)
                # By the time a later device has gone offline too, both relays have swept past the first one.
                beat(second)
                events.wait_for(offline(second), timeout=20)
                assert len(events.bodies(offline(first))) == 1
                assert [b["event"] for b in events.bodies(lambda s, b: b["device_id"] == first["device_id"])] == \
                    ["online", "offline"]
            finally:
                codes = [relay.stop() for relay in relays]
        assert codes == [0, 0]
    finally:
        app.extensions["uaip.messaging"].close()


def test_the_sweeper_takes_a_silent_error_device_offline_once(api, relay, db, client):
    """A device that last reported `error` and then went quiet is stored `offline` by the relay, which publishes
    the `offline` event (with its last heartbeat) exactly once."""
    device = api.register()
    device_id = device["device_id"]
    with NatsCollector(NATS_URL, [DEVICE_EVENTS_SUBJECT]) as events:
        beat = client.post(f"{DEVICES}/{device_id}/heartbeat", json={"status": "error"},
                           headers=basic(device_id, device["device_secret"]))
        assert beat.json["status"] == "error"
        db.transaction(lambda cur: cur.execute(
            "UPDATE devices SET last_seen = now() - interval '1 hour' WHERE device_id = %s", (device_id,)))
        offline = lambda s, b: b["device_id"] == device_id and b["event"] == "offline"  # noqa: E731
        [event] = events.wait_for(offline, timeout=20)
        assert event["last_seen"]

        def stored_status(cur):
            cur.execute("SELECT status FROM devices WHERE device_id = %s", (device_id,))
            return cur.fetchone()["status"]

        assert db.transaction(stored_status) == "offline"
        # Later sweeps find nothing more to report: one event per transition. The relay logs each sweep's
        # offline count nowhere, so wait for a command that outlives several sweeps to expire instead.
        _, short, _ = api.command(device_id, ttl_ms=1000)
        wait_for(lambda: api.status(short["message_id"]) == "expired", timeout=20, message="sweeps went by")
        assert len(events.bodies(offline)) == 1


# --- lifecycle and recovery ----------------------------------------------------------------------------


def test_relay_exits_0_on_sigterm_and_sigint(relay_env):
    for signum in (signal.SIGTERM, signal.SIGINT):
        relay = start_relay(relay_env)
        relay.signal(signum)
        assert relay.wait(timeout=30) == 0, relay.output()
        assert "relay stopped" in relay.output()


def test_nothing_lost_while_nats_is_down(relay_env, api_client_factory):
    with NatsServer() as nats:
        env = {**relay_env, "NATS_URL": nats.url}
        with HubServer(env) as hub, Relay(env) as relay:
            wait_for(lambda: "relay started" in relay.output(), timeout=30, message="relay start")
            api = Api(hub.url, token(hub.url, *api_client_factory()))
            device = api.register()
            with DeviceSimulator(nats.url, [device["device_id"]], heartbeat_seconds=0.5) as sim:
                wait_for(lambda: api.device_status(device["device_id"]) == "online", timeout=20, message="online")
                nats.stop()
                results = [api.command(device["device_id"], params={"n": i}) for i in range(20)]
                assert [status for status, _, _ in results] == [202] * 20
                assert {body["status"] for _, body, _ in results} == {"queued"}
                ids = [body["message_id"] for _, body, _ in results]
                nats.start()
                wait_for(lambda: all_final(api, ids), timeout=60, message="all 20 commands completed")
                assert set(ids) <= sim.received_ids()
            assert relay.running() and hub.running()


def test_relay_restart_mid_stream_loses_nothing(api, relay_env, relay):
    device = api.register()
    with DeviceSimulator(NATS_URL, [device["device_id"]], heartbeat_seconds=0.5):
        wait_for(lambda: api.device_status(device["device_id"]) == "online", timeout=20, message="online")
        ids = []
        submitted_half = threading.Event()

        def submit():
            for i in range(30):
                ids.append(api.command(device["device_id"], params={"n": i})[1]["message_id"])
                if i == 10:
                    submitted_half.set()

        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(submit)
            submitted_half.wait(30)
            assert relay.stop() == 0
            replacement = start_relay(relay_env)
            done.result(60)
        try:
            wait_for(lambda: all_final(api, ids), timeout=60, message="all 30 commands completed")
        finally:
            replacement.stop()


def test_relay_survives_a_postgresql_restart(relay_env):
    with PostgresServer() as postgres:
        url = postgres.create_database("uaip_relay_" + uuid.uuid4().hex[:8])
        migrate(url)
        env = {**relay_env, "DATABASE_URL": url}
        pool = Database(url, maxconn=2)
        client_id, secret = (lambda c: (c[0].client_id, c[1]))(create_client(pool, "pg-restart", ALL_SCOPES))
        pool.close()
        app = create_app(env)
        try:
            client = app.test_client()
            api = Api(client, token(client, client_id, secret))
            device = api.register()
            with Relay(env) as relay, DeviceSimulator(NATS_URL, [device["device_id"]], heartbeat_seconds=0.5):
                wait_for(lambda: api.device_status(device["device_id"]) == "online", timeout=30, message="online")
                before = api.command(device["device_id"])[1]["message_id"]
                wait_for(lambda: api.status(before) == "completed", timeout=20, message="completed before restart")
                postgres.restart()
                after = wait_for(lambda: api.command(device["device_id"])[1]["message_id"], timeout=30,
                                 message="submit after the restart")
                wait_for(lambda: api.status(after) == "completed", timeout=30, message="completed after restart")
                assert relay.running()
                assert relay.stop() == 0
        finally:
            app.extensions["uaip.messaging"].close()
