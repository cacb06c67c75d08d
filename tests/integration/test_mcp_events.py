"""The MCP tool wait_for_events: the long poll for agents, with the same cursors, filters and scope rules as REST."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app import create_app
from tests.conftest import ALL_SCOPES, unique_id
from tests.integration.test_mcp_http import post, tool_result
from tests.support.mcp import call, stateless, token_request

BASE = "http://localhost"


@pytest.fixture()
def mcp_auth(client, api_client_factory):
    def make(scopes: str = ALL_SCOPES) -> dict[str, str]:
        r = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(scopes), BASE + "/api/v1/mcp"))
        assert r.status_code == 200, r.json
        return {"Authorization": f"Bearer {r.json['access_token']}"}

    return make


def wait_for_events(client, headers, **arguments) -> dict:
    result = tool_result(post(client, call("wait_for_events", arguments), headers))
    assert result["isError"] is False, result
    return result["structuredContent"]


def tool_error(client, headers, **arguments) -> dict:
    result = tool_result(post(client, call("wait_for_events", arguments), headers))
    assert result["isError"] is True, result
    return json.loads(result["content"][0]["text"])


def test_follow_from_now_then_get_each_event_once(client, mcp_auth, make_device, auth):
    headers = mcp_auth()
    start = wait_for_events(client, headers)
    assert start["events"] == [] and start["next"]
    device = make_device()
    client.post(f"/api/v1/devices/{device['device_id']}/command", json={"command": "ping"}, headers=auth)
    page = wait_for_events(client, headers, after=start["next"], device_ids=[device["device_id"]])
    assert [(event["type"], event["data"].get("status")) for event in page["events"]] == [
        ("device.registered", "pending"), ("command.status", "queued"), ("command.status", "sent")]
    assert wait_for_events(client, headers, after=page["next"], device_ids=[device["device_id"]])["events"] == []
    # The same ids resume the REST long poll.
    rest = client.get("/api/v1/events", query_string={"after": start["next"], "device_id": device["device_id"]},
                      headers=auth).json
    assert [event["id"] for event in rest["events"]] == [event["id"] for event in page["events"]]


def test_waits_for_the_next_event(client, mcp_auth, make_device, auth):
    headers = mcp_auth()
    device = make_device()
    start = wait_for_events(client, headers)["next"]
    answers = []
    thread = threading.Thread(target=lambda: answers.append(wait_for_events(
        client, headers, after=start, device_ids=[device["device_id"]], types=["device.updated"], wait_seconds=20)))
    began = time.monotonic()
    thread.start()
    time.sleep(0.5)
    client.patch(f"/api/v1/devices/{device['device_id']}", json={"name": "seen"}, headers=auth)
    thread.join(timeout=25)
    assert [event["data"]["name"] for event in answers[0]["events"]] == ["seen"]
    assert time.monotonic() - began < 5


def test_command_status_needs_message_read(client, mcp_auth):
    error = tool_error(client, mcp_auth("device:read"), types=["command.status"])
    assert error["code"] == "INSUFFICIENT_SCOPE"


def test_bad_cursor_and_bad_arguments(client, mcp_auth):
    headers = mcp_auth()
    assert tool_error(client, headers, after="not-a-cursor")["code"] == "INVALID_CURSOR"
    for arguments in ({"types": ["device.nope"]}, {"device_ids": [f"d{n}" for n in range(101)]},
                      {"wait_seconds": 31}, {"limit": 101}, {"types": "device.online"}):
        response = post(client, call("wait_for_events", arguments), headers)
        assert response.json["error"]["code"] == -32602, arguments


def test_an_expired_cursor_resets(hub_env, api_client_factory, make_device):
    app = create_app({**hub_env, "EVENT_RETENTION_HOURS": "0.0002"})
    client = app.test_client()
    r = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(ALL_SCOPES), BASE + "/api/v1/mcp"))
    headers = {"Authorization": f"Bearer {r.json['access_token']}"}
    start = wait_for_events(client, headers)["next"]
    make_device(device_id=unique_id("old"))
    time.sleep(1.0)  # the cursor ages past the retention (0.72 s)
    page = wait_for_events(client, headers, after=start)
    assert page["events"] == [] and page["reset"] is True and page["next"]


# --- subscriptions/listen (2026-07-28); the official SDK's view is in test_mcp_client.py -----------------------


def listen_request(client, headers, notifications, accept="application/json, text/event-stream"):
    body, mirrors = stateless("subscriptions/listen", {"notifications": notifications})
    return client.post("/api/v1/mcp", data=json.dumps(body), buffered=False,
                       headers={"Content-Type": "application/json", "Accept": accept, **headers, **mirrors})


def sse_messages(response, count: int) -> list[dict]:
    """The first `count` JSON-RPC messages of an SSE answer."""
    buffer, messages = "", []
    chunks = iter(response.response)
    while len(messages) < count:
        chunk = next(chunks)
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            data = [line[6:] for line in frame.split("\n") if line.startswith("data: ")]
            if data:
                messages.append(json.loads(data[0]))
    return messages


def test_listen_acknowledges_then_notifies_each_changed_device(client, mcp_auth, make_device, auth):
    device = make_device()
    uri = f"urn:uaip:device:{device['device_id']}"
    response = listen_request(client, mcp_auth("device:read"),
                              {"resourceSubscriptions": [uri, "urn:other:x"], "promptsListChanged": True})
    try:
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        (ack,) = sse_messages(response, 1)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [uri]}
        request_id = ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"]
        for name in ("one", "two"):
            client.patch(f"/api/v1/devices/{device['device_id']}", json={"name": name}, headers=auth)
        (update,) = sse_messages(response, 1)
        assert update == {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                          "params": {"uri": uri, "_meta": {"io.modelcontextprotocol/subscriptionId": request_id}}}
    finally:
        response.close()


def test_listen_refusals(client, mcp_auth):
    body_error = listen_request(client, mcp_auth(), {"resourceSubscriptions": "urn:uaip:device:x"})
    assert body_error.status_code == 400 and body_error.json["error"]["code"] == -32602
    too_many = listen_request(client, mcp_auth(), {"resourceSubscriptions": [f"urn:uaip:device:d{n}"
                                                                              for n in range(101)]})
    assert too_many.status_code == 400 and too_many.json["error"]["code"] == -32602
    assert listen_request(client, mcp_auth("device:command"), {}).status_code == 403
    assert listen_request(client, mcp_auth(), {}, accept="application/json").status_code == 406
    # The handshake revisions have no such method.
    legacy = post(client, {"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": {}}, mcp_auth())
    assert legacy.json["error"]["code"] == -32601
