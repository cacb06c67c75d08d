"""State properties in Thing Descriptions and their forms (docs/state.md): readproperty, writeproperty and
observeproperty (long poll) on real PostgreSQL and NATS, followed from the TD's own hrefs."""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest

from app import create_app
from tests.conftest import basic
from tests.integration.test_state import THERMOSTAT_PROPERTIES, report, state_url
from tests.support.services import wait_for
from tests.support.things import td_errors

TYPES = "/api/v1/device-types"


@pytest.fixture()
def thermostat(client, admin_auth, make_device):
    name = f"thermo-{uuid.uuid4().hex[:8]}"
    response = client.put(f"{TYPES}/{name}", json={"description": "Thermostat", "commands": {},
                                                   "properties": THERMOSTAT_PROPERTIES}, headers=admin_auth)
    assert response.status_code == 201, response.json
    return make_device(device_type=name)


def td_of(client, auth, device_id):
    response = client.get(f"/api/v1/devices/{device_id}/thing-description", headers=auth)
    assert response.status_code == 200
    document = response.get_json(force=True)
    assert td_errors(document) == []
    return document


def forms_by_op(prop):
    """The first form of each operation: the one a WoT consumer uses by default."""
    return {form["op"]: form for form in reversed(prop["forms"])}


def test_declared_properties_are_td_properties_with_forms(client, auth, thermostat):
    td = td_of(client, auth, thermostat["device_id"])
    temperature, target, mode = (td["properties"][n] for n in ("temperature", "target_temperature", "mode"))
    assert temperature["type"] == "number" and temperature["unit"] == "celsius"
    assert temperature["readOnly"] is True and temperature["observable"] is True
    assert set(forms_by_op(temperature)) == {"readproperty", "observeproperty"}
    assert target["readOnly"] is False and target["minimum"] == 5
    assert set(forms_by_op(target)) == {"readproperty", "writeproperty", "observeproperty"}
    assert forms_by_op(target)["observeproperty"]["subprotocol"] == "longpoll"
    assert forms_by_op(target)["writeproperty"]["scopes"] == ["device:command"]
    assert mode["observable"] is False and "observeproperty" not in forms_by_op(mode)
    assert {"status", "last_seen"} <= set(td["properties"])


def test_read_and_write_through_the_td_hrefs(client, auth, thermostat):
    device_id = thermostat["device_id"]
    td = td_of(client, auth, device_id)
    read_href = urlsplit(forms_by_op(td["properties"]["temperature"])["readproperty"]["href"]).path
    no_value = client.get(read_href, headers=auth)
    assert no_value.status_code == 404 and no_value.json["code"] == "PROPERTY_NO_VALUE"
    report(client, thermostat, {"temperature": 19.5})
    assert client.get(read_href, headers=auth).json == 19.5

    write_href = urlsplit(forms_by_op(td["properties"]["target_temperature"])["writeproperty"]["href"]).path
    written = client.put(write_href, data="21", headers=auth)  # no Content-Type: read as JSON
    assert written.status_code == 204, written.json
    state = client.get(state_url(device_id), headers=auth).json
    assert state["desired"] == {"target_temperature": 21} and state["delta"] == {"target_temperature": 21}
    invalid = client.put(write_href, json=50, headers=auth)
    assert invalid.status_code == 422 and invalid.json["code"] == "INVALID_VALUE"
    assert invalid.json["details"]["errors"][0]["pointer"] == ""
    read_only = client.put(read_href, json=20, headers=auth)
    assert read_only.status_code == 422 and read_only.json["code"] == "PROPERTY_NOT_WRITABLE"
    unknown = client.get(f"/api/v1/devices/{device_id}/properties/colour", headers=auth)
    assert unknown.status_code == 404 and unknown.json["code"] == "PROPERTY_NOT_FOUND"
    assert client.put(f"/api/v1/devices/{device_id}/properties/colour", json=1, headers=auth).status_code == 404
    assert client.put(write_href, data="", headers=auth).status_code == 400
    assert client.put(write_href, data="x", headers={**auth, "Content-Type": "text/plain"}).status_code == 415


def test_writing_needs_device_command(client, token_for, thermostat):
    reader = {"Authorization": f"Bearer {token_for('device:read')}"}
    response = client.put(f"/api/v1/devices/{thermostat['device_id']}/properties/target_temperature", json=20,
                          headers=reader)
    assert response.status_code == 403


