"""Typed commands under real gunicorn workers, a relay and `uaip-hub simulate --example thermostat`."""

import glob
import signal
import uuid

import pytest
import requests
from jsonschema import Draft202012Validator
from prometheus_client.mmap_dict import MmapedDict

from tests.support.processes import HubServer, Relay, Simulator
from tests.support.services import NATS_URL, wait_for
from tests.support.things import td_errors

pytestmark = pytest.mark.process


@pytest.fixture()
def env(hub_env, run_id):
    return {**hub_env, "UAIP_RELAY_SWEEP_SECONDS": "0.2", "UAIP_COMMAND_RETRY_SECONDS": "1",
            "UAIP_RELAY_QUEUE_GROUP": f"uaip-relay-typed-{run_id}", "UAIP_RELAY_METRICS_PORT": "0",
            "UAIP_REDIS_KEY_PREFIX": f"uaip-test-{uuid.uuid4().hex[:10]}"}


class Api:
    def __init__(self, url, client_id, secret):
        self.url = url
        token = requests.post(f"{url}/api/v1/auth/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json()
        self.headers = {"Authorization": f"Bearer {token['access_token']}"}

    def __call__(self, method, path, **kwargs):
        return requests.request(method, f"{self.url}/api/v1{path}", headers=self.headers, timeout=40, **kwargs)


def test_the_simulated_thermostat_answers_with_results_matching_its_result_schemas(env, api_client_factory):
    client_id, secret = api_client_factory("admin")
    prefix = f"thermo-{uuid.uuid4().hex[:6]}"
    with HubServer(env) as hub, Relay(env) as relay:
        wait_for(lambda: "relay started" in relay.output(), timeout=30, message="relay start")
        simulator = Simulator(env, ["--example", "thermostat", "--devices", "2", "--prefix", prefix,
                                    "--hub-url", hub.url, "--nats-url", NATS_URL, "--client-id", client_id,
                                    "--client-secret", secret, "--heartbeat-seconds", "0.5"]).start()
        try:
            api = Api(hub.url, client_id, secret)
            device_id = f"{prefix}-1"
            wait_for(lambda: api("GET", f"/devices/{device_id}").json().get("status") == "online", timeout=30,
                     message=f"simulated thermostat online\n{simulator.output()[-2000:]}")
            declared = api("GET", "/device-types/thermostat").json()
            assert set(declared["commands"]) == {"set_temperature", "read"}
            results = {name: Draft202012Validator(command["result"]) for name, command in declared["commands"].items()}

            done = api("POST", f"/devices/{device_id}/command?wait=20",
                       json={"command": "set_temperature", "params": {"value": 23.5}})
            assert done.status_code == 200 and done.json()["status"] == "completed", done.json()
            assert list(results["set_temperature"].iter_errors(done.json()["result"])) == []
            assert done.json()["result"]["target"] == 23.5
            for _ in range(2):
                read = api("POST", f"/devices/{device_id}/commands/read?wait=20")
                assert read.status_code == 200 and read.json()["status"] == "completed", read.json()
                assert list(results["read"].iter_errors(read.json()["result"])) == []
            assert read.json()["result"]["target"] == 23.5 and read.json()["result"]["heating"] is True

            refused = api("POST", f"/devices/{device_id}/command", json={"command": "set_temperature",
                                                                        "params": {"value": 90}})
            assert refused.status_code == 422
            assert refused.json()["details"]["errors"] == [
                {"pointer": "/params/value", "message": "90 is greater than the maximum of 35", "keyword": "maximum"}]

            td = api("GET", f"/devices/{device_id}/thing-description")
            assert td.headers["Content-Type"].startswith("application/td+json")
            assert td_errors(td.json()) == [] and set(td.json()["actions"]) == {"set_temperature", "read"}
        finally:
            simulator.signal(signal.SIGTERM)
            assert simulator.wait(timeout=20) == 0, simulator.output()
        assert "of type thermostat" in simulator.output() and "answered" in simulator.output()


def served_status(metrics_dir, endpoint: str, status: str) -> int:
    """How many workers' metric files counted `endpoint` answering `status`."""
    workers = 0
    for path in glob.glob(str(metrics_dir / "counter_*.db")):
        if any('"uaip_http_requests_total"' in key and endpoint in key and f'"{status}"' in key and value > 0
               for key, value, *_ in MmapedDict.read_all_values_from_file(path)):
            workers += 1
    return workers


def test_a_replaced_type_applies_on_every_worker_with_the_next_command(env, api_client_factory):
    """Each worker compiled version 1 (and cached it); after the PUT of version 2 every command, whichever worker
    takes it, is checked against version 2: the version is read with the device, not from a cache."""
    client_id, secret = api_client_factory("admin")
    name = f"fresh-{uuid.uuid4().hex[:6]}"
    with HubServer(env, workers=2, threads=2) as hub:
        api = Api(hub.url, client_id, secret)
        assert api("PUT", f"/device-types/{name}", json={"commands": {"read": {}}}).status_code == 201
        device_id = api("POST", "/devices", json={"name": "t", "device_type": name}).json()["device_id"]
        endpoint = "/api/v1/devices/<device_id>/command"

        def warm():
            for _ in range(10):
                assert api("POST", f"/devices/{device_id}/command", json={"command": "read"}).status_code == 202
            return served_status(hub.metrics_dir, endpoint, "202") == 2

        wait_for(warm, timeout=60, interval=0, message="both workers validated version 1")
        stricter = {"commands": {"read": {"params": {"type": "object", "required": ["channel"]}}}}
        assert api("PUT", f"/device-types/{name}", json=stricter).json()["version"] == 2

        def refuse():
            for _ in range(10):
                response = api("POST", f"/devices/{device_id}/command", json={"command": "read"})
                assert response.status_code == 422 and response.json()["details"]["type_version"] == 2, response.json()
            return served_status(hub.metrics_dir, endpoint, "422") == 2

        wait_for(refuse, timeout=60, interval=0, message="both workers refused with version 2")
