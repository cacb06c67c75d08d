"""Real gunicorn, real signals, real outages (docs/operations.md, "Signals and draining").

Load comes from tests/support/load.py (bounded, 127.0.0.1 only). A request that is slow by nature is made with a
PostgreSQL lock the test holds: `LOCK TABLE devices IN SHARE MODE` lets reads through and makes every PATCH
wait until the test releases it — no test-only route in the hub.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid

import psycopg2
import pytest
import requests

from app.infra.db import Database
from app.infra.migrate import migrate
from app.services.clients import create_client
from tests.support.load import LoadGenerator
from tests.support.processes import HubServer
from tests.support.servers import NatsServer, PostgresServer, RedisServer
from tests.support.services import wait_for

pytestmark = pytest.mark.process

SCOPES = "device:read device:write"
# How long a load-generator request may wait for its answer, as a load balancer would (nginx waits 60 s). Across a
# SIGHUP or a recycled worker, requests wait in the listen backlog until a new worker has booted: well under a
# second of CPU time, but over 10 s of wall time when other processes keep both cores busy. Such a request is late,
# not failed; one that gets no answer within this time, an error or a 5xx is a failure.
LOAD_TIMEOUT = 30
HEALTH = "/api/v1/system/health"
READINESS = HEALTH + "/readiness"


def bearer(hub: HubServer, client_id: str, secret: str) -> dict[str, str]:
    response = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def register(hub: HubServer, auth: dict[str, str]) -> str:
    device_id = f"life-{uuid.uuid4().hex[:10]}"
    response = requests.post(f"{hub.url}/api/v1/devices", headers=auth, timeout=10,
                             json={"device_id": device_id, "name": "Lifecycle", "device_type": "sensor"})
    assert response.status_code == 201, response.text
    return device_id


def health(hub: HubServer, path: str = HEALTH) -> requests.Response:
    return requests.get(hub.url + path, timeout=5)


def answered(hub: HubServer, path: str, status: int) -> dict | None:
    """The JSON body when `path` answers `status` (a Response is falsy for 4xx/5xx, so not that)."""
    response = health(hub, path)
    return response.json() if response.status_code == status else None


def dependency_status(body: dict, name: str) -> str:
    return next(dep["status"] for dep in body["dependencies"] if dep["name"] == name)


class HeldPatches:
    """PATCH requests held in flight by a table lock the test owns, each in its own thread."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.lock_conn = psycopg2.connect(database_url)
        self.results: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    def hold(self) -> None:
        with self.lock_conn.cursor() as cur:
            cur.execute("LOCK TABLE devices IN SHARE MODE")

    def send(self, hub: HubServer, auth: dict[str, str], device_ids: list[str]) -> None:
        def patch(device_id: str) -> None:
            try:
                response = requests.patch(f"{hub.url}/api/v1/devices/{device_id}", headers=auth, timeout=30,
                                          json={"name": "patched while draining"})
                self.results[device_id] = response.status_code
            except requests.RequestException as exc:
                self.results[device_id] = exc

        self.threads = [threading.Thread(target=patch, args=(d,), daemon=True) for d in device_ids]
        for thread in self.threads:
            thread.start()
        wait_for(lambda: self.waiting() == len(device_ids), timeout=15, message="PATCHes blocked on the lock")

    def waiting(self) -> int:
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE devices%%'")
            return cur.fetchone()[0]

    def release(self) -> None:
        if not self.lock_conn.closed:
            self.lock_conn.rollback()
            self.lock_conn.close()

    def __enter__(self) -> HeldPatches:
        return self

    def __exit__(self, *exc) -> None:
        self.release()  # before the hub stops, so a failed test never leaves requests hanging on the lock

    def join(self, timeout: float) -> dict[str, object]:
        for thread in self.threads:
            thread.join(timeout)
        return self.results


@pytest.fixture()
def credentials(api_client_factory):
    return api_client_factory(SCOPES)


