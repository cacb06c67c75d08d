"""Every metric the chart's alerts and dashboard use is exposed by a live hub: a real gunicorn (2 workers) and a
real `uaip-hub relay` with its own /metrics, after commands went through a simulated device over NATS (so the
histograms and counters have samples). Also: the relay-side metrics are on the relay's /metrics with the values
the traffic implies, and both expositions pass `promtool check metrics`."""

import shutil
import subprocess
import time

import helm_python as helm
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.cli.simulate import DeviceSimulator, fetch_token
from tests.conftest import basic, unique_id
from tests.support.monitoring import CHART_DIR, KUBE_STATE_METRICS, exposed_sample_names, names_used
from tests.support.processes import HubServer, Relay
from tests.support.services import NATS_URL, free_port, wait_for

pytestmark = pytest.mark.process


def scrape(url: str) -> str:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    return response.text


def value(exposition: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@pytest.fixture()
def live_env(hub_env, run_id):
    return {**hub_env, "UAIP_RELAY_SWEEP_SECONDS": "0.2", "UAIP_COMMAND_RETRY_SECONDS": "1",
            "UAIP_RELAY_QUEUE_GROUP": f"uaip-relay-live-{run_id}", "LOG_FORMAT": "text"}


def test_every_metric_in_the_alerts_and_dashboard_is_exposed_by_the_hub_or_relay(live_env, api_client_factory):
    relay_port = free_port()
    with HubServer(live_env) as hub, Relay({**live_env, "UAIP_RELAY_METRICS_PORT": str(relay_port)}) as relay:
        relay_url = f"http://127.0.0.1:{relay_port}/metrics"
        wait_for(lambda: "relay started" in relay.output() and scrape(relay_url), timeout=30,
                 message=f"relay and its metrics\n{relay.output()[-2000:]}")
        token = fetch_token(hub.url, *api_client_factory())
        auth = {"Authorization": f"Bearer {token}"}
        device_id = unique_id("live")
        registered = requests.post(f"{hub.url}/api/v1/devices",
                                   json={"device_id": device_id, "name": "live", "device_type": "sim"},
                                   headers=auth, timeout=10)
        assert registered.status_code == 201, registered.text
        with DeviceSimulator(NATS_URL, [device_id], heartbeat_seconds=0.5):
            wait_for(lambda: requests.get(f"{hub.url}/api/v1/devices/{device_id}", headers=auth, timeout=10)
                     .json()["status"] == "online", timeout=30, message="device online")
            for params, final in (({"x": 1}, "completed"), ({"fail": True, "error": "jammed"}, "failed")):
                r = requests.post(f"{hub.url}/api/v1/devices/{device_id}/command?wait=20",
                                  json={"command": "echo", "params": params}, headers=auth, timeout=30)
                assert r.status_code == 200 and r.json()["status"] == final, r.text
        # One ack over REST as well, from a device that answers that way.
        rest_device = registered_with_secret(hub.url, auth)
        accepted = requests.post(f"{hub.url}/api/v1/devices/{rest_device['device_id']}/command",
                                 json={"command": "echo"}, headers=auth, timeout=10).json()
        acked = requests.post(f"{hub.url}/api/v1/messages/{accepted['message_id']}/ack", json={"status": "completed"},
                              headers=basic(rest_device["device_id"], rest_device["device_secret"]), timeout=10)
        assert acked.status_code == 200, acked.text

        # Every API worker connects to NATS in the background after it starts; the gauge is the lowest of them.
        api_text = wait_for(lambda: (t := scrape(f"{hub.url}/metrics")) and value(t, "uaip_nats_connected") == 1 and t,
                            timeout=30, message="uaip_nats_connected 1 on the API")
        relay_text = scrape(relay_url)

    exposed = exposed_sample_names(api_text) | exposed_sample_names(relay_text)
    with helm.Chart.load(CHART_DIR) as chart:
        used = names_used(chart)
    missing = {name: sorted(where) for name, where in used.items() if name not in exposed | KUBE_STATE_METRICS}
    assert not missing, f"named in the chart's rules/dashboard but not exposed: {missing}"

    # The relay applied the NATS acks: they are counted in its process, on its /metrics.
    assert value(relay_text, "uaip_acks_total", source="relay", outcome="applied") >= 4  # 2 × (acknowledged, final)
    assert value(relay_text, "uaip_commands_total", status="completed") == 1
    assert value(relay_text, "uaip_commands_total", status="failed") == 1
    assert value(relay_text, "uaip_command_completion_seconds_count", status="completed") == 1
    assert value(relay_text, "uaip_command_completion_seconds_count", status="failed") == 1
    assert 0 < value(relay_text, "uaip_command_completion_seconds_sum", status="completed") < 30
    assert value(relay_text, "uaip_nats_connected") == 1
    assert time.time() - value(relay_text, "uaip_relay_last_sweep_timestamp_seconds",
                               queue_group=live_env["UAIP_RELAY_QUEUE_GROUP"]) < 30
    # Relay-only series never appear on the API (a 0 there would read as a relay stalled since 1970).
    assert value(api_text, "uaip_relay_last_sweep_timestamp_seconds") is None
    assert not [name for name in exposed_sample_names(relay_text) if name.endswith("_created")]
    # The REST ack in an API worker; the submits counted where they were published.
    assert value(api_text, "uaip_acks_total", source="rest", outcome="applied") == 1
    assert value(api_text, "uaip_command_completion_seconds_count", status="completed") == 1
    # Three commands sent: counted by the worker that published them, or by the relay when the simulated device's
    # ack overtook the worker's `sent` mark (each once).
    sent_by_api = value(api_text, "uaip_commands_total", status="sent")
    assert sent_by_api + value(relay_text, "uaip_commands_total", status="sent") >= 3
    assert value(api_text, "uaip_commands_total", status="sent") >= 1

    tool = shutil.which("promtool")
    assert tool, "promtool not found: install Debian's `prometheus` package (scripts/test does)"
    for text in (api_text, relay_text):
        check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr


def registered_with_secret(hub_url: str, auth: dict) -> dict:
    r = requests.post(f"{hub_url}/api/v1/devices",
                      json={"device_id": unique_id("live-rest"), "name": "rest", "device_type": "sim"},
                      headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()
