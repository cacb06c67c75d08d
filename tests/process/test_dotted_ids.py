"""Device ids with dots (and `:`, `-`, `_`) work end to end over NATS: a real relay applies their heartbeats and
acks, and a simulated device with such an id completes a command (docs/decisions.md, "Dotted device ids")."""

import uuid

import pytest

from app.cli.simulate import DeviceSimulator
from app.infra.messaging import Messaging
from app.infra.subjects import ack_subject, command_subject, heartbeat_subject
from tests.support.listen import NatsCollector
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process


def dotted_ids() -> list[str]:
    tag = uuid.uuid4().hex[:8]
    deepest = ".".join(["t"] * 55 + [tag])  # 56 tokens, 119 characters
    return [f"sensor.{tag}", f"a.b.c.{tag}", f"plant-3:line_2.valve_{tag}", f"{tag}:x-y_z", deepest]


def test_heartbeats_and_acks_of_dotted_ids_reach_postgresql(api, relay):
    publisher = Messaging([NATS_URL])
    try:
        assert publisher.wait_connected(10)
        for device_id in dotted_ids():
            assert api.register(device_id)["device_id"] == device_id
            publisher.publish(heartbeat_subject(device_id), {"status": "online"})
            # Each check below runs to its end inside this iteration; the default arguments only say so to the linter.
            wait_for(lambda device_id=device_id: api.device_status(device_id) == "online", timeout=20,
                     message=f"{device_id} online")

            with NatsCollector(NATS_URL, [command_subject(device_id)]) as device_side:
                status, accepted, _ = api.command(device_id)
                assert status == 202 and accepted["status"] == "sent", accepted
                device_side.wait_for(lambda s, b, accepted=accepted: b["message_id"] == accepted["message_id"])
            publisher.publish(ack_subject(device_id), {"message_id": accepted["message_id"], "status": "acknowledged"})
            wait_for(lambda accepted=accepted: api.status(accepted["message_id"]) == "acknowledged", timeout=20,
                     message=f"{device_id}: acknowledged over NATS")
            publisher.publish(ack_subject(device_id), {"message_id": accepted["message_id"], "status": "completed",
                                                       "result": {"ok": True}})
            wait_for(lambda accepted=accepted: api.status(accepted["message_id"]) == "completed", timeout=20,
                     message=f"{device_id}: completed over NATS")
    finally:
        publisher.close()


def test_a_simulated_device_with_a_dotted_id_completes_a_command(api, relay):
    device_id = f"building.7.floor.2.thermostat-{uuid.uuid4().hex[:6]}"
    api.register(device_id)
    with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=0.5):
        wait_for(lambda: api.device_status(device_id) == "online", timeout=20, message="online via NATS heartbeats")
        status, body, _ = api.command(device_id, "?wait=20", params={"setpoint": 21})
    assert status == 200 and body["status"] == "completed" and body["result"]["echo"] == {"setpoint": 21}
