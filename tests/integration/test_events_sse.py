"""The SSE form of the event routes, read frame by frame through Flask's test client: resets, the message:read rule,
filters and resume (the real-server behaviour, slots and signals are in tests/process/test_event_streams.py)."""

from __future__ import annotations

import json
import time

from app import create_app
from tests.conftest import unique_id

EVENTS = "/api/v1/events"
SSE = {"Accept": "text/event-stream"}


class Frames:
    """The frames of one stream, pulled one at a time (the stream's generator runs in this thread)."""

    def __init__(self, response) -> None:
        assert response.status_code == 200, response.get_data(as_text=True)
        self.response = response
        self._chunks = response.response
        self._buffer = ""

    def next(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while "\n\n" not in self._buffer:
            assert time.monotonic() < deadline, "no frame in time"
            chunk = next(self._chunks)
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        frame, self._buffer = self._buffer.split("\n\n", 1)
        fields = {}
        for line in frame.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        return fields

    def next_event(self, timeout: float = 10.0) -> dict:
        """The next frame that is not a comment."""
        while True:
            fields = self.next(timeout)
            if not all(name == "" for name in fields):  # a comment line parses as the name ""
                return fields

    def close(self) -> None:
        self.response.close()


def open_stream(client, headers, **query) -> Frames:
    return Frames(client.get(EVENTS, query_string=query, headers={**headers, **SSE}, buffered=False))


def now_cursor(client, auth) -> str:
    return client.get(EVENTS, headers=auth).json["next"]


def test_stream_sends_matching_events_with_their_ids(client, auth, make_device):
    device = make_device()
    frames = open_stream(client, auth, device_id=device["device_id"], types="device.updated")
    try:
        client.post(f"/api/v1/devices/{device['device_id']}/heartbeat", headers=auth)  # device.online: filtered out
        client.patch(f"/api/v1/devices/{device['device_id']}", json={"name": "streamed"}, headers=auth)
        frame = frames.next_event()
        event = json.loads(frame["data"])
        assert frame["event"] == event["type"] == "device.updated" and frame["id"] == event["id"]
        assert event["data"]["name"] == "streamed"
    finally:
        frames.close()


def test_an_expired_last_event_id_gets_a_reset_then_live_events(hub_env, auth, make_device):
    client = create_app({**hub_env, "EVENT_RETENTION_HOURS": "0.0002"}).test_client()  # 0.72 s
    old = now_cursor(client, auth)
    time.sleep(1.0)  # the id ages past the retention
    frames = Frames(client.get(EVENTS, headers={**auth, **SSE, "Last-Event-ID": old}, buffered=False))
    try:
        reset = frames.next_event()
        assert reset == {"event": "reset", "data": '{"reason":"expired"}'}
        device = make_device(device_id=unique_id("after-reset"))
        while True:  # other tests' events may come first: the stream is unfiltered
            event = json.loads(frames.next_event()["data"])
            if event["device_id"] == device["device_id"]:
                break
        assert event["type"] == "device.registered"
    finally:
        frames.close()


def test_without_message_read_a_stream_never_carries_command_status(client, token_for, auth, make_device):
    reader = {"Authorization": f"Bearer {token_for('device:read')}"}
    device = make_device()
    frames = open_stream(client, reader, device_id=device["device_id"])
    try:
        assert client.post(f"/api/v1/devices/{device['device_id']}/command", json={"command": "x"},
                           headers=auth).status_code == 202
        client.patch(f"/api/v1/devices/{device['device_id']}", json={"name": "after"}, headers=auth)
        # The command's queued and sent events came first; the first event this token sees is the update.
        assert frames.next_event()["event"] == "device.updated"
    finally:
        frames.close()
    denied = client.get(EVENTS, query_string={"types": "command.status"}, headers={**reader, **SSE})
    assert denied.status_code == 403 and denied.json["code"] == "INSUFFICIENT_SCOPE"


def test_query_after_resumes_a_stream(client, auth, make_device):
    device = make_device()
    start = now_cursor(client, auth)
    for name in ("a", "b"):
        client.patch(f"/api/v1/devices/{device['device_id']}", json={"name": name}, headers=auth)
    frames = open_stream(client, auth, device_id=device["device_id"], after=start)
    try:
        names = [json.loads(frames.next_event()["data"])["data"]["name"] for _ in range(2)]
        assert names == ["a", "b"]
    finally:
        frames.close()
