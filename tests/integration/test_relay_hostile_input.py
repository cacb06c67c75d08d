"""Whatever reaches NATS, the relay goes on (docs/nats-security.md, "Whatever arrives, the relay goes on"):
hostile bodies on every device subject are dropped and counted, one device's flood does not hold up another
device's ack, and a device row held locked does not drop other devices' heartbeats.

Each test here runs a real `uaip-hub relay` on a private NATS server: floods and junk stay off the shared one,
where other test runs' relays listen on the same wildcard subjects."""

from __future__ import annotations

import time
import uuid

import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.infra.messaging import Messaging
from app.infra.subjects import ack_subject, heartbeat_subject
from tests.support.hub_api import Api, token
from tests.support.processes import start_relay
from tests.support.servers import NatsServer
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.process


class PrivateHub:
    def __init__(self, relay_env, hub_env, api_client_factory) -> None:
        self.nats = NatsServer().start()
        self.metrics_port = free_port()
        self.relay = start_relay({**relay_env, "NATS_URL": self.nats.url,
                                  "UAIP_RELAY_METRICS_PORT": str(self.metrics_port)})
        self.app = create_app({**hub_env, "NATS_URL": self.nats.url})
        client = self.app.test_client()
        self.api = Api(client, token(client, *api_client_factory()))
        self.publisher = Messaging([self.nats.url], name="uaip-test-device")
        assert self.publisher.wait_connected(10)

    def dropped(self, kind: str, reason: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "uaip_nats_messages_dropped_total" and sample.labels == {
                        "subject_kind": kind, "reason": reason}:
                    return sample.value
        return 0.0

    def round_trip(self) -> None:
        """A normal command, acked on NATS, completes: the relay is alive and applying."""
        device_id = self.api.register()["device_id"]
        _, accepted, _ = self.api.command(device_id)
        self.publisher.publish(heartbeat_subject(device_id), {"status": "online"})
        self.publisher.publish(ack_subject(device_id), {"message_id": accepted["message_id"], "status": "completed",
                                                        "result": {"ok": True}})
        wait_for(lambda: self.api.status(accepted["message_id"]) == "completed", timeout=20, message="round trip")
        wait_for(lambda: self.api.device_status(device_id) == "online", timeout=20, message="heartbeat applied")

    def close(self) -> None:
        self.publisher.close()
        self.app.extensions["uaip.messaging"].close()
        self.relay.stop()
        self.nats.cleanup()


@pytest.fixture(scope="module")
def hub(relay_env, hub_env, api_client_factory):
    hub = PrivateHub(relay_env, hub_env, api_client_factory)
    yield hub
    hub.close()


def assert_relay_healthy(hub: PrivateHub) -> None:
    assert hub.relay.running(), hub.relay.output()[-3000:]
    output = hub.relay.output()
    for sign in ("Traceback", "relay step failed", "relay work failed", "could not be handled"):
        assert sign not in output, output[-3000:]


def test_the_deeply_nested_heartbeat_that_ended_the_relay_is_dropped_and_counted(hub):
    """Regression: `[`x1500 `]`x1500 on a heartbeat subject raised RecursionError and ended Relay.run()."""
    device_id = hub.api.register()["device_id"]
    before = hub.dropped("heartbeat", "too_deep")
    hub.publisher.publish(heartbeat_subject(device_id), b"[" * 1500 + b"]" * 1500)
    hub.publisher.flush()
    wait_for(lambda: hub.dropped("heartbeat", "too_deep") == before + 1, timeout=20, message="counted")
    assert hub.api.device_status(device_id) == "pending"  # the bad heartbeat applied nothing
    hub.round_trip()
    assert_relay_healthy(hub)


def test_hostile_bodies_on_every_device_subject_are_dropped_and_a_round_trip_still_works(hub):
    device_id = hub.api.register()["device_id"]
    message_id = hub.api.command(device_id)[1]["message_id"]
    huge = b'{"message_id": "%s", "status": "completed", "result": "%s"}' % (message_id.encode(), b"x" * 200_000)
    bodies = {
        "too_deep": [b"[" * 1500 + b"]" * 1500, b'{"a":' * 2000 + b"1" + b"}" * 2000, b"[" * 60_000],
        "too_large": [huge, b"[" * 70_000],
        "invalid_json": [b"\xff\xfe\x00\x01garbage", b'{"message_id": "\xc3\x28", "status": "failed"}', b"{",
                         b'{"status": NaN}', b'{"status": "online"}\x00'],
        "invalid": [b"[]", b"42", b'"text"', b"null", b'{"message_id": 7, "status": "completed"}',
                    b'{"message_id": "%s", "status": ["completed"]}' % message_id.encode(), b'{"status": 5}'],
    }
    # Every kind of subject a device publishes on, including a dotted id (more tokens) and ids never registered.
    subjects = [ack_subject(device_id), heartbeat_subject(device_id), ack_subject("no.such.device"),
                heartbeat_subject(f"ghost-{uuid.uuid4().hex[:6]}")]
    before = {(kind, reason): hub.dropped(kind, reason) for kind in ("acks", "heartbeat") for reason in bodies}
    sent: dict[tuple[str, str], int] = {}
    for subject in subjects:
        kind = subject.rpartition(".")[2]
        for reason, payloads in bodies.items():
            for payload in payloads:
                hub.publisher.publish(subject, payload)
                sent[(kind, reason)] = sent.get((kind, reason), 0) + 1
    # An ack whose message_id is no message id at all, and a heartbeat whose status is of the wrong type.
    hub.publisher.publish(ack_subject(device_id), {"message_id": "x" * 40, "status": "completed"})
    hub.publisher.flush()

    def all_counted() -> bool:
        return all(hub.dropped(*key) >= before[key] + count for key, count in sent.items())

    wait_for(all_counted, timeout=30, message="every hostile body counted")
    wait_for(lambda: hub.dropped("acks", "unknown_message") >= 1, timeout=20, message="unknown id counted")
    assert hub.api.status(message_id) == "sent"  # nothing hostile applied
    hub.round_trip()
    assert_relay_healthy(hub)
    assert "malformed heartbeat dropped" in hub.relay.output() and "malformed ack dropped" in hub.relay.output()


def test_one_devices_flood_does_not_delay_another_devices_ack_by_more_than_a_second(hub):
    flooder = hub.api.register()["device_id"]
    device_id = hub.api.register()["device_id"]
    message_id = hub.api.command(device_id)[1]["message_id"]
    flood = 20_000
    # Junk in turn: an ack the relay must parse, check and look up (a UUID no command has, a 3 KB result), an id
    # that is no message id, too deep, not JSON.
    result = ",".join(str(n) for n in range(600)).encode()
    junk = [b'{"message_id": "nope", "status": "completed"}', b"[" * 40, b"{"]
    before = hub.dropped("acks", "device_backlog") + hub.dropped("acks", "device_rate")
    bodies = [b'{"message_id": "%s", "status": "completed", "result": [%s]}' % (str(uuid.uuid4()).encode(), result)
              if n % 2 == 0 else junk[n % 3] for n in range(flood)]
    # Paced at 5,000 a second (a rate any relay reads as it comes), so what the other device's ack waits for is
    # the relay's own queue, not NATS: applied first-come, the junk would pile up ahead of it.
    started = time.monotonic()
    for chunk in range(0, flood, 250):
        for body in bodies[chunk:chunk + 250]:
            hub.publisher.publish(ack_subject(flooder), body, wait=False)
        time.sleep(max(0.0, started + (chunk + 250) / 5_000 - time.monotonic()))
    # Published behind the whole flood, on the same connection: it reaches the relay after every junk ack.
    hub.publisher.publish(ack_subject(device_id), {"message_id": message_id, "status": "completed"}, wait=False)
    hub.publisher.flush(timeout=20)
    published = time.monotonic()
    wait_for(lambda: hub.api.status(message_id) == "completed", timeout=20, interval=0.01, message="ack applied")
    delay = time.monotonic() - published
    assert delay < 1.0, f"the other device's ack waited {delay:.2f} s behind the flood"
    # The flood itself was bounded per device (the overflow was refused and counted), not applied ahead of it.
    wait_for(lambda: hub.dropped("acks", "device_backlog") + hub.dropped("acks", "device_rate") > before,
             timeout=20, message="the flood's overflow counted")
    hub.round_trip()
    assert_relay_healthy(hub)


def test_a_locked_device_row_does_not_drop_other_devices_heartbeats(hub, database):
    locked_id = hub.api.register()["device_id"]
    others = [hub.api.register()["device_id"] for _ in range(3)]
    before = hub.dropped("heartbeat", "locked")
    holder = psycopg2.connect(database)
    try:
        with holder.cursor() as cur:  # an open transaction holding the device's row lock
            cur.execute("SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE", (locked_id,))
        for device_id in [locked_id, *others]:
            hub.publisher.publish(heartbeat_subject(device_id), {"status": "online"})
        hub.publisher.flush()
        for device_id in others:
            wait_for(lambda d=device_id: hub.api.device_status(d) == "online", timeout=10,
                     message="other devices' heartbeats applied while one row is locked")
        wait_for(lambda: hub.dropped("heartbeat", "locked") >= before + 1, timeout=10, message="locked counted")
        # The relay is not stuck behind the lock: another round trip completes while it is still held.
        hub.round_trip()
    finally:
        holder.rollback()
        holder.close()
    # Once the lock is gone, the device's next heartbeat applies.
    assert hub.api.device_status(locked_id) == "pending"
    hub.publisher.publish(heartbeat_subject(locked_id), b"")
    wait_for(lambda: hub.api.device_status(locked_id) == "online", timeout=10, message="heartbeat after unlock")
    assert_relay_healthy(hub)
