"""The event log as a JSON long poll (docs/events.md): what each change records, resume, filters and errors."""

from __future__ import annotations

import threading
import time

import pytest

from app import create_app
from tests.conftest import basic, unique_id

EVENTS = "/api/v1/events"
DEVICES = "/api/v1/devices"


def poll(client, auth, **query):
    response = client.get(EVENTS, query_string=query, headers={**auth, "Accept": "application/json"})
    assert response.status_code == 200, response.json
    return response.json


def now_cursor(client, auth):
    body = poll(client, auth)
    assert body["events"] == [] and isinstance(body["next"], str)
    return body["next"]


def events_for(client, auth, after, device_id, **query):
    return poll(client, auth, after=after, device_id=device_id, limit=1000, **query)["events"]


def test_no_after_starts_live_and_every_device_change_is_one_event(client, auth, make_device):
    start = now_cursor(client, auth)
    device = make_device(device_type="sensor")
    device_id = device["device_id"]
    client.patch(f"{DEVICES}/{device_id}", json={"name": "renamed"}, headers=auth)
    secret = basic(device_id, device["device_secret"])
    for _ in range(3):  # the first heartbeat brings it online; the others only move last_seen
        assert client.post(f"{DEVICES}/{device_id}/heartbeat", headers=secret).status_code == 200
    assert client.post(f"{DEVICES}/{device_id}/heartbeat", json={"status": "error"}, headers=secret).status_code == 200
    assert client.delete(f"{DEVICES}/{device_id}", headers=auth).status_code == 204

    events = events_for(client, auth, start, device_id)
    assert [event["type"] for event in events] == [
        "device.registered", "device.updated", "device.online", "device.updated", "device.deleted"]
    for event in events:
        assert set(event) == {"id", "type", "device_id", "at", "data"}
        assert event["device_id"] == device_id
        assert "device_secret" not in event["data"] and "secret_hash" not in event["data"]
    assert events[1]["data"]["name"] == "renamed"
    assert events[2]["data"]["status"] == "online"
    assert events[3]["data"]["status"] == "error"
    assert events[4]["data"]["name"] == "renamed"  # the device's last state
    assert len({event["id"] for event in events}) == len(events)


def test_command_status_for_every_status_reached(client, auth, make_device):
    device = make_device()
    start = now_cursor(client, auth)
    submitted = client.post(f"{DEVICES}/{device['device_id']}/command", json={"command": "ping"}, headers=auth)
    assert submitted.status_code == 202
    message_id = submitted.json["message_id"]
    secret = basic(device["device_id"], device["device_secret"])
    # A device that reports `completed` straight away also reaches `acknowledged` on the way.
    done = client.post(f"/api/v1/messages/{message_id}/ack", json={"status": "completed", "result": {"ok": 1}},
                       headers=secret)
    assert done.status_code == 200, done.json

    events = events_for(client, auth, start, device["device_id"], types="command.status")
    assert [event["data"]["status"] for event in events] == ["queued", "sent", "acknowledged", "completed"]
    assert events[-1]["data"] == {"message_id": message_id, "command": "ping", "status": "completed",
                                  "result": {"ok": 1}, "error": None}


def test_deleting_a_device_cancels_its_commands_then_records_the_deletion(client, auth, make_device):
    device = make_device()
    start = now_cursor(client, auth)
    client.post(f"{DEVICES}/{device['device_id']}/command", json={"command": "ping"}, headers=auth)
    assert client.delete(f"{DEVICES}/{device['device_id']}", headers=auth).status_code == 204
    events = events_for(client, auth, start, device["device_id"])
    assert [(event["type"], event["data"].get("status")) for event in events][-2:] == [
        ("command.status", "cancelled"), ("device.deleted", "pending")]


def test_resume_with_limit_and_next_and_ids_work_across_routes(client, auth, make_device):
    start = now_cursor(client, auth)
    device = make_device()
    for n in range(3):
        client.patch(f"{DEVICES}/{device['device_id']}", json={"name": f"n{n}"}, headers=auth)
    first = poll(client, auth, after=start, device_id=device["device_id"], limit=2)
    assert len(first["events"]) == 2 and first["next"] == first["events"][-1]["id"]
    # The id from one route resumes the other route, with other filters.
    rest = client.get(f"{DEVICES}/{device['device_id']}/events", query_string={"after": first["next"]},
                      headers=auth).json
    assert [event["data"]["name"] for event in rest["events"]] == ["n1", "n2"]
    assert poll(client, auth, after=rest["next"], device_id=device["device_id"])["events"] == []


def test_long_poll_waits_until_an_event_arrives(client, app, auth, make_device):
    device = make_device()
    start = now_cursor(client, auth)
    answers = []

    def waiting_poll():
        began = time.monotonic()
        answers.append((poll(client, auth, after=start, device_id=device["device_id"], wait=20),
                        time.monotonic() - began))

    thread = threading.Thread(target=waiting_poll)
    thread.start()
    time.sleep(0.5)  # the poll is waiting now (nothing to answer with)
    client.patch(f"{DEVICES}/{device['device_id']}", json={"name": "woken"}, headers=auth)
    thread.join(timeout=25)
    body, took = answers[0]
    assert [event["data"]["name"] for event in body["events"]] == ["woken"]
    assert took < 5


