"""An agent's whole path through real processes: the official MCP SDK → gunicorn → PostgreSQL → NATS → a
simulated device → its ack → the relay → the waiting send_command, in both protocol eras."""

import asyncio

import httpx2
import pytest
import requests
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.simulate import DeviceSimulator
from tests.conftest import unique_id
from tests.integration.test_relay import relay_env, start_relay  # noqa: F401 - the relay's test environment
from tests.support.mcp import MCP, token_request
from tests.support.processes import HubServer
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process


def token(hub_url: str, client_id: str, secret: str, resource: str | None = None) -> str:
    form = token_request(client_id, secret, resource) if resource else {
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    r = requests.post(f"{hub_url}/api/v1/auth/token", data=form, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_send_command_waits_for_the_device_and_get_command_follows(relay_env, api_client_factory, mode):  # noqa: F811
    relay = start_relay(relay_env)
    try:
        with HubServer(relay_env) as hub:
            credentials = api_client_factory()
            rest = {"Authorization": f"Bearer {token(hub.url, *credentials)}"}
            device_id = unique_id("mcp-e2e")
            r = requests.post(f"{hub.url}/api/v1/devices", json={"device_id": device_id, "name": "Lamp",
                                                                  "device_type": "lamp"}, headers=rest, timeout=10)
            assert r.status_code == 201, r.text
            with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=30):
                wait_for(lambda: requests.get(f"{hub.url}/api/v1/devices/{device_id}", headers=rest,
                                              timeout=5).json()["status"] == "online", timeout=20, message="online")

                async def agent():
                    headers = {"Authorization": f"Bearer {token(hub.url, *credentials, hub.url + MCP)}"}
                    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
                        async with Client(streamable_http_client(hub.url + MCP, http_client=http), mode=mode) as client:
                            done = await client.call_tool("send_command", {
                                "device_id": device_id, "command": "switch", "params": {"on": True},
                                "wait_seconds": 20})
                            failed = await client.call_tool("send_command", {
                                "device_id": device_id, "command": "switch", "params": {"fail": True, "error": "fuse"},
                                "wait_seconds": 20})
                            followed = await client.call_tool("get_command",
                                                              {"message_id": done.structured_content["message_id"]})
                            return done, failed, followed

                done, failed, followed = asyncio.run(agent())
        assert done.is_error is False
        assert done.structured_content["status"] == "completed"
        assert done.structured_content["result"] == {"command": "switch", "echo": {"on": True}}
        assert done.structured_content["completed_at"] and done.structured_content["acknowledged_at"]
        assert failed.structured_content["status"] == "failed" and failed.structured_content["error"] == "fuse"
        assert followed.structured_content == done.structured_content
    finally:
        relay.stop()
