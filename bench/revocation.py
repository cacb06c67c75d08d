"""Token revocation figures (app/auth/revocation.py): what the per-request check costs, and how soon a revocation
is honoured by every worker of another server.

    python -m bench.revocation [--quick]     # prints JSON; part of `scripts/bench --only revocation`

1. cost, in process, against the local Redis, timed with timeit in alternating rounds: the rate limiter's script
   call that also reads the three revocation keys and judges them (what a request pays) against the same call
   without them; the cost is the median per-call difference. Goal ≤ 0.1 ms. Beside it, for code outside a request
   (an open stream's re-check): `Revocations.is_revoked` alone (one MGET) against a call answering at once.
2. cost, end to end: `GET /api/v1/bench/ping-auth` (a tiny view behind `require_scope`: token verified, then the
   revocation check) served by `bench.apps:ping_checked()` and by `ping_unchecked()` (the same app with the check
   answered without Redis and its keys not read by the limiter), under gunicorn, with hey in alternating rounds
   (bench/harness.py: alternate_pings); the cost is the difference of the median p50 latencies at one
   connection. Same goal; a difference this small is within the noise of a loaded machine, which the table says.
3. propagation: two gunicorns (2 workers each) sharing PostgreSQL and Redis. Per round a fresh client and token;
   4 threads poll server B with that token, each request on a new connection (so both of B's workers answer),
   until every thread has seen a 401; then POST /clients/{id}/revoke-tokens on server A. Figures: time from
   sending the revoke to the first 401 on B, and to the last 200 (after which B refused every request). Goal: every
   worker refuses within 1 s; median and max over rounds.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
import timeit

import requests

from app.auth.revocation import Revocations, RevocationState
from app.infra.redis_client import Cache
from app.ratelimit.rule import Rules
from app.ratelimit.storage import RedisLimitStore
from bench.apps import PING_AUTH
from bench.harness import BenchDatabase, Gunicorn, alternate_pings, hub_env, median, standalone
from bench.registry import fetch_token

COST_GOAL_MS = 0.1
PROPAGATION_GOAL_S = 1.0


def in_process(redis_url: str, rounds: int, calls: int) -> dict:
    cache = Cache(redis_url, f"uaip-bench-{secrets.token_hex(4)}")
    store = Revocations(cache, lambda: RevocationState())
    limiter = RedisLimitStore(cache, cache.key("limits"), Rules(per_minute=10**12, burst=10**9))
    issued_at = int(time.time())
    assert store.is_revoked("bench-client", "bench-token", issued_at) is False  # marks Redis as synced

    def limit_only() -> None:
        limiter.hit("client:bench")

    def limit_and_check() -> None:
        keys = store.keys_to_read("bench-client", "bench-token")
        _, _, values = limiter.hit("client:bench", keys)
        assert store.answer_from(values, "bench-token", issued_at) is False

    def without(client_id: str, token_id: str, iat: int) -> bool:
        return False

    def alone() -> None:
        store.is_revoked("bench-client", "bench-token", issued_at)

    limit_and_check()
    checked, limited, standalone_check, baseline = [], [], [], []
    for _ in range(rounds):
        checked.append(timeit.timeit(limit_and_check, number=calls) / calls * 1000)
        limited.append(timeit.timeit(limit_only, number=calls) / calls * 1000)
        standalone_check.append(timeit.timeit(alone, number=calls) / calls * 1000)
        baseline.append(timeit.timeit(lambda: without("bench-client", "bench-token", issued_at),
                                      number=calls) / calls * 1000)
    costs = [c - b for c, b in zip(checked, limited, strict=True)]
    alone_costs = [c - b for c, b in zip(standalone_check, baseline, strict=True)]
    cache.client.close()
    return {"rounds": rounds, "calls_per_round": calls, "cost_ms": median(costs), "round_costs_ms": costs,
            "limiter_ms": median(limited), "alone_cost_ms": median(alone_costs), "round_alone_costs_ms": alone_costs}


def end_to_end(db: BenchDatabase, rounds: int, requests_per_round: int) -> dict:
    from app.auth.tokens import issue_token

    env = hub_env(db.url)
    headers = {"Authorization": f"Bearer {issue_token('bench-client', ['device:read'], env['JWT_SECRET'], 3600)[0]}"}
    with Gunicorn(env, target="bench.apps:ping_unchecked()") as unchecked, \
            Gunicorn(env, target="bench.apps:ping_checked()") as checked:
        figures = alternate_pings({"unchecked": unchecked, "checked": checked}, PING_AUTH, rounds=rounds,
                                  requests_per_round=requests_per_round, concurrency=8, headers=headers)
    figures["cost_ms_c1"] = figures["checked"]["c1"] - figures["unchecked"]["c1"]
    figures["cost_ms_loaded"] = figures["checked"]["loaded"] - figures["unchecked"]["loaded"]
    return figures


def _propagation_round(a: Gunicorn, b: Gunicorn, admin: dict[str, str], client_id: str, secret: str) -> dict:
    token = fetch_token(a.url, client_id, secret)
    url = f"{b.url}/api/v1/devices/bench-1"
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
    assert requests.get(url, headers=headers, timeout=5).status_code == 200
    answers: list[tuple[float, float, int]] = []  # (sent, answered, status)
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        refused_here = False
        deadline = time.perf_counter() + 10
        while not (done.is_set() and refused_here) and time.perf_counter() < deadline:
            started = time.perf_counter()
            status = requests.get(url, headers=headers, timeout=5).status_code
            with lock:
                answers.append((started, time.perf_counter(), status))
            refused_here = refused_here or status == 401

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for poller in pollers:
        poller.start()
    time.sleep(0.2)
    sent = time.perf_counter()
    requests.post(f"{a.url}/api/v1/clients/{client_id}/revoke-tokens", headers=admin, timeout=10).raise_for_status()
    returned = time.perf_counter()
    done.set()
    for poller in pollers:
        poller.join(15)
    refused = [answered for _, answered, status in answers if status == 401]
    served = [started for started, _, status in answers if status == 200]  # a request sent then was still served
    assert refused, "no 401 within 10 s"
    assert {status for *_, status in answers} <= {200, 401}, answers
    return {"first_401_s": min(refused) - sent, "last_200_s": max(0.0, max(served, default=sent) - sent),
            "revoke_call_s": returned - sent, "requests": len(answers)}


def propagation(db: BenchDatabase, rounds: int) -> dict:
    env = hub_env(db.url)
    admin_id, admin_secret = db.create_client("admin")
    results = []
    with Gunicorn(env) as a, Gunicorn(env) as b:
        admin = {"Authorization": f"Bearer {fetch_token(a.url, admin_id, admin_secret)}"}
        for _ in range(rounds):
            client_id, secret = db.create_client("device:read")
            results.append(_propagation_round(a, b, admin, client_id, secret))
    every = [r["last_200_s"] for r in results]
    first = [r["first_401_s"] for r in results]
    return {"rounds": rounds, "first_401_median_s": statistics.median(first), "first_401_max_s": max(first),
            "every_worker_median_s": statistics.median(every), "every_worker_max_s": max(every),
            "revoke_call_median_s": statistics.median(r["revoke_call_s"] for r in results), "per_round": results}


def run(db: BenchDatabase, quick: bool = False) -> dict:
    from tests.support.services import REDIS_BASE_URL

    return {
        "in_process": in_process(REDIS_BASE_URL, rounds=3 if quick else 7, calls=2_000 if quick else 10_000),
        "end_to_end": end_to_end(db, rounds=1 if quick else 5, requests_per_round=600 if quick else 1500),
        "propagation": propagation(db, rounds=3 if quick else 10),
    }


if __name__ == "__main__":
    standalone(run, __doc__.split("\n")[0], devices=10)
