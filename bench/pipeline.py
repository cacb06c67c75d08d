"""Cost and exactness of the request pipeline, measured under real gunicorn (run: `python -m bench.pipeline`).

1. Overhead: the same tiny view (`GET /api/v1/bench/ping`, a blueprint defined here) served by
   `bench.apps:ping_full()` — create_app() with everything: request id, JSON access log, Redis rate-limit check,
   metrics, security headers — and by `ping_bare()` — a plain Flask app with only that blueprint. Both run under
   gunicorn.conf.py (same workers, threads, settings); `hey` measures the latency distribution in rounds that
   alternate A/B. The overhead is the difference of the medians.
2. Redis round trips per request: MONITOR on a private Redis during a known number of requests (commands Lua
   scripts run inside Redis are reported apart: they are not round trips).
3. Exactness: two gunicorn instances x 2 workers on one Redis, 200 concurrent requests from one client; the count
   admitted must equal RATE_LIMIT_BURST.

`measure()` returns the figures as a dict (so a later single benchmark command can fold it in); `main()` prints
them as JSON. The machine may be shared: figures are what this run saw, not a guarantee.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid

from bench.apps import PING
from bench.harness import Gunicorn, alternate_pings, hey
from tests.support.redis_monitor import commands_during, round_trips

# --- measurement ---------------------------------------------------------------------------------------------


def _redis_round_trips(store_url: str, url: str, n: int, headers: dict[str, str]) -> dict:
    """Commands the app sent to Redis during `n` sequential requests, seen through MONITOR: client commands (round
    trips) apart from the commands Lua scripts ran inside Redis."""
    seen = commands_during(store_url, lambda: hey(url, requests=n, concurrency=1, headers=headers))
    inside = sum(count for name, count in seen.items() if name.startswith("lua:"))
    return {"round_trips_per_request": round_trips(seen) / n,
            "by_command": {name: count for name, count in seen.items() if not name.startswith("lua:")},
            "lua_internal_per_request": inside / n}


def measure(rounds: int = 3, requests_per_round: int = 1500, concurrency: int = 8) -> dict:
    """Overhead (A/B rounds, alternating), Redis round trips per request, and limit exactness."""
    from app.auth.tokens import issue_token
    from tests.support.servers import RedisServer
    from tests.support.services import NATS_URL, POSTGRES_ADMIN_URL

    jwt_secret = secrets.token_urlsafe(48)
    with RedisServer() as store:
        env = {
            "DATABASE_URL": POSTGRES_ADMIN_URL,  # the ping view never queries; the pool is lazy
            "NATS_URL": NATS_URL,
            "REDIS_URL": store.url,
            "JWT_SECRET": jwt_secret,
            "UAIP_REDIS_KEY_PREFIX": f"uaip-bench-{uuid.uuid4().hex[:8]}",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "RATE_LIMIT_BURST": "1000000",
        }
        headers = {"Authorization": f"Bearer {issue_token('bench-client', ['device:read'], jwt_secret, 3600)[0]}"}
        with Gunicorn(env, target="bench.apps:ping_bare()") as bare, \
                Gunicorn(env, target="bench.apps:ping_full()") as full:
            figures: dict = alternate_pings({"bare": bare, "full": full}, PING, rounds=rounds,
                                            requests_per_round=requests_per_round, concurrency=concurrency,
                                            headers=headers)
            redis_trips = _redis_round_trips(store.url, f"{full.url}{PING}", 200, headers)
        figures["overhead_median_ms_c1"] = figures["full"]["c1"] - figures["bare"]["c1"]
        figures["overhead_median_ms_loaded"] = figures["full"]["loaded"] - figures["bare"]["loaded"]
        figures["redis"] = redis_trips
        figures["exactness"] = _exactness(env, jwt_secret)
        figures.update(rounds=rounds, requests_per_round=requests_per_round, concurrency=concurrency)
    return figures


def _exactness(env: dict[str, str], jwt_secret: str, burst: int = 20) -> dict:
    """Two gunicorn instances x 2 workers on one Redis; 200 concurrent requests from one client."""
    from app.auth.tokens import issue_token

    limited = {**env, "RATE_LIMIT_PER_MINUTE": "100", "RATE_LIMIT_BURST": str(burst)}
    token = issue_token(f"bench-burst-{uuid.uuid4().hex[:6]}", ["device:read"], jwt_secret, 3600)[0]
    results = []
    with Gunicorn(limited, target="bench.apps:ping_full()", workers=2) as first, \
            Gunicorn(limited, target="bench.apps:ping_full()", workers=2) as second:
        def fire(server):
            results.append(hey(f"{server.url}{PING}", requests=100, concurrency=100,
                               headers={"Authorization": f"Bearer {token}"}))

        runners = [threading.Thread(target=fire, args=(s,)) for s in (first, second)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
    counts: dict[int, int] = {}
    for result in results:
        for code, count in result.statuses.items():
            counts[code] = counts.get(code, 0) + count
    return {"burst": burst, "sent": 200, "admitted": counts.get(200, 0), "status_counts": counts}


def main() -> None:
    print(json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
