"""`?wait=N` cannot take a pod out of service: real gunicorn 2 workers x 4 threads (defaults: 2 waiters per worker,
1 per API client per worker), a device that never answers, many parallel `?wait=10` commands from one client and
from several. Liveness and readiness keep answering fast, requests over the bound get their 202 at once, and a
request under the bound still gets its 200 when its device answers (docs/hardening-notes.md, "Waiting").
"""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import basic
from tests.support.processes import HubServer
from tests.support.services import wait_for

pytestmark = pytest.mark.process

WORKERS, THREADS = 2, 4
WAITERS_PER_WORKER, PER_CLIENT_PER_WORKER = 2, 1  # the defaults for 4 threads
WAIT = 10
# Kubernetes' default probe timeout is 1 s: a probe slower than that counts as failed.
PROBE_TIMEOUT_SECONDS = 1.0
# Requests over the bound answer without waiting; "quickly" is far from the 10 s a waiter takes.
QUICK_SECONDS = 3.0
PROBES = ("/api/v1/system/health/liveness", "/api/v1/system/health/readiness")


class Prober:
    """Liveness and readiness on fresh connections (as the kubelet probes), back to back, latencies kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[tuple[str, float, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in PROBES:
                started = time.perf_counter()
                try:
                    status = requests.get(self.url + path, timeout=15).status_code
                except requests.RequestException:
                    status = None
                self.latencies.append((path, time.perf_counter() - started, status))
            self._stop.wait(0.05)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)

    def worst(self) -> float:
        return max(seconds for _, seconds, _ in self.latencies)


def bearer(hub: HubServer, client_id: str, secret: str) -> dict[str, str]:
    r = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10,
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def register(hub: HubServer, auth: dict[str, str]) -> dict:
    r = requests.post(f"{hub.url}/api/v1/devices", headers=auth, timeout=10,
                      json={"device_id": f"wait-{uuid.uuid4().hex[:10]}", "name": "waits", "device_type": "sensor"})
    assert r.status_code == 201, r.text
    return r.json()


def wait_command(hub: HubServer, auth: dict[str, str], device_id: str) -> tuple[str, int, float, dict]:
    started = time.perf_counter()
    r = requests.post(f"{hub.url}/api/v1/devices/{device_id}/command?wait={WAIT}", headers=auth, timeout=40,
                      json={"command": "hold"})
    return auth["Authorization"], r.status_code, time.perf_counter() - started, r.json()


class Flood:
    """`per_client` parallel `?wait=10` commands from each client; answers are kept as they arrive."""

    def __init__(self, hub: HubServer, clients: list[dict[str, str]], per_client: int, device_id: str) -> None:
        self.jobs = [auth for auth in clients for _ in range(per_client)]
        self.results: list[tuple] = []
        self._pool = ThreadPoolExecutor(len(self.jobs))
        self._futures = [self._pool.submit(self._one, hub, auth, device_id) for auth in self.jobs]

    def _one(self, hub, auth, device_id) -> None:
        self.results.append(wait_command(hub, auth, device_id))

    def wait(self) -> list[tuple]:
        for future in self._futures:
            future.result(60)
        self._pool.shutdown()
        return self.results


def flood(hub: HubServer, clients: list[dict[str, str]], per_client: int, device_id: str) -> list[tuple]:
    return Flood(hub, clients, per_client, device_id).wait()


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
    assert all(body["status"] == "sent" and body["message_id"] for *_, body in results)


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

        flooding = Flood(hub, [flooder], 12, silent)
        # Once all but two have their 202, the rest are waiting: at most one per worker (the per-client bound), so
        # each worker still has a waiter slot for other clients.
        wait_for(lambda: len(flooding.results) >= 12 - WORKERS * PER_CLIENT_PER_WORKER, timeout=WAIT - 2,
                 message="the flooder's requests over the bound answered")
        answer = threading.Thread(target=device_answers)
        answer.start()
        _, status, seconds, body = wait_command(hub, patient, answering["device_id"])
        answer.join(20)
        check_flood(flooding.wait(), clients=1)
        assert status == 200 and body["status"] == "completed" and body["result"] == {"done": True}
        assert seconds < WAIT - 1
