"""`?wait=N` cannot take a pod out of service: real gunicorn 2 workers x 4 threads (defaults: 2 waiters per worker,
1 per API client per worker), a device that never answers, many parallel `?wait=10` commands from one client and
from several. Liveness and readiness keep answering fast, requests over the bound get their 202 at once, and a
request under the bound still gets its 200 when its device answers (docs/decisions.md, "Bounded waiting").
"""

import threading
import uuid

import pytest
import requests

from tests.conftest import basic
from tests.support.asserting import nonempty
from tests.support.processes import HubServer
from tests.support.services import wait_for
from tests.support.waiting import Flood, Prober, wait_command

pytestmark = pytest.mark.process

WORKERS, THREADS = 2, 4
WAITERS_PER_WORKER, PER_CLIENT_PER_WORKER = 2, 1  # the defaults for 4 threads
WAIT = 10
# Kubernetes' default probe timeout is 1 s: a probe slower than that counts as failed.
PROBE_TIMEOUT_SECONDS = 1.0
# Requests over the bound answer without waiting; "quickly" is far from the 10 s a waiter takes.
QUICK_SECONDS = 3.0


def bearer(hub: HubServer, client_id: str, secret: str) -> dict[str, str]:
    r = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10,
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def register(hub: HubServer, auth: dict[str, str]) -> dict:
    r = requests.post(f"{hub.url}/api/v1/devices", headers=auth, timeout=10,
                      json={"device_id": f"wait-{uuid.uuid4().hex[:10]}", "name": "waits", "device_type": "sensor"})
    assert r.status_code == 201, r.text
    return r.json()


def flood(hub: HubServer, clients: list[dict[str, str]], per_client: int, device_id: str) -> list[tuple]:
    return Flood(hub.url, clients, per_client, device_id, WAIT).wait()


def check_flood(results: list[tuple], clients: int) -> None:
    assert {status for _, status, _, _ in results} == {202}
    waited = [r for r in results if r[2] >= WAIT - 1]
    quick = [r for r in results if r[2] < QUICK_SECONDS]
    assert len(waited) + len(quick) == len(results), sorted(round(r[2], 2) for r in results)
    assert 1 <= len(waited) <= min(WORKERS * WAITERS_PER_WORKER, clients * WORKERS * PER_CLIENT_PER_WORKER)
    per_client = {}
    for who, *_ in waited:
        per_client[who] = per_client.get(who, 0) + 1
    assert max(per_client.values()) <= WORKERS * PER_CLIENT_PER_WORKER
    assert all(body["status"] == "sent" and body["message_id"] for *_, body in nonempty(results))


def test_waiters_are_bounded_so_probes_and_other_clients_always_find_a_thread(hub_env, api_client_factory):
    with HubServer({**hub_env, "UAIP_HEALTH_CACHE_SECONDS": "0"}, workers=WORKERS, threads=THREADS) as hub:
        clients = [bearer(hub, *api_client_factory()) for _ in range(4)]
        silent = register(hub, clients[0])["device_id"]  # never answers
        with Prober(hub.url) as one_client:
            from_one = flood(hub, clients[:1], 12, silent)
        with Prober(hub.url) as several_clients:
            from_several = flood(hub, clients, 6, silent)

        for prober in (one_client, several_clients):
            assert {status for _, _, status in prober.latencies} == {200}
            assert prober.worst() < PROBE_TIMEOUT_SECONDS, sorted(s for _, s, _ in prober.latencies)[-5:]
        check_flood(from_one, clients=1)
        check_flood(from_several, clients=4)


def test_under_the_bound_a_waiter_gets_its_200_while_another_client_floods(hub_env, api_client_factory):
    with HubServer(hub_env, workers=WORKERS, threads=THREADS) as hub:
        flooder, patient = (bearer(hub, *api_client_factory()) for _ in range(2))
        silent = register(hub, flooder)["device_id"]
        answering = register(hub, patient)
        device_auth = basic(answering["device_id"], answering["device_secret"])
        commands_url = f"{hub.url}/api/v1/devices/{answering['device_id']}/commands"

        def device_answers() -> None:
            listing = wait_for(lambda: requests.get(commands_url, headers=device_auth, timeout=10).json()["commands"],
                               timeout=20, message="the command reached the device")
            r = requests.post(f"{hub.url}/api/v1/messages/{listing[0]['message_id']}/ack", headers=device_auth,
                              json={"status": "completed", "result": {"done": True}}, timeout=10)
            assert r.status_code == 200, r.text

        flooding = Flood(hub.url, [flooder], 12, silent, WAIT)
        # Once all but two have their 202, the rest are waiting: at most one per worker (the per-client bound), so
        # each worker still has a waiter slot for other clients.
        wait_for(lambda: len(flooding.results) >= 12 - WORKERS * PER_CLIENT_PER_WORKER, timeout=WAIT - 2,
                 message="the flooder's requests over the bound answered")
        answer = threading.Thread(target=device_answers)
        answer.start()
        _, status, seconds, body = wait_command(hub.url, patient, answering["device_id"], WAIT)
        answer.join(20)
        check_flood(flooding.wait(), clients=1)
        assert status == 200 and body["status"] == "completed" and body["result"] == {"done": True}
        assert seconds < WAIT - 1
