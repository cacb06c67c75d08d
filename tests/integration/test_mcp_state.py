"""The device-state MCP tools (get_state, set_desired, get_state_history) through the official MCP Python SDK
against the hub over a real socket; the SDK checks each structuredContent against the tool's outputSchema."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import requests

from tests.conftest import basic
from tests.integration.test_mcp_client import (  # noqa: F401 - fixtures
    MODES,
    error_body,
    hub,
    mcp_token,
    register,
    rest_headers,
    run,
)
from tests.integration.test_state import THERMOSTAT_PROPERTIES, _iso


@pytest.fixture()
def thermostat(hub, api_client_factory):  # noqa: F811
    admin = rest_headers(hub, api_client_factory)
    name = f"thermo-{uuid.uuid4().hex[:8]}"
    response = requests.put(f"{hub}/api/v1/device-types/{name}", json={"commands": {}, "properties":
                            THERMOSTAT_PROPERTIES}, headers=admin, timeout=10)
    assert response.status_code == 201, response.text
    return register(hub, admin, device_type=name)


def device_report(base_url, device, reported, timestamp=None):
    body = {"reported": reported, **({"timestamp": timestamp} if timestamp else {})}
    response = requests.patch(f"{base_url}/api/v1/devices/{device['device_id']}/state/reported", json=body,
                              headers=basic(device["device_id"], device["device_secret"]), timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("mode", MODES)
def test_get_state_and_set_desired(hub, mcp_token, thermostat, mode):  # noqa: F811
    device_id = thermostat["device_id"]
    device_report(hub, thermostat, {"temperature": 19.5, "target_temperature": 20})

    async def work(client):
        before = await client.call_tool("get_state", {"device_id": device_id})
        changed = await client.call_tool("set_desired", {"device_id": device_id,
                                                         "desired": {"target_temperature": 22}, "if_version": 1})
        stale = await client.call_tool("set_desired", {"device_id": device_id,
                                                       "desired": {"target_temperature": 23}, "if_version": 1})
        read_only = await client.call_tool("set_desired", {"device_id": device_id, "desired": {"temperature": 1}})
        unknown = await client.call_tool("set_desired", {"device_id": device_id, "desired": {"colour": "red"}})
        invalid = await client.call_tool("set_desired", {"device_id": device_id,
                                                         "desired": {"target_temperature": 99}})
        missing = await client.call_tool("get_state", {"device_id": "no-such-device"})
        return before, changed, stale, read_only, unknown, invalid, missing

    before, changed, stale, read_only, unknown, invalid, missing = run(hub, mcp_token(), mode, work)
    assert before.structured_content["reported"] == {"temperature": 19.5, "target_temperature": 20}
    assert before.structured_content["version"] == 1
    assert changed.is_error is False
    assert changed.structured_content["desired"] == {"target_temperature": 22}
    assert changed.structured_content["delta"] == {"target_temperature": 22}
    assert changed.structured_content["version"] == 2
    assert json.loads(changed.content[0].text) == changed.structured_content
    assert error_body(stale)["code"] == "PRECONDITION_FAILED"
    assert error_body(read_only)["code"] == "PROPERTY_NOT_WRITABLE"
    assert error_body(unknown)["code"] == "UNKNOWN_PROPERTY"
    assert error_body(unknown)["details"]["properties"] == sorted(THERMOSTAT_PROPERTIES)
    body = error_body(invalid)
    assert body["code"] == "INVALID_VALUE" and body["details"]["errors"][0]["pointer"] == "/desired/target_temperature"
    assert error_body(missing)["code"] == "DEVICE_NOT_FOUND"


@pytest.mark.parametrize("mode", MODES)
def test_get_state_history(hub, mcp_token, thermostat, mode):  # noqa: F811
    device_id = thermostat["device_id"]
    base = dt.datetime.fromtimestamp((int(dt.datetime.now(dt.UTC).timestamp()) // 60 - 10) * 60, dt.UTC)
    for offset, value in ((0, 18), (30, 20), (60, 21)):
        device_report(hub, thermostat, {"temperature": value}, _iso(base + dt.timedelta(seconds=offset)))

    async def work(client):
        raw = await client.call_tool("get_state_history", {"device_id": device_id, "property": "temperature",
                                                           "limit": 2})
        rest = await client.call_tool("get_state_history", {"device_id": device_id, "property": "temperature",
                                                            "cursor": raw.structured_content["next_cursor"]})
        buckets = await client.call_tool("get_state_history", {"device_id": device_id, "property": "temperature",
                                                               "bucket": 60, "agg": "avg",
                                                               "from": _iso(base)})
        bad = await client.call_tool("get_state_history", {"device_id": device_id, "property": "temperature",
                                                           "from": "last week"})
        return raw, rest, buckets, bad

    raw, rest, buckets, bad = run(hub, mcp_token("device:read"), mode, work)
    assert [p["value"] for p in raw.structured_content["points"]] == [18, 20]
    assert [p["value"] for p in rest.structured_content["points"]] == [21]
    assert rest.structured_content["next_cursor"] is None
    assert buckets.structured_content["points"] == [{"timestamp": _iso(base), "value": 19},
                                                    {"timestamp": _iso(base + dt.timedelta(seconds=60)), "value": 21}]
    assert error_body(bad)["code"] == "VALIDATION_ERROR"
