"""Device state through real processes: gunicorn, a relay and the simulated thermostat (`uaip-hub simulate
--example thermostat` plays state): it reports over NATS, an agent sets a desired set-point through MCP, the
device applies it and reports back, so the delta empties; and HTTP reports count on the API's /metrics."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.cli.examples import EXAMPLES
from app.cli.simulate import DeviceSimulator
from tests.conftest import basic, unique_id
from tests.process.test_mcp_gunicorn import MCP, agent, hub, online, token  # noqa: F401 - the hub fixture
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process


def test_the_thermostat_reports_state_and_honours_desired_set_points(hub, api_client_factory):  # noqa: F811
    admin = api_client_factory("admin")
    rest = token(hub.url, *admin)
    headers = {"Authorization": f"Bearer {rest}"}
    simulator = DeviceSimulator.with_registration(hub.url, NATS_URL, 1, token=rest, prefix=unique_id("thermo"),
                                                  heartbeat_seconds=30, state_seconds=0.3,
                                                  example=EXAMPLES["thermostat"])
    [device_id] = simulator.device_ids

    def state():
        return requests.get(f"{hub.url}/api/v1/devices/{device_id}/state", headers=headers, timeout=5).json()

    async def work(client):
        return await client.call_tool("set_desired", {"device_id": device_id,
                                                      "desired": {"target_temperature": 24}})

    with simulator:
        online(hub, rest, device_id)
        wait_for(lambda: "temperature" in state()["reported"], timeout=20, message="a reported temperature")
        changed = agent(hub, token(hub.url, *admin, hub.url + MCP), "auto", work)
        assert changed.is_error is False and changed.structured_content["desired"] == {"target_temperature": 24}
        settled = wait_for(lambda: (s := state())["delta"] == {} and s["reported"]["target_temperature"] == 24 and s,
                           timeout=20, message="the thermostat applied the set-point")
        assert settled["desired"] == {"target_temperature": 24}
        wait_for(lambda: state()["reported"]["temperature"] > 23, timeout=20, message="the room warming up")
    assert simulator.desired_received and simulator.desired_received[0]["desired"] == {"target_temperature": 24}
    history = requests.get(f"{hub.url}/api/v1/devices/{device_id}/state/history", headers=headers, timeout=5,
                           params={"property": "temperature"}).json()
    values = [point["value"] for point in history["points"]]
    assert len(values) >= 2 and values == sorted(values)  # warming towards 24, one point per change


def api_reports_total(url: str, outcome: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "uaip_state_reports_total" and sample.labels.get("outcome") == outcome:
                return sample.value
    return 0.0


def test_http_reports_count_on_the_api_metrics(hub, api_client_factory):  # noqa: F811
    rest = token(hub.url, *api_client_factory())
    device_id = unique_id("metered")
    created = requests.post(f"{hub.url}/api/v1/devices", json={"device_id": device_id, "name": "Meter",
                                                                "device_type": "meter"},
                            headers={"Authorization": f"Bearer {rest}"}, timeout=10).json()
    device_auth = basic(device_id, created["device_secret"])
    before = {outcome: api_reports_total(hub.url, outcome) for outcome in ("applied", "ignored", "rejected")}
    url = f"{hub.url}/api/v1/devices/{device_id}/state/reported"
    assert requests.patch(url, json={"reported": {"kwh": 1}}, headers=device_auth, timeout=5).status_code == 200
    assert requests.patch(url, json={"reported": {"kwh": 0}, "timestamp": "2020-01-01T00:00:00Z"},
                          headers=device_auth, timeout=5).status_code == 200
    assert requests.patch(url, json={"reported": "no"}, headers=device_auth, timeout=5).status_code == 400
    expected = {outcome: count + 1 for outcome, count in before.items()}
    wait_for(lambda: {outcome: api_reports_total(hub.url, outcome) for outcome in expected} == expected, timeout=10,
             message="one report of each outcome counted")