def test_untyped_devices_read_and_write_any_member(client, auth, make_device):
    device = make_device()
    url = f"/api/v1/devices/{device['device_id']}/properties/brightness"
    assert client.get(url, headers=auth).json["code"] == "PROPERTY_NO_VALUE"
    assert client.put(url, json={"level": 3}, headers=auth).status_code == 204
    assert client.get(state_url(device["device_id"]), headers=auth).json["desired"] == {"brightness": {"level": 3}}
    report(client, device, {"brightness": {"level": 3}})
    assert client.get(url, headers=auth).json == {"level": 3}
    # The hub's own properties keep working.
    assert client.get(f"/api/v1/devices/{device['device_id']}/properties/status", headers=auth).json == "online"


def test_observe_answers_the_next_change(app, auth, thermostat):
    device_id = thermostat["device_id"]
    client = app.test_client()
    report(client, thermostat, {"temperature": 18})
    answers = []

    def observe():
        answers.append(app.test_client().get(f"/api/v1/devices/{device_id}/properties/temperature/observe",
                                             headers=auth))

    watcher = threading.Thread(target=observe)
    started = time.monotonic()
    watcher.start()
    # The observer is registered for wake-ups just before it reads the current value.
    wait_for(lambda: device_id in app.extensions["uaip.state_observers"]._events, message="the observer to start")
    report(client, thermostat, {"temperature": 18})  # a repeated value is no change
    report(client, thermostat, {"temperature": 18.5})
    watcher.join(20)
    assert answers and answers[0].status_code == 200 and answers[0].json == 18.5
    assert time.monotonic() - started < 10


def test_observe_answers_the_current_value_after_the_wait(hub_env, make_device, admin_auth, auth, client):
    app = create_app({**hub_env, "UAIP_OBSERVE_SECONDS": "1"})
    observer = app.test_client()
    device = make_device()
    started = time.monotonic()
    empty = observer.get(f"/api/v1/devices/{device['device_id']}/properties/t/observe", headers=auth)
    assert empty.status_code == 404 and empty.json["code"] == "PROPERTY_NO_VALUE"
    assert 0.9 <= time.monotonic() - started < 5
    report(observer, device, {"t": 7})
    assert observer.get(f"/api/v1/devices/{device['device_id']}/properties/t/observe", headers=auth).json == 7


def test_observe_answers_at_once_when_every_waiter_slot_is_taken(hub_env, make_device, auth):
    app = create_app({**hub_env, "UAIP_MAX_WAITERS": "0", "UAIP_OBSERVE_SECONDS": "20"})
    client = app.test_client()
    device = make_device()
    report(client, device, {"t": 1})
    started = time.monotonic()
    answer = client.get(f"/api/v1/devices/{device['device_id']}/properties/t/observe", headers=auth)
    assert answer.status_code == 200 and answer.json == 1
    assert time.monotonic() - started < 3


def test_observe_refuses_unobservable_properties(client, auth, thermostat):
    response = client.get(f"/api/v1/devices/{thermostat['device_id']}/properties/mode/observe", headers=auth)
    assert response.status_code == 404 and response.json["code"] == "PROPERTY_NOT_FOUND"


def test_a_device_reads_its_state_with_basic_auth_after_a_put(client, auth, thermostat):
    client.put(f"/api/v1/devices/{thermostat['device_id']}/properties/target_temperature", json=22, headers=auth)
    own = client.get(state_url(thermostat["device_id"]),
                     headers=basic(thermostat["device_id"], thermostat["device_secret"]))
    assert own.json["delta"] == {"target_temperature": 22}


def test_observe_as_server_sent_events_from_the_tds_second_form(client, auth, thermostat):
    from tests.integration.test_events_sse import Frames

    device_id = thermostat["device_id"]
    forms = td_of(client, auth, device_id)["properties"]["temperature"]["forms"]
    observe = [form for form in forms if form["op"] == "observeproperty"]
    assert [form["subprotocol"] for form in observe] == ["longpoll", "sse"]  # long poll first: consumers' default
    assert observe[1]["contentType"] == "text/event-stream" and observe[1]["scopes"] == ["device:read"]
    frames = Frames(client.get(urlsplit(observe[1]["href"]).path, headers={**auth, "Accept": "text/event-stream"},
                               buffered=False))
    try:
        report(client, thermostat, {"target_temperature": 20})  # another property: no frame
        report(client, thermostat, {"temperature": 21.5})
        report(client, thermostat, {"temperature": None})  # removed: null
        first, second = frames.next_event(), frames.next_event()
        assert first["data"] == "21.5" and second["data"] == "null"
        assert first["id"] and first["id"] != second["id"]
    finally:
        frames.close()
