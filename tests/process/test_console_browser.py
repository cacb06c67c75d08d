"""The console and the desktop-agent sign-in in a real browser (Chromium through Playwright) against gunicorn.

The last test is the whole desktop-agent path: the official MCP SDK's OAuthClientProvider discovers the hub,
registers, sends the browser to the authorization page, where the operator signs in and approves; the SDK
exchanges the code with its PKCE verifier, calls a tool, refreshes (rotation), and a replayed refresh token
revokes the grant. Screenshots of failures are kept (the failure prints where)."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
import requests
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from playwright.sync_api import expect, sync_playwright

from app.services.clients import authenticate_client
from tests.conftest import unique_id
from tests.support import browser as chromium
from tests.support.console import new_operator
from tests.support.mcp import MCP
from tests.support.processes import HubServer

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def hub(hub_env):
    with HubServer(hub_env, workers=1, threads=8) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        instance = chromium.launch(playwright)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser, request):
    context = browser.new_context()
    tab = context.new_page()
    failed_before = request.session.testsfailed
    yield tab
    if request.session.testsfailed > failed_before:
        path = chromium.screenshot(tab, request.node.name)
        print(f"\nscreenshot of the failure: {path}")
    context.close()


def sign_in(page, hub, email: str, password: str, path: str = "/console/") -> None:
    page.goto(hub.url + path)
    expect(page).to_have_url(re.compile(r"/console/signin"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_sign_out(page, hub, db):
    email, password = new_operator(db, "admin")
    sign_in(page, hub, email, password)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    for name in ("Overview", "Devices", "Commands", "Clients", "Operators", "Audit"):
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "uaip_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]

    page.get_by_role("link", name="Devices", exact=True).click()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/signin"))
    replay = requests.get(f"{hub.url}/console/", cookies={"uaip_console": cookie["value"]}, allow_redirects=False,
                          timeout=10)
    assert replay.status_code == 302 and "/console/signin" in replay.headers["Location"]


def test_viewer_is_refused_changes_and_admin_pages(page, hub, db):
    email, password = new_operator(db, "viewer")
    sign_in(page, hub, email, password, "/console/clients")
    expect(page.get_by_role("heading", name="Clients")).to_be_visible()
    expect(page.get_by_role("button", name="Create client")).to_have_count(0)
    with page.expect_response(lambda r: r.url.endswith("/console/operators")) as info:
        page.get_by_role("link", name="Operators", exact=True).click()
    assert info.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("admin role")
    assert page.goto(hub.url + "/console/audit").status == 403


def test_a_form_without_its_csrf_token_is_refused(page, hub, db):
    email, password = new_operator(db, "admin")
    sign_in(page, hub, email, password, "/console/clients")
    name = f"csrf-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.locator("#create-client input[name=csrf_token]").evaluate("element => element.remove()")
    with page.expect_response(lambda r: r.url.endswith("/console/clients") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Create client").click()
    assert info.value.status == 403
    page.goto(hub.url + "/console/clients")
    expect(page.locator("#clients")).not_to_contain_text(name)


def test_sign_in_throttling(page, hub, db):
    email, password = new_operator(db, "viewer")
    for attempt in range(5):
        sign_in(page, hub, email, f"wrong-{attempt}")
        expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    page.get_by_label("Password").fill(password)  # the right one, sixth attempt in the window
    with page.expect_response(lambda r: r.url.endswith("/console/signin") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Sign in").click()
    assert info.value.status == 429
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")


def test_a_client_is_created_and_its_secret_shown_once(page, hub, db):
    email, password = new_operator(db, "admin")
    sign_in(page, hub, email, password, "/console/clients")
    name = f"browser-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("device:read").check()
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", name="Client created")).to_be_visible()
    client_id = page.locator("#shown-id").inner_text()
    secret = page.locator("#shown-secret").inner_text()
    assert authenticate_client(db, client_id, secret) is not None
    page.get_by_role("link", name="Done").click()
    expect(page.locator("#clients")).to_contain_text(name)
    assert secret not in page.content()
    chromium.screenshot(page, "clients-page")  # docs/images is refreshed from screenshots like this one


def test_a_desired_set_point_from_the_device_page(page, hub, db, api_client_factory):
    from tests.support.hub_api import token

    rest = {"Authorization": f"Bearer {token(hub.url, *api_client_factory('admin'))}"}
    type_name = unique_id("thermo")
    r = requests.put(f"{hub.url}/api/v1/device-types/{type_name}", headers=rest, timeout=10, json={
        "description": "thermostat", "commands": {},
        "properties": {"setpoint": {"description": "target", "schema": {"type": "number"}, "writable": True}}})
    assert r.status_code == 201, r.text
    device_id = unique_id("thermo")
    r = requests.post(f"{hub.url}/api/v1/devices", headers=rest, timeout=10,
                      json={"device_id": device_id, "name": "Thermostat", "device_type": type_name})
    assert r.status_code == 201, r.text
    email, password = new_operator(db, "admin")
    sign_in(page, hub, email, password, f"/console/devices/{device_id}")
    page.locator("#desired-form").get_by_label("setpoint").fill("21.5")
    page.get_by_role("button", name="Set desired").click()
    expect(page.locator("#state-desired")).to_contain_text("21.5")
    state = requests.get(f"{hub.url}/api/v1/devices/{device_id}/state", headers=rest, timeout=10).json()
    assert state["desired"] == {"setpoint": 21.5}


# --- the desktop agent: the MCP SDK's OAuth client, the browser for the operator ------------------------------------


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens) -> None:
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info) -> None:
        self.client_info = client_info


def operator_approves(url: str, email: str, password: str, seen: dict) -> None:
    """The operator's side, in its own thread (Playwright's sync API cannot run inside the SDK's event loop)."""
    with sync_playwright() as playwright:
        instance = chromium.launch(playwright)
        tab = instance.new_page()
        try:
            tab.goto(url)
            expect(tab).to_have_url(re.compile(r"/console/signin"))
            tab.get_by_label("Email").fill(email)
            tab.get_by_label("Password").fill(password)
            tab.get_by_role("button", name="Sign in").click()
            expect(tab.get_by_role("heading", name=re.compile("Allow"))).to_be_visible()
            seen["consent"] = tab.locator("main").inner_text()
            tab.get_by_role("button", name="Approve").click()
            expect(tab.get_by_text("You can close this window")).to_be_visible()
        except Exception:
            seen["screenshot"] = chromium.screenshot(tab, "desktop-agent-consent")
            raise
        finally:
            instance.close()


