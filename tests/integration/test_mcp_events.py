"""The MCP tool wait_for_events: the long poll for agents, with the same cursors, filters and scope rules as REST."""

from __future__ import annotations

import json
import threading
import time

import pytest

from app import create_app
from tests.conftest import ALL_SCOPES, unique_id
from tests.integration.test_mcp_http import post, tool_result
from tests.support.mcp import call, token_request

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
