"""The official MCP Python SDK (`mcp`, 2.x) against the hub over a real socket: the `initialize` handshake
(`mode="legacy"`) and the SDK's default (`auto`: the stateless 2026-07-28 revision, found by `server/discover`).

The SDK checks every result against the protocol schema of the negotiated revision and every `structuredContent`
against the tool's `outputSchema`, so each call here is also a conformance check. The full round trip through a
device (send_command with a wait reaching `completed`) is in tests/process/test_mcp_gunicorn.py.
"""

import asyncio
import json
import threading

import httpx2
import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from werkzeug.serving import make_server

from tests.conftest import ALL_SCOPES, unique_id
from tests.support.mcp import MCP

MODES = ["legacy", "auto"]
NEGOTIATED = {"legacy": "2025-11-25", "auto": "2026-07-28"}


@pytest.fixture()
def hub(app):
    """The app served by a threaded werkzeug server on a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture()
def mcp_token(hub, api_client_factory):
    """A token for the MCP endpoint fetched with authlib, the way an OAuth2 client library asks for a resource."""

    def fetch(scopes: str = ALL_SCOPES) -> str:
        client_id, secret = api_client_factory(scopes)
        session = OAuth2Session(client_id, secret, token_endpoint_auth_method="client_secret_basic")
        token = session.fetch_token(f"{hub}/api/v1/auth/token", grant_type="client_credentials", resource=hub + MCP)
        return token["access_token"]

    return fetch


def run(hub: str, token: str, mode: str, work):
    """Connect the SDK client with the bearer header and run `await work(client)`."""

    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            async with Client(streamable_http_client(hub + MCP, http_client=http), mode=mode) as client:
                return await work(client)

    return asyncio.run(main())


def rest_headers(hub, api_client_factory):
    import requests

    client_id, secret = api_client_factory("admin")
    r = requests.post(f"{hub}/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                        "client_secret": secret}, timeout=10)
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def register(hub, headers, **fields):
    import requests

    body = {"device_id": unique_id("mcp"), "name": "MCP test device", "device_type": "sensor", **fields}
    r = requests.post(f"{hub}/api/v1/devices", json=body, headers=headers, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def error_body(result) -> dict:
    assert result.is_error is True and result.structured_content is None
    return json.loads(result.content[0].text)


def test_authlib_fetches_a_token_for_the_mcp_resource(hub, mcp_token, app):
    claims = jwt.decode(mcp_token("device:read"), app.config["SETTINGS"].jwt_secret, algorithms=["HS256"],
                        options={"verify_aud": False})
    assert claims["aud"] == hub + MCP and claims["scope"] == "device:read"


@pytest.mark.parametrize("mode", MODES)
def test_connects_and_lists_the_tools_its_scopes_allow(hub, mcp_token, mode):
    async def work(client):
        return client.protocol_version, client.server_info, [tool.name for tool in (await client.list_tools()).tools]

    version, info, tools = run(hub, mcp_token("device:read"), mode, work)
    assert version == NEGOTIATED[mode] and info.name == "uaip-hub"
    assert tools == ["list_devices", "get_device", "wait_for_events", "get_state", "get_state_history"]
    _, _, tools = run(hub, mcp_token("device:command message:read"), mode, work)
    assert tools == ["send_command", "get_command", "set_desired"]


@pytest.mark.parametrize("mode", MODES)
def test_tools_answer_with_structured_content_matching_their_schemas(hub, mcp_token, api_client_factory, mode):
    kind = unique_id("kind")
    device = register(hub, rest_headers(hub, api_client_factory), device_type=kind, metadata={"floor": 3})

    async def work(client):
        listed = await client.call_tool("list_devices", {"type": kind})
        read = await client.call_tool("get_device", {"device_id": device["device_id"]})
        sent = await client.call_tool("send_command", {"device_id": device["device_id"], "command": "blink",
                                                       "params": {"times": 2}})
        followed = await client.call_tool("get_command", {"message_id": sent.structured_content["message_id"]})
        return listed, read, sent, followed

    listed, read, sent, followed = run(hub, mcp_token(), mode, work)
    assert listed.structured_content["devices"] == [
        {key: device[key] for key in ("device_id", "name", "device_type", "status")}]
    assert read.structured_content["device"]["metadata"] == {"floor": 3}
    assert read.structured_content["device_type"] is None
    assert sent.is_error is False and sent.structured_content["status"] in ("queued", "sent")
    assert followed.structured_content["message_id"] == sent.structured_content["message_id"]
    assert followed.structured_content["params"] == {"times": 2}
    for result in (listed, read, sent, followed):
        assert json.loads(result.content[0].text) == result.structured_content


@pytest.mark.parametrize("mode", MODES)
def test_validation_failures_are_tool_errors_naming_the_params(hub, mcp_token, api_client_factory, mode):
    import requests

    admin = rest_headers(hub, api_client_factory)
    type_name = unique_id("dimmer")
    declared = {"commands": {"dim": {"params": {"type": "object", "required": ["level"],
                                                "properties": {"level": {"type": "integer", "maximum": 100}}}}}}
    assert requests.put(f"{hub}/api/v1/device-types/{type_name}", json=declared, headers=admin,
                        timeout=10).status_code == 201
    device = register(hub, admin, device_type=type_name)

    async def work(client):
        too_bright = await client.call_tool("send_command", {"device_id": device["device_id"], "command": "dim",
                                                             "params": {"level": 400}})
        missing = await client.call_tool("send_command", {"device_id": device["device_id"], "command": "dim"})
        unknown = await client.call_tool("send_command", {"device_id": "no-such-device", "command": "dim"})
        return too_bright, missing, unknown

    too_bright, missing, unknown = run(hub, mcp_token(), mode, work)
    body = error_body(too_bright)
    assert body["code"] == "INVALID_PARAMS" and [e["pointer"] for e in body["details"]["errors"]] == ["/params/level"]
    assert [e["pointer"] for e in error_body(missing)["details"]["errors"]] == ["/params/level"]
    assert error_body(unknown)["code"] == "DEVICE_NOT_FOUND"


@pytest.mark.parametrize("mode", MODES)
def test_protocol_errors_reach_the_client_as_errors(hub, mcp_token, mode):
    async def attempt(client, name, arguments):
        try:
            await client.call_tool(name, arguments)
        except MCPError as exc:
            return exc.error.code
        return None

    async def work(client):
        return (await attempt(client, "no_such_tool", {}), await attempt(client, "list_devices", {"limit": "ten"}),
                await attempt(client, "send_command", {"device_id": "d", "command": "x"}))

    unknown_tool, bad_arguments, outside_scopes = run(hub, mcp_token("device:read"), mode, work)
    assert unknown_tool == -32602 and bad_arguments == -32602
    assert outside_scopes is not None  # HTTP 403: the SDK reports a failed request


def test_a_rest_token_cannot_connect(hub, api_client_factory):
    """A token without the MCP audience is refused (401) at the first request; the SDK surfaces an MCPError."""
    headers = rest_headers(hub, api_client_factory)
    with pytest.raises(ExceptionGroup) as raised:
        run(hub, headers["Authorization"].split()[1], "legacy", lambda client: asyncio.sleep(0))
    assert raised.value.subgroup(MCPError) is not None


def test_subscriptions_listen_streams_updates_of_the_devices_it_names(hub, mcp_token, api_client_factory):
    import requests
    from mcp.shared.subscriptions import ResourceUpdated

    headers = rest_headers(hub, api_client_factory)
    device, other = register(hub, headers), register(hub, headers)
    uri = f"urn:uaip:device:{device['device_id']}"

    def rename(device_id, name):
        r = requests.patch(f"{hub}/api/v1/devices/{device_id}", json={"name": name}, headers=headers, timeout=10)
        assert r.status_code == 200, r.text

    async def work(client):
        async with client.listen(resource_subscriptions=[uri, "https://example.com/not-a-device"],
                                 tools_list_changed=True) as subscription:
            # Honoured: the device; not the foreign URI, and not tool-list changes (the tool list never changes).
            assert subscription.honored.resource_subscriptions == [uri]
            assert not subscription.honored.tools_list_changed
            await asyncio.to_thread(rename, other["device_id"], "not followed")
            await asyncio.to_thread(rename, device["device_id"], "followed")
            return await asyncio.wait_for(subscription.__anext__(), timeout=10)

    assert run(hub, mcp_token("device:read"), "auto", work) == ResourceUpdated(uri=uri)