def test_desktop_agent_signs_in_through_the_browser_with_the_mcp_sdk(hub, db):
    email, password = new_operator(db, "viewer")
    seen: dict = {}
    with chromium.LoopbackCallback() as callback:
        async def redirect_handler(url: str) -> None:
            seen["authorization_url"] = url
            worker = threading.Thread(target=lambda: seen.update(error=_run(url)))
            worker.start()
            await asyncio.to_thread(worker.join, 120)

        def _run(url):
            try:
                operator_approves(url, email, password, seen)
            except Exception as exc:  # noqa: BLE001 - handed to the test below with the screenshot path
                return exc
            return None

        async def callback_handler() -> AuthorizationCodeResult:
            assert seen.get("error") is None, f"{seen['error']!r}; screenshot: {seen.get('screenshot')}"
            assert callback.arrived.wait(30), "the browser never reached the redirect URI"
            params = callback.received[-1]
            assert "code" in params, f"authorization response without a code: {params}"
            return AuthorizationCodeResult(code=params["code"], state=params.get("state"))

        storage = MemoryStorage()
        provider = OAuthClientProvider(
            server_url=hub.url + MCP,
            client_metadata=OAuthClientMetadata(client_name="Browser test agent", redirect_uris=[callback.uri]),
            storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler,
        )

        async def agent():
            async with httpx2.AsyncClient(auth=provider, timeout=60) as http:
                async with Client(streamable_http_client(hub.url + MCP, http_client=http), mode="legacy") as client:
                    first = await client.list_tools()
                    first_refresh = storage.tokens.refresh_token
                    provider.context.token_expiry_time = 1.0  # long expired: the next call refreshes (rotation)
                    second = await client.call_tool("list_devices", {"limit": 1})
                    return first, second, first_refresh

        # In a thread of its own: this module's Playwright keeps an event loop on the main thread.
        with ThreadPoolExecutor(1) as pool:
            tools, listed, first_refresh = pool.submit(asyncio.run, agent()).result(timeout=240)

    assert "list_devices" in {tool.name for tool in tools.tools}
    assert "send_command" not in {tool.name for tool in tools.tools}  # a viewer's agent reads only
    assert not listed.is_error
    consent = seen["consent"]
    assert "Browser test agent" in consent and "device:read" in consent and f"{hub.url}/api/v1/mcp" in consent
    assert "S256" in seen["authorization_url"] and "code_challenge=" in seen["authorization_url"]
    assert storage.tokens.scope == "device:read message:read"
    rotated = storage.tokens.refresh_token
    assert rotated != first_refresh

    # replaying the first refresh token: invalid_grant, and the grant's tokens all stop working
    client_id = storage.client_info.client_id
    reuse = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "refresh_token", "client_id": client_id, "refresh_token": first_refresh})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    probe = requests.post(hub.url + MCP, timeout=10, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Authorization": f"Bearer {storage.tokens.access_token}",
                                   "Accept": "application/json, text/event-stream"})
    assert probe.status_code == 401
    latest = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "refresh_token", "client_id": client_id, "refresh_token": rotated})
    assert latest.status_code == 400 and latest.json()["error"] == "invalid_grant"