def test_sighup_replaces_every_worker_without_a_failed_request(hub_env, credentials):
    with HubServer(hub_env) as hub:
        auth = bearer(hub, *credentials)
        device_id = register(hub, auth)
        old = hub.worker_pids()
        assert len(old) == 2
        load = LoadGenerator(hub.url, f"/api/v1/devices/{device_id}", rate=120, max_seconds=60, headers=auth,
                             timeout=LOAD_TIMEOUT).start()
        time.sleep(2)
        sent_before_hup, _ = load.snapshot()
        hub.signal(signal.SIGHUP)
        def replaced() -> set[int] | None:
            pids = hub.worker_pids()
            return pids if len(pids) == 2 and not pids & old else None

        new = wait_for(replaced, timeout=20, message="two new workers")
        # The old workers are gone: whatever completes from now on was answered by the new ones, which may still be
        # booting. The load goes on until they have answered another second of it.
        sent_when_replaced, _ = load.snapshot()
        wait_for(lambda: load.snapshot()[0] >= sent_when_replaced + 120, timeout=LOAD_TIMEOUT + 10,
                 message="a second of load answered by the new workers")
        result = load.stop()
        after = requests.get(f"{hub.url}/api/v1/devices/{device_id}", headers=auth, timeout=10)
        output = hub.output()
    assert result.failures == 0, result.summary()
    assert result.sent - sent_before_hup >= 100, result.summary()  # the load went on across the restart
    assert new.isdisjoint(old) and after.status_code == 200
    assert "Hang up" in output


def test_sigterm_after_the_drain_file_finishes_in_flight_requests_and_exits_0(hub_env, credentials, database, tmp_path):
    drain = tmp_path / "uaip-draining"
    with HubServer(hub_env, UAIP_DRAIN_FILE=str(drain), GRACEFUL_TIMEOUT_SECONDS="15") as hub, \
            HeldPatches(database) as held:
        auth = bearer(hub, *credentials)
        device_id = register(hub, auth)
        slow = [register(hub, auth) for _ in range(3)]
        load = LoadGenerator(hub.url, f"/api/v1/devices/{device_id}", rate=120, max_seconds=20, headers=auth,
                             gate_path=READINESS).start()
        time.sleep(1)
        held.hold()
        held.send(hub, auth, slow)  # three requests in flight, held by the lock
        time.sleep(1)
        drain.touch()  # Kubernetes preStop: readiness turns 503, the load balancer stops sending
        wait_for(lambda: load.stopped, timeout=10, message="the load generator to see readiness 503")
        result = load.wait()
        readiness = health(hub, READINESS)
        started = time.monotonic()
        hub.signal(signal.SIGTERM)
        time.sleep(1)
        in_flight_after_sigterm = dict(held.results)  # empty: all three still waiting on the lock
        held.release()
        code = hub.wait(timeout=20)
        seconds = time.monotonic() - started
        patches = held.join(10)
    assert readiness.status_code == 503 and readiness.json() == {"status": "draining"}
    assert result.failures == 0 and result.gate_closed_at is not None, result.summary()
    assert in_flight_after_sigterm == {} and patches == {d: 200 for d in slow}, (in_flight_after_sigterm, patches)
    assert code == 0 and seconds < 15, (code, seconds)


def test_a_request_longer_than_the_grace_period_is_cut_off_and_logged(hub_env, credentials, database):
    with HubServer(hub_env, workers=1, GRACEFUL_TIMEOUT_SECONDS="2") as hub, HeldPatches(database) as held:
        auth = bearer(hub, *credentials)
        slow = register(hub, auth)
        kept_alive = requests.Session()
        assert kept_alive.get(hub.url + READINESS, timeout=5).status_code == 200
        held.hold()
        held.send(hub, auth, [slow])
        hub.signal(signal.SIGTERM)
        # No drain file: the worker's own SIGTERM flag answers on a connection that was already open.
        answers = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and not answers[-1:] == [503]:
            try:
                answers.append(kept_alive.get(hub.url + READINESS, timeout=2).status_code)
            except requests.RequestException:
                break
        code = hub.wait(timeout=15)
        held.release()
        patches = held.join(10)
        output = hub.output()
    assert answers and answers[-1] == 503, answers
    assert code == 0
    assert isinstance(patches[slow], requests.ConnectionError), patches
    assert "was killed: requests still in flight" in output or "was sent SIGKILL" in output, output[-2000:]


def test_max_requests_recycles_workers_without_a_failed_request(hub_env, credentials):
    with HubServer(hub_env, GUNICORN_CMD_ARGS="--max-requests 100 --max-requests-jitter 20") as hub:
        auth = bearer(hub, *credentials)
        device_id = register(hub, auth)
        load = LoadGenerator(hub.url, f"/api/v1/devices/{device_id}", rate=100, max_seconds=60, headers=auth,
                             timeout=LOAD_TIMEOUT).start()
        # Until three workers were recycled (about 6 s at 100 req/s; longer when the machine is busy).
        try:
            wait_for(lambda: hub.output().count("Autorestarting worker") >= 3, timeout=60, message="3 worker restarts")
        finally:
            result = load.stop()
    assert result.failures == 0, result.summary()


