"""`mcp-remote` (npm), the stdio bridge desktop agents start, given nothing but the hub's MCP URL and a callback
port: it finds the hub's authorization server through the 401 and the discovery documents, registers itself,
and "opens the browser" on the authorization page. Here the browser is a script named by `BROWSER` (the bundled
`open` package runs xdg-open, which honours it) that writes the URL to a file; Chromium (Playwright) then plays
the operator, who signs in to the console and approves. mcp-remote takes the code on its loopback callback,
exchanges it with its PKCE verifier and keeps the tokens in its own config folder (a temporary one here). The
official MCP SDK's stdio client drives it meanwhile: initialize, tools/list, tools/call — with no token anywhere
in mcp-remote's command line or environment. Started again, it uses the kept tokens without a browser.

scripts/test installs mcp-remote (tests/support/node) and, under CI, Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from playwright.sync_api import expect, sync_playwright

from tests.support import browser as chromium
from tests.support import third_party
from tests.support.console import new_operator
from tests.support.mcp import MCP
from tests.support.polling import wait_until
from tests.support.processes import HubServer
from tests.support.services import free_port

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def hub(hub_env):
    with HubServer(hub_env, workers=1, threads=8) as server:
        yield server


def fake_browser(tmp_path):
    """(script, file): an executable for `BROWSER` that appends the URL it is given to `file`."""
    opened = tmp_path / "opened-urls"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{opened}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, opened


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_mcp_remote_signs_in_through_the_console_with_the_url_alone(hub, db, tmp_path):
    modules = third_party.node_modules()
    email, password = new_operator(db, "viewer")
    script, opened = fake_browser(tmp_path)
    config = tmp_path / "mcp-auth"
    callback_port = free_port()
    args = [str(modules / "mcp-remote" / "dist" / "proxy.js"), hub.url + MCP, str(callback_port)]
    env = {"MCP_REMOTE_CONFIG_DIR": str(config), "HOME": str(tmp_path / "home"), "BROWSER": str(script)}
    bridge = StdioServerParameters(command=third_party.node(), args=args, env=env)
    log_path = tmp_path / "mcp-remote.log"

    async def agent():
        with open(log_path, "w") as log:
            async with Client(stdio_client(bridge, errlog=log), mode="legacy") as client:
                tools = await client.list_tools()
                listed = await client.call_tool("list_devices", {"limit": 1})
                return tools, listed

    def log_text() -> str:
        return log_path.read_text() if log_path.exists() else ""

    seen: dict = {}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(asyncio.run, asyncio.wait_for(agent(), timeout=180))
        try:
            url = wait_until(lambda: opened.exists() and opened.read_text().strip()
                             or (running.done() and running.result()), 60,
                             "mcp-remote to open the browser on the authorization URL")
            assert isinstance(url, str), f"mcp-remote finished without signing in; its log:\n{log_text()}"
            seen["authorization_url"] = url.splitlines()[0]
            with sync_playwright() as playwright:
                instance = chromium.launch(playwright)
                tab = instance.new_page()
                try:
                    tab.goto(seen["authorization_url"])
                    expect(tab).to_have_url(re.compile(r"/console/signin"))
                    tab.get_by_label("Email").fill(email)
                    tab.get_by_label("Password").fill(password)
                    tab.get_by_role("button", name="Sign in").click()
                    expect(tab.get_by_role("heading", name=re.compile("Allow"))).to_be_visible()
                    seen["consent"] = tab.locator("main").inner_text()
                    tab.get_by_role("button", name="Approve").click()
                    expect(tab).to_have_url(re.compile(rf"^http://localhost:{callback_port}/oauth/callback\?"))
                    expect(tab.get_by_text("Authorization successful")).to_be_visible()
                except Exception:
                    print(f"\nscreenshot of the failure: {chromium.screenshot(tab, 'mcp-remote-consent')}")
                    print(f"mcp-remote's log:\n{log_text()}")
                    raise
                finally:
                    instance.close()
            tools, listed = running.result(timeout=120)
        except BaseException:
            print(f"\nmcp-remote's log:\n{log_text()}")
            raise

    names = {tool.name for tool in tools.tools}
    assert "list_devices" in names and "send_command" not in names, names  # a viewer's agent reads only
    assert listed.is_error is False, listed
    assert "devices" in listed.structured_content

    url = seen["authorization_url"]
    assert url.startswith(f"{hub.url}/api/v1/auth/authorize?"), url
    assert "code_challenge_method=S256" in url and "code_challenge=" in url
    assert f"redirect_uri=http%3A%2F%2Flocalhost%3A{callback_port}%2Foauth%2Fcallback" in url
    consent = seen["consent"]
    assert "device:read" in consent and f"{hub.url}/api/v1/mcp" in consent, consent

    # Its own sign-in, kept in its own folder: the operator's token, asked for with the URL alone.
    assert "--header" not in args and not any("Bearer" in value for value in (*args, *env.values()))
    stored = list(config.rglob("*_tokens.json"))
    assert len(stored) == 1, list(config.rglob("*"))
    tokens = json.loads(stored[0].read_text())
    assert tokens["refresh_token"]
    claims = jwt_claims(tokens["access_token"])
    assert claims["sub"] == email
    assert set(claims["scope"].split()) == {"device:read", "message:read"}

    # Started again (a desktop client's next launch): the kept tokens are used, no browser opens.
    urls_opened = opened.read_text()
    tools_again, _ = asyncio.run(asyncio.wait_for(agent(), timeout=90))
    assert {tool.name for tool in tools_again.tools} == names, log_text()
    assert opened.read_text() == urls_opened, log_text()
