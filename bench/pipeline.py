"""Cost and exactness of the request pipeline, measured under real gunicorn (run: `python -m bench.pipeline`).

1. Overhead: the same tiny view (`GET /api/v1/bench/ping`, a blueprint defined here) served by
   `full_app()` — create_app() with everything: request id, JSON access log, Redis rate-limit check, metrics,
   security headers — and by `bare_app()` — a plain Flask app with only that blueprint. Both run under
   gunicorn.conf.py (same workers, threads, settings); `hey` measures the latency distribution. The overhead is the
   difference of the medians.
2. Redis round trips per request: MONITOR on a private Redis during a known number of requests (commands Lua
   scripts run inside Redis are reported apart: they are not round trips).
3. Exactness: two gunicorn instances x 2 workers on one Redis, 200 concurrent requests from one client; the count
   admitted must equal RATE_LIMIT_BURST.

`measure()` returns the figures as a dict (so a later single benchmark command can fold it in); `main()` prints
them as JSON. The machine may be shared: figures are what this run saw, not a guarantee.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import redis
from flask import Blueprint, Flask, jsonify

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

blueprint = Blueprint("bench", __name__)


@blueprint.get("/bench/ping")
def ping():
    return jsonify({"ok": True})


def full_app() -> Flask:
    """The hub's app factory (every pipeline stage on) plus the benchmark view."""
    from app import create_app
    from app.api import API_PREFIX

    app = create_app()
    app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    return app


def bare_app() -> Flask:
    """The same view with no pipeline at all."""
    from app.api import API_PREFIX

    app = Flask(__name__)
    app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    return app


# --- measurement ---------------------------------------------------------------------------------------------


def _hey(url: str, n: int, concurrency: int, headers: dict[str, str]) -> str:
    args = ["hey", "-n", str(n), "-c", str(concurrency)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    return subprocess.run(args + [url], capture_output=True, text=True, check=True, timeout=600).stdout


def _latency(output: str, percentile: int) -> float:
    match = re.search(rf"^\s*{percentile}% in ([0-9.]+) secs", output, re.MULTILINE)
    return float(match.group(1)) * 1000 if match else float("nan")


def _rps(output: str) -> float:
    match = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    return float(match.group(1)) if match else float("nan")


def _status_counts(output: str) -> dict[int, int]:
    return {int(code): int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}


def _redis_round_trips(store_url: str, url: str, n: int, headers: dict[str, str]) -> dict:
    """Commands the app sent to Redis during `n` sequential requests, seen through MONITOR: client commands (round
    trips) apart from the commands Lua scripts ran inside Redis."""
    marker = f"bench-stop-{uuid.uuid4().hex}"
    seen: dict[str, int] = {}
    client = redis.Redis.from_url(store_url)

    def load():
        _hey(url, n, 1, headers)
        redis.Redis.from_url(store_url).echo(marker)

    with client.monitor() as monitor:
        runner = threading.Thread(target=load)
        runner.start()
        for command in monitor.listen():
            if marker in command["command"]:
                break
            kind = "inside_lua" if command.get("client_type") == "lua" else command["command"].split()[0].upper()
            seen[kind] = seen.get(kind, 0) + 1
        runner.join()
    inside = seen.pop("inside_lua", 0)
    return {"round_trips_per_request": sum(seen.values()) / n, "by_command": seen, "lua_internal_per_request": inside / n}


def _server(env: dict[str, str], target: str, workers: int, threads: int):
    from tests.support.processes import HubServer

    server = HubServer(env, workers=workers, threads=threads)
    server.args[-1] = target
    return server


def measure(requests_per_run: int = 3000, concurrency: int = 8, workers: int = 2, threads: int = 4) -> dict:
    from app.security import issue_token
    from tests.support.servers import RedisServer
    from tests.support.services import NATS_URL, POSTGRES_ADMIN_URL

    if shutil.which("hey") is None:
        raise SystemExit("hey not found: apt-get install -y hey")
    jwt_secret = secrets.token_urlsafe(48)
    figures: dict = {"requests_per_run": requests_per_run, "concurrency": concurrency,
                     "workers": workers, "threads": threads}
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
        token = issue_token("bench-client", ["device:read"], jwt_secret, 3600)[0]
        headers = {"Authorization": f"Bearer {token}"}

        # 1. overhead, one server at a time (2 shared cores: never both at once)
        for name, target in (("bare", "bench.pipeline:bare_app()"), ("full", "bench.pipeline:full_app()")):
            with _server(env, target, workers, threads) as server:
                url = f"{server.url}/api/v1/bench/ping"
                _hey(url, 500, concurrency, headers)  # warm-up: imports, connections, Lua script load
                serial = _hey(url, requests_per_run // 3, 1, headers)
                loaded = _hey(url, requests_per_run, concurrency, headers)
                figures[name] = {
                    "median_ms_c1": _latency(serial, 50),
                    "p90_ms_c1": _latency(serial, 90),
                    "median_ms": _latency(loaded, 50),
                    "p90_ms": _latency(loaded, 90),
                    "p99_ms": _latency(loaded, 99),
                    "requests_per_second": _rps(loaded),
                }
                if name == "full":
                    figures["redis"] = _redis_round_trips(store.url, url, 200, headers)
        figures["overhead_median_ms_c1"] = round(figures["full"]["median_ms_c1"] - figures["bare"]["median_ms_c1"], 3)
        figures["overhead_median_ms"] = round(figures["full"]["median_ms"] - figures["bare"]["median_ms"], 3)

        # 3. exactness across 2 instances x 2 workers on one Redis
        burst = 20
        limited = {**env, "RATE_LIMIT_PER_MINUTE": "100", "RATE_LIMIT_BURST": str(burst)}
        token = issue_token(f"bench-burst-{uuid.uuid4().hex[:6]}", ["device:read"], jwt_secret, 3600)[0]
        with _server(limited, "bench.pipeline:full_app()", 2, 4) as first, \
                _server(limited, "bench.pipeline:full_app()", 2, 4) as second:
            outputs: list[str] = []

            def fire(server):
                outputs.append(_hey(f"{server.url}/api/v1/bench/ping", 100, 100, {"Authorization": f"Bearer {token}"}))

            runners = [threading.Thread(target=fire, args=(s,)) for s in (first, second)]
            for runner in runners:
                runner.start()
            for runner in runners:
                runner.join()
        counts: dict[int, int] = {}
        for output in outputs:
            for code, count in _status_counts(output).items():
                counts[code] = counts.get(code, 0) + count
        figures["exactness"] = {"burst": burst, "sent": 200, "admitted": counts.get(200, 0), "status_counts": counts,
                                "slowest_s": max((_latency(o, 99) / 1000 for o in outputs), default=None)}
    return figures


def main() -> None:
    print(json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
