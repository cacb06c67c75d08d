"""Third-party clients against real gunicorn processes:

- node-wot (the W3C WoT reference consumer, `@node-wot/core` + `@node-wot/binding-http` 0.9) consuming a device's
  Thing Description over HTTPS: it fetches its own OAuth2 token as the TD's security definition says (node-wot
  makes that request over HTTPS only, without a Content-Type), reads a property and invokes an action (also
  without a Content-Type), filling the `wait` URI variable; the action's `queryaction` form then follows the
  command;
- docs/mcp.md's Python snippet, run as written against a simulated thermostat, with the environment its
  "Try it in minutes" sets.

scripts/test installs node-wot (tests/support/third_party.py says where).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.cli.examples import EXAMPLES
from app.cli.simulate import DeviceSimulator
from tests.conftest import unique_id
from tests.support import third_party
from tests.support.processes import HubServer, start_relay
from tests.support.services import NATS_URL, wait_for
from tests.support.things import expand

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
THERMOSTAT = EXAMPLES["thermostat"]


class Rest:
    """The REST API of one hub as an admin client (requests, verifying the hub's certificate)."""

    def __init__(self, hub: HubServer, client_id: str, secret: str) -> None:
        self.hub = hub
        r = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10, verify=hub.verify, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
        assert r.status_code == 200, r.text
        self.token = r.json()["access_token"]

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.hub.url + path, headers={"Authorization": f"Bearer {self.token}"},
                                timeout=10, verify=self.hub.verify, **kwargs)

    def new_thermostat(self) -> str:
        """Declare the thermostat type (as `uaip-hub simulate --example thermostat` does) and register one."""
        r = self.call("PUT", f"/api/v1/device-types/{THERMOSTAT.device_type}", json=THERMOSTAT.declaration)
        assert r.status_code in (200, 201), r.text
        device_id = unique_id("thermo")
        r = self.call("POST", "/api/v1/devices", json={"device_id": device_id, "name": "Living room",
                                                         "device_type": THERMOSTAT.device_type})
        assert r.status_code == 201, r.text
        return device_id

    def wait_online(self, device_id: str) -> None:
        wait_for(lambda: self.call("GET", f"/api/v1/devices/{device_id}").json()["status"] == "online",
                 timeout=20, message=f"{device_id} online")


@pytest.fixture()
def relay(relay_env):
    relay = start_relay(relay_env)
    yield relay
    relay.stop()


def test_node_wot_consumes_a_thing_description_over_https(relay, relay_env, api_client_factory, tmp_path):
    modules, node = third_party.node_modules(), third_party.node()
    certificate, key = third_party.self_signed_certificate(tmp_path)
    # What a WoT consumer needs: read the TD and properties, invoke actions, follow them.
    consumer_id, consumer_secret = api_client_factory("device:read device:command message:read")
    with HubServer({**relay_env, "LOG_FORMAT": "json"}, tls=(certificate, key)) as hub:
        rest = Rest(hub, *api_client_factory("admin"))
        device_id = rest.new_thermostat()
        td_path = f"/api/v1/devices/{device_id}/thing-description"
        with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=30, example=THERMOSTAT):
            rest.wait_online(device_id)
            consumer = subprocess.run(
                [node, str(third_party.SUPPORT / "wot_consumer.mjs")], capture_output=True, text=True, timeout=120,
                env={"PATH": os.environ["PATH"], "NODE_MODULES": str(modules), "NODE_EXTRA_CA_CERTS": str(certificate),
                     "TD_URL": hub.url + td_path, "TD_TOKEN": rest.token,
                     "CLIENT_ID": consumer_id, "CLIENT_SECRET": consumer_secret,
                     "PROPERTY": "status", "ACTION": "set_temperature", "ACTION_INPUT": '{"value": 22.5}',
                     "ACTION_WAIT": "20"},
            )
            assert consumer.returncode == 0, consumer.stdout + consumer.stderr + hub.output()[-3000:]
            answer = json.loads(consumer.stdout.strip().splitlines()[-1])
            # The action's queryaction form leads to the same command.
            forms = rest.call("GET", td_path).json()["actions"]["set_temperature"]["forms"]
            [query] = [form for form in forms if form["op"] == "queryaction"]
            followed = requests.request(query["htv:methodName"], expand(query["href"], message_id=answer["action"]
                                        ["message_id"]), headers={"Authorization": f"Bearer {rest.token}"},
                                        timeout=10, verify=hub.verify)
        access = [line for line in hub.json_lines() if line.get("logger") == "uaip.access"]

    assert answer["property"] == "online"
    message = answer["action"]
    assert message["status"] == "completed", message
    # The simulated room warms towards its target as it reports its state: the temperature is whatever it is now.
    assert message["result"]["target"] == 22.5 and set(message["result"]) == {"target", "temperature"}
    assert isinstance(message["result"]["temperature"], float)
    # node-wot filled the `wait` URI variable (a 200 with the outcome, not a 202) and asked for its own token.
    invoked = [line for line in access if line["path"] == f"/api/v1/devices/{device_id}/commands/set_temperature"]
    assert [line["status"] for line in invoked] == [200]
    assert followed.status_code == 200 and followed.json() == message


def docs_snippet(name: str, heading: str) -> str:
    """The first ```python block after `heading` in docs/NAME.md."""
    text = (ROOT / "docs" / f"{name}.md").read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(heading):], re.S).group(1)


def run_snippet(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = tmp_path / "agent.py"
    script.write_text(docs_snippet("mcp", "### Python (official `mcp` SDK"))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], **env})


def test_the_docs_mcp_snippet_runs_as_written(relay, relay_env, api_client_factory, tmp_path):
    """docs/mcp.md "Connect an agent", with the environment of its "Try it in minutes" and nothing else."""
    agent_id, agent_secret = api_client_factory("device:read device:command message:read")
    with HubServer(relay_env) as hub:
        rest = Rest(hub, *api_client_factory("admin"))
        device_id = rest.new_thermostat()
        with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=30, example=THERMOSTAT):
            rest.wait_online(device_id)
            run = run_snippet(tmp_path, {"HUB": hub.url, "CLIENT_ID": agent_id, "CLIENT_SECRET": agent_secret,
                                         "DEVICE_ID": device_id})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "2026-07-28"
    assert "send_command - Send a command to a device" in lines
    assert f"'device_id': '{device_id}'" in run.stdout  # listed among the thermostats
    status, _, result = lines[-1].partition(" ")
    assert status == "completed" and result.startswith("{'target': 23.5, 'temperature': "), lines[-1]


def test_the_docs_mcp_snippet_stops_on_a_tool_error(relay_env, api_client_factory, tmp_path):
    agent_id, agent_secret = api_client_factory("device:read device:command message:read")
    with HubServer(relay_env) as hub:
        run = run_snippet(tmp_path, {"HUB": hub.url, "CLIENT_ID": agent_id, "CLIENT_SECRET": agent_secret,
                                     "DEVICE_ID": unique_id("absent")})
    assert run.returncode == 1, run.stdout + run.stderr
    assert json.loads(run.stderr.strip().splitlines()[-1])["code"] == "DEVICE_NOT_FOUND"