def test_long_poll_without_events_waits_the_full_wait(client, auth):
    start = now_cursor(client, auth)
    began = time.monotonic()
    body = poll(client, auth, after=start, device_id=unique_id("nobody"), wait=2)
    assert body["events"] == [] and body["next"]
    assert 1.9 <= time.monotonic() - began < 6


def test_device_type_filter_matches_the_type_when_the_event_happened(client, auth, make_device):
    start = now_cursor(client, auth)
    kind = unique_id("kind")
    device = make_device(device_type=kind)
    client.patch(f"{DEVICES}/{device['device_id']}", json={"device_type": unique_id("other")}, headers=auth)
    events = poll(client, auth, after=start, device_type=kind)["events"]
    assert [event["type"] for event in events] == ["device.registered"]


def test_command_status_needs_message_read(client, token_for, make_device, auth):
    reader = {"Authorization": f"Bearer {token_for('device:read')}"}
    start = now_cursor(client, reader)
    device = make_device()
    client.post(f"{DEVICES}/{device['device_id']}/command", json={"command": "ping"}, headers=auth)
    asked = client.get(EVENTS, query_string={"types": "command.status"}, headers=reader)
    assert asked.status_code == 403 and asked.json["code"] == "INSUFFICIENT_SCOPE"
    # Without a types filter it simply never sees them.
    assert [event["type"] for event in events_for(client, reader, start, device["device_id"])] == ["device.registered"]
    assert client.get(EVENTS, headers={"Authorization": f"Bearer {token_for('message:read')}"}).status_code == 403


@pytest.mark.parametrize("query", [
    {"types": "device.nope"},
    {"types": "device.online,bogus"},
    {"device_id": ",".join(f"d{n}" for n in range(101))},
    {"wait": "31"}, {"wait": "-1"}, {"limit": "0"}, {"limit": "1001"}, {"wait": "x"},
])
def test_bad_filters_and_bounds_are_400(client, auth, query):
    response = client.get(EVENTS, query_string=query, headers=auth)
    assert response.status_code == 400, response.json
    assert response.json["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("cursor", ["nonsense", "12", "-5-3", "1-2-3", "99999999999999-1"])
def test_malformed_or_unknown_cursor_is_400(client, auth, cursor):
    for headers, query in (({}, {"after": cursor}), ({}, {"last_event_id": cursor}),
                           ({"Accept": "text/event-stream", "Last-Event-ID": cursor}, {})):
        response = client.get(EVENTS, query_string=query, headers={**auth, **headers})
        assert response.status_code == 400, response.json
        assert response.json["code"] == "INVALID_CURSOR"


def test_per_device_route_for_unknown_device_is_404(client, auth):
    response = client.get(f"{DEVICES}/{unique_id('ghost')}/events", headers=auth)
    assert response.status_code == 404 and response.json["code"] == "DEVICE_NOT_FOUND"


def test_events_need_device_read(client, token_for):
    assert client.get(EVENTS).status_code == 401
    response = client.get(EVENTS, headers={"Authorization": f"Bearer {token_for('device:write')}"})
    assert response.status_code == 403


def test_expired_cursor_answers_reset_at_the_current_end(hub_env, api_client_factory, make_device, auth):
    app = create_app({**hub_env, "EVENT_RETENTION_HOURS": "0.0002"})  # 0.72 s
    client = app.test_client()
    start = now_cursor(client, auth)
    make_device()
    time.sleep(1.0)  # the cursor ages past the retention
    body = poll(client, auth, after=start)
    assert body["events"] == [] and body["reset"] is True
    assert poll(client, auth, after=body["next"])["events"] == []  # the new end resumes normally


def test_events_keep_flowing_when_the_listen_connection_is_killed(client, app, auth, make_device, db):
    device = make_device()
    start = now_cursor(client, auth)
    poll(client, auth, after=start, device_id=device["device_id"], wait=1)  # starts this process's listener
    feed = app.extensions["uaip.events"]
    assert feed.connected

    def kill_listener(cur):
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'uaip-hub-events'")
        return cur.rowcount

    answers = []
    waiting = threading.Thread(target=lambda: answers.append(
        poll(client, auth, after=start, device_id=device["device_id"], wait=15)))
    waiting.start()
    time.sleep(0.5)  # the poll is waiting when its process's listen connection goes
    assert db.transaction(kill_listener) >= 1
    began = time.monotonic()
    client.patch(f"{DEVICES}/{device['device_id']}", json={"name": "still seen"}, headers=auth)
    waiting.join(timeout=20)
    assert [event["data"]["name"] for event in answers[0]["events"]] == ["still seen"]
    assert time.monotonic() - began < 3
    deadline = time.monotonic() + 10
    while not feed.connected:  # and the listener reconnects by itself
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.05)
