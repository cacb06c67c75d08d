"""Lifecycle figures for the README: failed requests across SIGHUP and SIGTERM-with-drain at the highest load
this machine sustains, time from SIGTERM to exit, and health endpoint latency with and without its cache.

    python -m bench.lifecycle            # prints JSON; needs PostgreSQL, Redis and NATS as the tests do

`run()` returns the figures as a dict, so one benchmark command can call it next to the others. Everything
targets a gunicorn started here on 127.0.0.1 (tests/support/processes.py) with a bounded load generator.
"""

from __future__ import annotations

import json
import signal
import socket
import tempfile
import time
import uuid
from pathlib import Path

import requests

from app.infra.db import Database
from app.infra.migrate import migrate
from app.services.clients import create_client
from tests.support import services
from tests.support.load import LoadGenerator
from tests.support.processes import HubServer

READINESS = "/api/v1/system/health/readiness"


def _environment(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url, "REDIS_URL": services.REDIS_BASE_URL, "NATS_URL": services.NATS_URL,
        "UAIP_ENV": "development", "UAIP_REDIS_KEY_PREFIX": f"uaip-bench-{uuid.uuid4().hex[:6]}",
        "RATE_LIMIT_PER_MINUTE": "1000000", "RATE_LIMIT_BURST": "1000000", "LOG_LEVEL": "warning",
    }


def _prepare(hub: HubServer, client_id: str, secret: str) -> tuple[dict[str, str], str]:
    token = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    device_id = f"bench-{uuid.uuid4().hex[:8]}"
    requests.post(f"{hub.url}/api/v1/devices", headers=auth, timeout=10,
                  json={"device_id": device_id, "name": "bench", "device_type": "sensor"}).raise_for_status()
    return auth, f"/api/v1/devices/{device_id}"


def _capacity(hub: HubServer, auth: dict, path: str, seconds: float) -> dict:
    """Offer far more than the server can take (32 clients) and see what it answers."""
    result = LoadGenerator(hub.url, path, rate=5_000, threads=32, max_requests=50_000, max_seconds=seconds,
                           headers=auth).start().wait()
    return result.summary()


def _sighup(env: dict, credentials: tuple[str, str], rate: float, seconds: float) -> dict:
    with HubServer(env) as hub:
        auth, path = _prepare(hub, *credentials)
        old = hub.worker_pids()
        load = LoadGenerator(hub.url, path, rate=rate, threads=16, max_requests=100_000, max_seconds=seconds,
                             headers=auth).start()
        time.sleep(seconds / 3)
        hub.signal(signal.SIGHUP)
        result = load.wait()
        replaced = not (hub.worker_pids() & old)
    return {**result.summary(), "workers_replaced": replaced}


def _sigterm_with_drain(env: dict, credentials: tuple[str, str], rate: float, seconds: float) -> dict:
    drain = Path(tempfile.mkdtemp(prefix="uaip-bench-")) / "draining"
    with HubServer({**env, "UAIP_DRAIN_FILE": str(drain)}) as hub:
        auth, path = _prepare(hub, *credentials)
        load = LoadGenerator(hub.url, path, rate=rate, threads=16, max_requests=100_000, max_seconds=seconds * 3,
                             headers=auth, gate_path=READINESS).start()
        time.sleep(seconds)
        drain.touch()  # preStop
        result = load.wait()  # stops once readiness is 503, as a load balancer would
        started = time.monotonic()
        hub.signal(signal.SIGTERM)
        code = hub.wait(timeout=60)
        exit_seconds = time.monotonic() - started
    drain.unlink(missing_ok=True)
    return {**result.summary(), "exit_code": code, "sigterm_to_exit_seconds": round(exit_seconds, 2)}


def _sigterm_exit_time(env: dict, keep_alive_open: bool) -> float:
    """SIGTERM to exit with nothing in flight; optionally with an idle kept-alive connection (a load balancer's
    pooled connection) open, which gunicorn keeps for up to 2 s in case a request is already on its way."""
    with HubServer(env) as hub:
        idle = None
        if keep_alive_open:
            idle = socket.create_connection(("127.0.0.1", hub.port))
            idle.sendall(f"GET {READINESS} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            idle.recv(65536)
        started = time.monotonic()
        hub.signal(signal.SIGTERM)
        hub.wait(timeout=60)
        seconds = time.monotonic() - started
        if idle is not None:
            idle.close()
    return round(seconds, 2)


def _health_latency(env: dict, cache: bool, requests_count: int) -> dict:
    extra = {} if cache else {"UAIP_HEALTH_CACHE_SECONDS": "0"}
    with HubServer(env, workers=1, **extra) as hub:
        session = requests.Session()
        session.get(hub.url + "/api/v1/system/health", timeout=10)  # connect NATS, open the probe connection
        latencies = []
        for _ in range(requests_count):
            started = time.perf_counter()
            session.get(hub.url + "/api/v1/system/health", timeout=10).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        session.close()
    latencies.sort()
    return {"requests": requests_count, "p50_ms": round(latencies[len(latencies) // 2], 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2)}


def run(seconds: float = 10.0, health_requests: int = 300) -> dict:
    """All lifecycle figures (about a minute with the defaults)."""
    name, url = services.create_database("uaip_bench")
    try:
        migrate(url)
        db = Database(url, maxconn=1)
        client, secret = create_client(db, "bench", "device:read device:write")
        db.close()
        credentials = (client.client_id, secret)
        env = _environment(url)
        with HubServer(env) as hub:
            auth, path = _prepare(hub, *credentials)
            capacity = _capacity(hub, auth, path, seconds=min(seconds, 5.0))
        rate = max(100.0, round(capacity["rate"] * 0.9))  # the highest load sustained without queueing up
        return {
            "server": "gunicorn gthread, 2 workers x 4 threads; GET /api/v1/devices/{id} with a bearer token",
            "capacity": capacity,
            "offered_rate": rate,
            "sighup": _sighup(env, credentials, rate, seconds),
            "sigterm_with_drain": _sigterm_with_drain(env, credentials, rate, seconds / 2),
            "sigterm_to_exit_idle_seconds": _sigterm_exit_time(env, keep_alive_open=False),
            "sigterm_to_exit_with_idle_keepalive_seconds": _sigterm_exit_time(env, keep_alive_open=True),
            "health_cached": _health_latency(env, cache=True, requests_count=health_requests),
            "health_uncached": _health_latency(env, cache=False, requests_count=health_requests),
        }
    finally:
        services.drop_database(name)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
