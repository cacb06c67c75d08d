"""A device type that changes while commands to its devices are open: those that no longer fit are cancelled with
error `type_changed` and never delivered; the others are delivered with the new `type_version` in their envelope.
With a real relay subprocess and a simulated device on NATS."""

import uuid

import pytest
from psycopg2.extras import Json

from app.cli.simulate import DeviceSimulator
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process

TYPES = "/api/v1/device-types"


def thermostat(maximum: int) -> dict:
    return {"commands": {"set_temperature": {"params": {
        "type": "object", "properties": {"value": {"type": "number", "maximum": maximum}}, "required": ["value"]}}}}


def message(client, auth, message_id) -> dict:
    response = client.get(f"/api/v1/messages/{message_id}", headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def stored_type_version(db, message_id):
    def query(cur):
        cur.execute("SELECT device_type, type_version FROM commands WHERE message_id = %s", (message_id,))
        return cur.fetchone()

    return db.transaction(query)


def submit(client, auth, device_id, value) -> str:
    response = client.post(f"/api/v1/devices/{device_id}/command",
                           json={"command": "set_temperature", "params": {"value": value}, "ttl_ms": 120_000},
                           headers=auth)
    assert response.status_code == 202, response.json
    return response.json["message_id"]


@pytest.fixture()
def offline_thermostat(client, admin_auth, make_device):
    """A device of a freshly declared type (version 1: value ≤ 35) that has never connected."""
    name = f"thermo-{uuid.uuid4().hex[:8]}"
    response = client.put(f"{TYPES}/{name}", json=thermostat(35), headers=admin_auth)
    assert response.status_code == 201 and response.json["version"] == 1
    return make_device(device_type=name)["device_id"], name


def test_tightening_a_type_cancels_open_commands_that_no_longer_fit(client, auth, admin_auth, db, relay,
                                                                     offline_thermostat):
    device_id, name = offline_thermostat
    too_hot = submit(client, auth, device_id, 30)
    still_fine = submit(client, auth, device_id, 20)
    assert stored_type_version(db, too_hot) == {"device_type": name, "type_version": 1}

    response = client.put(f"{TYPES}/{name}", json=thermostat(25), headers=admin_auth)
    assert response.status_code == 200 and response.json["version"] == 2

    cancelled = message(client, auth, too_hot)
    assert cancelled["status"] == "cancelled" and cancelled["error"] == "type_changed", cancelled
    assert stored_type_version(db, still_fine)["type_version"] == 2

    with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=30) as device:
        wait_for(lambda: message(client, auth, still_fine)["status"] == "completed", timeout=30,
                 message="the command that still fits to be delivered and completed")
        envelopes = [e for e in device.received if e["message_id"] == still_fine]
        assert envelopes and all(e["device_type"] == name and e["type_version"] == 2 for e in envelopes), envelopes
        assert [e for e in device.received if e["message_id"] == too_hot] == []
    assert message(client, auth, too_hot)["status"] == "cancelled"


def test_the_relay_checks_again_before_delivering(client, auth, db, relay, offline_thermostat):
    """A type changed without the API's immediate re-check (as if the process that committed the PUT died right
    after): the relay checks the command against the current version before it delivers it."""
    device_id, name = offline_thermostat
    too_hot = submit(client, auth, device_id, 30)

    def tighten(cur):
        cur.execute("UPDATE device_types SET commands = %s, version = version + 1, updated_at = now() "
                    "WHERE name = %s", (Json(thermostat(25)["commands"]), name))

    db.transaction(tighten)
    with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=30) as device:
        wait_for(lambda: message(client, auth, too_hot)["status"] == "cancelled", timeout=30,
                 message="the relay to cancel the command that no longer fits")
        assert message(client, auth, too_hot)["error"] == "type_changed"
        fine = submit(client, auth, device_id, 20)
        wait_for(lambda: message(client, auth, fine)["status"] == "completed", timeout=30,
                 message="a command that fits the new version to complete")
        assert [e["type_version"] for e in device.received if e["message_id"] == fine] == [2]
        assert [e for e in device.received if e["message_id"] == too_hot] == []
