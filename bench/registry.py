"""Foundation figures: device list vs a bare Flask app, token issuance rate, worker memory."""

from __future__ import annotations

import hashlib
import os
import time

import requests

from app.security import SCRYPT_MAXMEM, SCRYPT_N, SCRYPT_P, SCRYPT_R
from bench.harness import BenchDatabase, Gunicorn, hey, hub_env, median

LIST_PATH = "/api/v1/devices?limit=50"


def fetch_token(base_url: str, client_id: str, secret: str) -> str:
    r = requests.post(f"{base_url}/api/v1/auth/token",
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    r.raise_for_status()
    return r.json()["access_token"]


def list_vs_bare(db: BenchDatabase, rounds: int = 3, seconds: int = 5, concurrency: int = 16) -> dict:
    """Scenario 1: GET /devices?limit=50 on 1,000 devices, hub (full pipeline, authenticated) vs bare app.

    Rounds alternate A/B so that drift in machine load hits both sides alike; medians are compared.
    """
    env = hub_env(db.url)
    client_id, secret = db.create_client()
    hub_rps, bare_rps, hub_p50, bare_p50 = [], [], [], []
    with Gunicorn(env) as hub, Gunicorn(env, target="bench.apps:bare_device_list()") as bare:
        headers = {"Authorization": f"Bearer {fetch_token(hub.url, client_id, secret)}"}
        for target in (hub, bare):  # warm up both (pools, JIT-free but caches and imports)
            hey(target.url + LIST_PATH, requests=300, concurrency=concurrency, headers=headers)
        for _ in range(rounds):
            a = hey(hub.url + LIST_PATH, duration=f"{seconds}s", concurrency=concurrency, headers=headers)
            b = hey(bare.url + LIST_PATH, duration=f"{seconds}s", concurrency=concurrency)
            assert set(a.statuses) == {200} and set(b.statuses) == {200}, (a.statuses, b.statuses)
            hub_rps.append(a.requests_per_second)
            bare_rps.append(b.requests_per_second)
            hub_p50.append(a.p50_ms)
            bare_p50.append(b.p50_ms)
    return {
        "hub_rps": median(hub_rps), "bare_rps": median(bare_rps),
        "ratio": median(hub_rps) / median(bare_rps),
        "hub_p50_ms": median(hub_p50), "bare_p50_ms": median(bare_p50),
        "rounds": rounds, "seconds": seconds, "concurrency": concurrency,
    }


def worker_classes(db: BenchDatabase, seconds: int = 5, concurrency: int = 16) -> dict:
    """The device list under gthread 2x4 (the default), sync with 2 and 4 workers, and gthread 4x2."""
    env = hub_env(db.url)
    client_id, secret = db.create_client()
    layouts = {"gthread 2x4": ("gthread", 2, 4), "gthread 4x2": ("gthread", 4, 2),
               "sync 2": ("sync", 2, 1), "sync 4": ("sync", 4, 1)}
    figures = {}
    for label, (worker_class, workers, threads) in layouts.items():
        with Gunicorn(env, workers=workers, threads=threads, worker_class=worker_class) as hub:
            headers = {"Authorization": f"Bearer {fetch_token(hub.url, client_id, secret)}"}
            hey(hub.url + LIST_PATH, requests=300, concurrency=concurrency, headers=headers)
            result = hey(hub.url + LIST_PATH, duration=f"{seconds}s", concurrency=concurrency, headers=headers)
            figures[label] = {"rps": result.requests_per_second, "p50_ms": result.p50_ms,
                              "p99_ms": result.latencies_ms.get("99%"), "statuses": result.statuses}
    return figures


def default_limits(db: BenchDatabase) -> dict:
    """Scenario 4: `hey -n 1000 -c 10` on /devices from one client with the default limits (100/min, burst 20)."""
    env = {k: v for k, v in hub_env(db.url).items() if not k.startswith("RATE_LIMIT_")}
    client_id, secret = db.create_client()
    with Gunicorn(env) as hub:
        headers = {"Authorization": f"Bearer {fetch_token(hub.url, client_id, secret)}"}
        result = hey(hub.url + "/api/v1/devices", requests=1000, concurrency=10, headers=headers)
        after = requests.get(hub.url + "/api/v1/devices", headers=headers)
    return {"statuses": result.statuses, "errors": result.errors, "next_status": after.status_code,
            "retry_after": after.headers.get("Retry-After"), "limit_header": after.headers.get("X-RateLimit-Limit")}


def token_issuance(db: BenchDatabase, requests_count: int = 3000, concurrency: int = 8) -> dict:
    """Token endpoint throughput for a returning client (verified-secret cache warm), plus the cold cost."""
    env = hub_env(db.url)
    client_id, secret = db.create_client("device:read")
    body = f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
    with Gunicorn(env) as hub:
        url = f"{hub.url}/api/v1/auth/token"
        hey(url, requests=200, concurrency=concurrency, method="POST", body=body,
            content_type="application/x-www-form-urlencoded")
        result = hey(url, requests=requests_count, concurrency=concurrency, method="POST", body=body,
                     content_type="application/x-www-form-urlencoded")
    started = time.perf_counter()
    for _ in range(10):
        hashlib.scrypt(b"x" * 43, salt=os.urandom(16), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32)
    scrypt_ms = (time.perf_counter() - started) / 10 * 1000
    return {"tokens_per_second": result.requests_per_second, "p50_ms": result.p50_ms,
            "statuses": result.statuses, "scrypt_ms": scrypt_ms}


def worker_memory(db: BenchDatabase, total_requests: int = 10_000, concurrency: int = 16) -> dict:
    """RSS of each worker at start (after one warm-up request each) and after `total_requests` list calls."""
    env = hub_env(db.url)
    client_id, secret = db.create_client()
    with Gunicorn(env) as hub:
        headers = {"Authorization": f"Bearer {fetch_token(hub.url, client_id, secret)}"}
        hey(hub.url + LIST_PATH, requests=100, concurrency=4, headers=headers)
        start = hub.worker_rss_mb()
        result = hey(hub.url + LIST_PATH, requests=total_requests, concurrency=concurrency, headers=headers)
        end = hub.worker_rss_mb()
    growth = max((e - s) / s * 100 for s, e in zip(start, end))
    return {"requests": total_requests, "rss_start_mb": start, "rss_end_mb": end, "max_growth_pct": growth,
            "statuses": result.statuses}


if __name__ == "__main__":
    database = BenchDatabase.create()
    try:
        database.seed_devices(1000)
        print(list_vs_bare(database, rounds=1, seconds=3))
        print(token_issuance(database, requests_count=1000))
        print(worker_memory(database, total_requests=2000))
    finally:
        database.drop()