def test_postgres_outage_is_503_and_recovers_without_a_hub_restart(hub_env):
    with PostgresServer() as pg:
        url = pg.create_database("uaip")
        migrate(url)
        db = Database(url, maxconn=1)
        client, secret = create_client(db, "outage", SCOPES)
        db.close()
        with HubServer({**hub_env, "DATABASE_URL": url}) as hub:
            auth = bearer(hub, client.client_id, secret)
            device_id = register(hub, auth)
            device_url = f"{hub.url}/api/v1/devices/{device_id}"

            # Concurrent requests fill both workers' pools; every pooled connection dies in a restart, and once
            # PostgreSQL accepts connections again the next requests succeed.
            warm = LoadGenerator(hub.url, device_url.removeprefix(hub.url), rate=200, threads=8, max_requests=200,
                                 headers=auth).start().wait()
            pg.restart()
            wait_for(lambda: psycopg2.connect(url).close() or True, timeout=20,
                     message="PostgreSQL to accept connections")
            after_restart = [requests.get(device_url, headers=auth, timeout=10).status_code for _ in range(20)]

            pg.stop()
            started = time.monotonic()
            down = requests.get(device_url, headers=auth, timeout=10)
            down_seconds = time.monotonic() - started
            unhealthy = wait_for(lambda: answered(hub, HEALTH, 503), timeout=10, message="health 503")
            not_ready = wait_for(lambda: answered(hub, READINESS, 503), timeout=10, message="readiness 503")
            liveness = health(hub, HEALTH + "/liveness")

            pg.start()
            wait_for(lambda: requests.get(device_url, headers=auth, timeout=10).status_code == 200, timeout=20,
                     message="the API to recover")
            recovered = [requests.get(device_url, headers=auth, timeout=10).status_code for _ in range(20)]
            wait_for(lambda: health(hub).json()["status"] == "healthy", timeout=10, message="health to recover")
    assert warm.failures == 0, warm.summary()
    assert after_restart == [200] * 20, after_restart
    assert down.status_code == 503 and down.json()["code"] == "SERVICE_UNAVAILABLE", down.text
    assert down.headers.get("Retry-After") and down_seconds < 5, down_seconds
    assert unhealthy["status"] == "unhealthy" and dependency_status(unhealthy, "PostgreSQL") == "unhealthy"
    assert not_ready == {"status": "not_ready"}
    assert liveness.status_code == 200
    assert recovered == [200] * 20


def test_redis_and_nats_outages_degrade_and_recover(hub_env, credentials):
    with RedisServer() as redis, NatsServer() as nats:
        with HubServer({**hub_env, "REDIS_URL": redis.url, "NATS_URL": nats.url}) as hub:
            auth = bearer(hub, *credentials)
            device_url = f"{hub.url}/api/v1/devices/{register(hub, auth)}"

            def status_is(expected: str, name: str | None = None, dep: str = "unhealthy"):
                def check():
                    response = health(hub)
                    body = response.json()
                    if body["status"] == expected and (name is None or dependency_status(body, name) == dep):
                        return response
                    return None
                return check

            wait_for(status_is("healthy"), timeout=15, message="healthy")
            redis.stop()
            redis_down = wait_for(status_is("degraded", "Redis"), timeout=10, message="Redis degraded")
            api_without_redis = requests.get(device_url, headers=auth, timeout=10).status_code
            redis.start()
            wait_for(status_is("healthy"), timeout=15, message="healthy after Redis")

            nats.stop()
            nats_down = wait_for(status_is("degraded", "NATS"), timeout=10, message="NATS degraded")
            api_without_nats = requests.get(device_url, headers=auth, timeout=10).status_code
            ready_without_nats = health(hub, READINESS).status_code
            nats.start()
            wait_for(status_is("healthy"), timeout=20, message="healthy after NATS")
    assert redis_down.status_code == 200 and api_without_redis == 200
    assert nats_down.status_code == 200 and api_without_nats == 200 and ready_without_nats == 200
