"""Figures for the hub under hostile load and partial failure (`python -m bench.hardening`; part of `bench.run`).

1. probes while the waiter bound is full: gunicorn 2 workers x 4 threads, four clients each sending 6 parallel
   `?wait=10` commands to a device that never answers (24 requests for 4 waiter slots), liveness and readiness
   probed back to back on fresh connections meanwhile; worst and p99 latency, and how fast the requests over
   the bound got their 202;
2. register and submit latency with NATS down (the hub's NATS_URL points at a port nobody listens on);
3. relay throughput with NATS down: thousands of commands past their TTL and devices past the heartbeat timeout,
   each expiry and `offline` transition an event the relay cannot publish; events applied per second
   (`UAIP_RELAY_SWEEP_SECONDS=0.05`, so the figure is the relay's work, not its sweep interval).

Goals: probes well under 1 s (Kubernetes' default probe timeout); nothing waits for NATS (before: 2.5 s per
publish, so ~0.4 events/s in the relay).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid

import psycopg2
import requests

from app.infra.db import Database
from app.infra.migrate import migrate
from app.services.clients import create_client
from bench.harness import Gunicorn, hub_env
from tests.support import services
from tests.support.processes import Relay
from tests.support.waiting import PROBES, Flood, Prober

WAIT = 10


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _token(url: str, client_id: str, secret: str) -> dict[str, str]:
    r = requests.post(f"{url}/api/v1/auth/token", timeout=10,
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _register(url: str, auth: dict[str, str]) -> str:
    device_id = f"bench-{uuid.uuid4().hex[:10]}"
    requests.post(f"{url}/api/v1/devices", headers=auth, timeout=10,
                  json={"device_id": device_id, "name": "bench", "device_type": "sensor"}).raise_for_status()
    return device_id


def probes_while_waiters_are_full(database_url: str, clients: list[tuple[str, str]]) -> dict:
    with Gunicorn(hub_env(database_url, UAIP_HEALTH_CACHE_SECONDS="0")) as hub:
        auths = [_token(hub.url, *client) for client in clients]
        silent = _register(hub.url, auths[0])
        with Prober(hub.url) as prober:
            results = Flood(hub.url, auths, 6, silent, WAIT).wait()
    over_bound = [seconds for _, _, seconds, _ in results if seconds < WAIT - 1]
    figures = {"requests": len(results), "waited": len(results) - len(over_bound),
               "statuses": sorted({status for _, status, _, _ in results}),
               "over_bound_p50_ms": round(statistics.median(over_bound) * 1000, 1) if over_bound else None,
               "over_bound_max_ms": round(max(over_bound) * 1000, 1) if over_bound else None,
               "probe_statuses": sorted({str(status) for _, _, status in prober.latencies})}
    for path in PROBES:
        name = path.rsplit("/", 1)[1]
        latencies = [seconds * 1000 for p, seconds, _ in prober.latencies if p == path]
        figures[name] = {"probes": len(latencies), "p50_ms": round(statistics.median(latencies), 1),
                         "p99_ms": round(_percentile(latencies, 99), 1), "max_ms": round(max(latencies), 1)}
    return figures


def api_with_nats_down(database_url: str, client: tuple[str, str], count: int) -> dict:
    with Gunicorn(hub_env(database_url, NATS_URL=f"nats://127.0.0.1:{services.free_port()}")) as hub:
        auth = _token(hub.url, *client)
        session = requests.Session()
        register, submit, statuses = [], [], set()
        for i in range(count):
            started = time.perf_counter()
            r = session.post(f"{hub.url}/api/v1/devices", headers=auth, timeout=30,
                             json={"device_id": f"bench-down-{uuid.uuid4().hex[:10]}", "name": "b", "device_type": "s"})
            register.append((time.perf_counter() - started) * 1000)
            device_id = r.json()["device_id"]
            started = time.perf_counter()
            r = session.post(f"{hub.url}/api/v1/devices/{device_id}/command", headers=auth, timeout=30,
                             json={"command": "bench", "params": {"i": i}})
            submit.append((time.perf_counter() - started) * 1000)
            statuses.add(f"{r.status_code} {r.json()['status']}")
    return {"requests": count, "submit_answers": sorted(statuses),
            "register_p50_ms": round(statistics.median(register), 1), "register_max_ms": round(max(register), 1),
            "submit_p50_ms": round(statistics.median(submit), 1), "submit_max_ms": round(max(submit), 1)}


def relay_with_nats_down(database_url: str, commands: int, devices: int) -> dict:
    """Seed `commands` commands past their TTL and `devices` devices past the heartbeat timeout, start a relay whose
    NATS is unreachable, and time until every one is expired / offline."""
    tag = uuid.uuid4().hex[:8]
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO devices (device_id, name, device_type, status, last_seen, secret_hash) "
                    "SELECT %s || i, 'stale', 'sensor', 'online', now() - interval '1 hour', 'x' "
                    "FROM generate_series(1, %s) AS i", (f"bench-stale-{tag}-", devices))
        cur.execute("INSERT INTO commands (message_id, device_id, command, qos, priority, status, expires_at) "
                    "SELECT gen_random_uuid(), %s, 'bench', 1, 5, 'sent', now() - interval '1 second' "
                    "FROM generate_series(1, %s)", (f"bench-stale-{tag}-1", commands))

    def remaining() -> tuple[int, int]:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM commands WHERE device_id = %s AND status = 'sent'",
                        (f"bench-stale-{tag}-1",))
            open_commands = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM devices WHERE device_id LIKE %s AND status = 'online'",
                        (f"bench-stale-{tag}-%",))
            return open_commands, cur.fetchone()[0]

    env = hub_env(database_url, NATS_URL=f"nats://127.0.0.1:{services.free_port()}", UAIP_RELAY_SWEEP_SECONDS="0.05",
                  UAIP_RELAY_QUEUE_GROUP=f"bench-{tag}", LOG_LEVEL="info")  # the production default
    relay = Relay(env)
    try:
        relay.start()
        services.wait_for(lambda: "relay started" in relay.output(), timeout=30, message="relay started")
        started = time.perf_counter()
        services.wait_for(lambda: remaining() == (0, 0), timeout=600, interval=0.02, message="every event applied")
        seconds = time.perf_counter() - started
    finally:
        relay.stop()
        conn.close()
    return {"expired_commands": commands, "offline_devices": devices, "seconds": round(seconds, 2),
            "events_per_s": round((commands + devices) / seconds)}


def run(quick: bool = False) -> dict:
    name, url = services.create_database("uaip_bench")
    try:
        migrate(url)
        db = Database(url, maxconn=1)
        clients = [create_client(db, f"bench-{i}", "admin") for i in range(4)]
        db.close()
        credentials = [(client.client_id, secret) for client, secret in clients]
        return {
            "probes_with_waiters_full": probes_while_waiters_are_full(url, credentials),
            "api_with_nats_down": api_with_nats_down(url, credentials[0], 50 if quick else 200),
            "relay_with_nats_down": relay_with_nats_down(url, 2_000 if quick else 10_000, 1_000 if quick else 5_000),
        }
    finally:
        services.drop_database(name)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
