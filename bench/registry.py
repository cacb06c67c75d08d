"""Foundation figures: device list vs a bare Flask app, token issuance rate, worker memory."""

from __future__ import annotations

import hashlib
import os
import time

import requests

from app.auth.secrets import SCRYPT_MAXMEM, SCRYPT_N, SCRYPT_P, SCRYPT_R
from bench.harness import BenchDatabase, Gunicorn, hey, hub_env, median

LIST_PATH = "/api/v1/devices?limit=50"


def fetch_token(base_url: str, client_id: str, secret: str) -> str:
    r = requests.post(f"{base_url}/api/v1/auth/token",
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    r.raise_for_status()
    return r.json()["access_token"]


def list_vs_bare(db: BenchDatabase, rounds: int = 3, seconds: int = 5, concurrency: int = 16) -> dict:
    """Scenario 1: GET /devices?limit=50 on 1,000 devices: the hub (full pipeline, authenticated) vs two bare apps
    (bench/apps.py: the same document, byte for byte): the naive one (the simplest Flask + psycopg2 code) and the
    tuned one (the hub's single statement, tuple rows, text timestamps, orjson); same gunicorn settings.

    The hub runs at the default LOG_LEVEL=info, writing its access line for every request (the bare app writes
    none), and once more at LOG_LEVEL=warning to show what the line costs. Rounds alternate between the three so
    that drift in machine load hits all alike; medians are compared.
    """
    env = hub_env(db.url, LOG_LEVEL="info")
    client_id, secret = db.create_client()
    samples: dict[str, dict[str, list[float]]] = {side: {"rps": [], "p50": []}
                                                      for side in ("hub", "quiet", "bare", "tuned")}
    with Gunicorn(env) as hub, Gunicorn({**env, "LOG_LEVEL": "warning"}) as quiet, \
            Gunicorn(env, target="bench.apps:bare_device_list()") as bare, \
            Gunicorn(env, target="bench.apps:tuned_device_list()") as tuned:
        headers = {"Authorization": f"Bearer {fetch_token(hub.url, client_id, secret)}"}
        servers = {"hub": hub, "quiet": quiet, "bare": bare, "tuned": tuned}
        for target in servers.values():  # warm up (pools, caches, imports)
            hey(target.url + LIST_PATH, requests=300, concurrency=concurrency, headers=headers)
        for _ in range(rounds):
            for side, server in servers.items():
                result = hey(server.url + LIST_PATH, duration=f"{seconds}s", concurrency=concurrency, headers=headers)
                assert set(result.statuses) == {200}, (side, result.statuses)
                samples[side]["rps"].append(result.requests_per_second)
                samples[side]["p50"].append(result.p50_ms)
    rps = {side: median(series["rps"]) for side, series in samples.items()}
    return {
        "hub_rps": rps["hub"], "hub_quiet_rps": rps["quiet"], "bare_rps": rps["bare"], "tuned_rps": rps["tuned"],
        "ratio": rps["hub"] / rps["bare"], "quiet_ratio": rps["quiet"] / rps["bare"],
        "tuned_ratio": rps["hub"] / rps["tuned"],
        # the ratio of each alternating round (hub and baseline measured back to back), median and range
        "round_ratios_tuned": [h / b for h, b in zip(samples["hub"]["rps"], samples["tuned"]["rps"], strict=True)],
        "round_ratios_naive": [h / b for h, b in zip(samples["hub"]["rps"], samples["bare"]["rps"], strict=True)],
        "hub_p50_ms": median(samples["hub"]["p50"]), "bare_p50_ms": median(samples["bare"]["p50"]),
        "rounds_rps": {side: series["rps"] for side, series in samples.items()},
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
        hashlib.scrypt(b"x" * 43, salt=os.urandom(16), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM,
                       dklen=32)
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
    growth = max((e - s) / s * 100 for s, e in zip(start, end, strict=False))
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
