"""An agent's whole path through real processes: the official MCP SDK → gunicorn → PostgreSQL → NATS → a
simulated device → its ack → the relay → the waiting send_command, in both protocol eras; and the typed example
of docs/mcp.md's "Try it" (`uaip-hub simulate --example thermostat`)."""

import asyncio

import httpx2
import pytest
import requests
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.cli.examples import EXAMPLES
from app.cli.simulate import DeviceSimulator
from tests.conftest import unique_id
from tests.support.mcp import MCP, token_request
from tests.support.processes import HubServer, start_relay
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process


def token(hub_url: str, client_id: str, secret: str, resource: str | None = None) -> str:
    form = token_request(client_id, secret, resource) if resource else {
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    r = requests.post(f"{hub_url}/api/v1/auth/token", data=form, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture()
def hub(relay_env):
    relay = start_relay(relay_env)
    try:
        with HubServer(relay_env) as server:
            yield server
    finally:
        relay.stop()


def online(hub, rest_token: str, device_id: str) -> None:
    wait_for(lambda: requests.get(f"{hub.url}/api/v1/devices/{device_id}", timeout=5,
                                  headers={"Authorization": f"Bearer {rest_token}"}).json()["status"] == "online",
             timeout=20, message=f"{device_id} online")


def agent(hub, mcp_token: str, mode: str, work):
    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {mcp_token}"}, timeout=60) as http:
            async with Client(streamable_http_client(hub.url + MCP, http_client=http), mode=mode) as client:
                return await work(client)

    return asyncio.run(main())


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_send_command_waits_for_the_device_and_get_command_follows(hub, api_client_factory, mode):
    credentials = api_client_factory()
    rest = token(hub.url, *credentials)
    device_id = unique_id("mcp-e2e")
    r = requests.post(f"{hub.url}/api/v1/devices", json={"device_id": device_id, "name": "Lamp", "device_type": "lamp"},
                      headers={"Authorization": f"Bearer {rest}"}, timeout=10)
    assert r.status_code == 201, r.text

    async def work(client):
        done = await client.call_tool("send_command", {"device_id": device_id, "command": "switch",
                                                       "params": {"on": True}, "wait_seconds": 20})
        failed = await client.call_tool("send_command", {"device_id": device_id, "command": "switch",
                                                         "params": {"fail": True, "error": "fuse"}, "wait_seconds": 20})
        followed = await client.call_tool("get_command", {"message_id": done.structured_content["message_id"]})
        return done, failed, followed

    with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=30):
        online(hub, rest, device_id)
        done, failed, followed = agent(hub, token(hub.url, *credentials, hub.url + MCP), mode, work)
    assert done.is_error is False
    assert done.structured_content["status"] == "completed"
    assert done.structured_content["result"] == {"command": "switch", "echo": {"on": True}}
    assert done.structured_content["completed_at"] and done.structured_content["acknowledged_at"]
    assert failed.structured_content["status"] == "failed" and failed.structured_content["error"] == "fuse"
    assert followed.structured_content == done.structured_content


def test_the_typed_thermostat_example_through_an_agent(hub, api_client_factory):
    admin = api_client_factory("admin")
    rest = token(hub.url, *admin)
    simulator = DeviceSimulator.with_registration(hub.url, NATS_URL, 1, token=rest, prefix=unique_id("thermo"),
                                                  heartbeat_seconds=30, example=EXAMPLES["thermostat"])
    [device_id] = simulator.device_ids

    async def work(client):
        described = await client.call_tool("get_device", {"device_id": device_id})
        warmer = await client.call_tool("send_command", {"device_id": device_id, "command": "set_temperature",
                                                         "params": {"value": 23.5}, "wait_seconds": 20})
        too_hot = await client.call_tool("send_command", {"device_id": device_id, "command": "set_temperature",
                                                          "params": {"value": 90}})
        return described, warmer, too_hot

    with simulator:
        online(hub, rest, device_id)
        described, warmer, too_hot = agent(hub, token(hub.url, *admin, hub.url + MCP), "auto", work)
    declared = described.structured_content["device_type"]
    assert declared["device_type"] == "thermostat" and {"set_temperature", "read"} <= set(declared["commands"])
    assert warmer.structured_content["status"] == "completed"
    assert warmer.structured_content["result"]["target"] == 23.5
    assert too_hot.is_error is True
    assert '"pointer":"/params/value"' in too_hot.content[0].text


def test_subscriptions_listen_through_gunicorn_is_written_by_the_stream_writer(hub, api_client_factory):
    """The SDK's `listen` on real gunicorn: once the stream is caught up, the worker's stream writer sends its
    notifications (chunks the SDK's HTTP client must parse), and a change of the followed device arrives."""
    from mcp.shared.subscriptions import ResourceUpdated

    credentials = api_client_factory()
    rest = token(hub.url, *credentials)
    device_id = unique_id("mcp-listen")
    r = requests.post(f"{hub.url}/api/v1/devices", headers={"Authorization": f"Bearer {rest}"}, timeout=10,
                      json={"device_id": device_id, "name": "followed", "device_type": "sensor"})
    assert r.status_code == 201, r.text
    uri = f"urn:uaip:device:{device_id}"

    def pushed() -> float:
        text = requests.get(f"{hub.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("uaip_event_streams_pushed{"))

    def rename(name: str) -> None:
        wait_for(lambda: pushed() >= 1, timeout=10, message="the listen stream held by the stream writer")
        r = requests.patch(f"{hub.url}/api/v1/devices/{device_id}", json={"name": name}, timeout=10,
                           headers={"Authorization": f"Bearer {rest}"})
        assert r.status_code == 200, r.text

    async def work(client):
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            assert subscription.honored.resource_subscriptions == [uri]
            await asyncio.to_thread(rename, "renamed")
            return await asyncio.wait_for(subscription.__anext__(), timeout=10)

    mcp_token = token(hub.url, *credentials, resource=hub.url + MCP)
    assert agent(hub, mcp_token, "auto", work) == ResourceUpdated(uri=uri)
