"""Command benchmark (a script, not a test): `python -m bench.commands [--quick]` (also part of `bench.run`).

Starts its own gunicorn (2 workers × 4 threads), relay and simulated devices on a fresh database of the local
PostgreSQL, NATS and Redis (the ones the test suite uses, tests/support/services.py), and measures:

1. submit rate: POST /devices/{id}/command spread over 50 devices, with wrk (a Lua script);
2. round trip at ~50 commands/s: submit → simulated device acks over NATS → relay applies → the client holds the
   `completed` message; client-side p50/p99 for two clients: one that submits with `?wait=10` (200 with the final
   message), one that submits without and polls GET /messages/{id} every 2 ms, and one that polls back to back
   (a client's polling cadence is part of its latency); and, for the first, the same from the stored timestamps
   (completed_at − created_at);
3. relay ack throughput: N acks published straight on NATS for stored `sent` commands; time until all are
   `completed` in PostgreSQL.

`run(quick=False)` returns the figures as a dict; `main()` prints a table. Goals: ≥ 500 submits/s, round trip
p50 ≤ 10 ms and p99 ≤ 50 ms with either client, ≥ 1,000 acks/s. Figures depend on the machine (and whoever else
is using it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from app.cli.simulate import fetch_token, register_devices
from app.infra.db import Database
from app.infra.messaging import Messaging
from app.infra.migrate import migrate
from app.infra.subjects import ack_subject
from app.services.clients import create_client
from bench.harness import Gunicorn, hub_env, require_tool
from tests.support import services
from tests.support.processes import Relay


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def bench_env(database_url: str) -> dict[str, str]:
    return hub_env(
        database_url, MAX_PENDING_COMMANDS_PER_DEVICE="100000",
        UAIP_RELAY_QUEUE_GROUP=f"uaip-relay-bench-{uuid.uuid4().hex[:6]}", UAIP_RELAY_SWEEP_SECONDS="1",
        # The round trip measures latency with one client and up to 8 requests in flight: every ?wait must wait,
        # so the waiter bounds are at their maximum for 4 threads (bench/hardening.py measures the defaults).
        UAIP_MAX_WAITERS="3", UAIP_MAX_WAITERS_PER_CLIENT="3",
    )


# --- 1. submit rate ------------------------------------------------------------------------------------

WRK_SCRIPT = """
local devices = {%s}
local counter = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
request = function()
  counter = counter + 1
  return wrk.format(nil, "/api/v1/devices/" .. devices[(counter %% #devices) + 1] .. "/command")
end
"""


SUBMIT_BODY = {"command": "bench", "params": {"n": 1}}


def lua_list(values: list[str]) -> str:
    return ", ".join(f'"{value}"' for value in values)


def wrk_rate(url: str, lua: str, seconds: int) -> tuple[float, int]:
    """Requests/s and the number of requests of a `wrk -t2 -c16` run with the Lua script `lua`; any non-2xx
    answer fails the run."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(lua)
    try:
        out = subprocess.run([require_tool("wrk"), "-t2", "-c16", f"-d{seconds}s", "-s", str(script), url],
                             capture_output=True, text=True, timeout=seconds + 30).stdout
    finally:
        script.unlink(missing_ok=True)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx.group(1)} failed requests:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), total


def submit_rate_wrk(
    url: str, token: str, devices: list[str], seconds: int, body: dict = SUBMIT_BODY,
) -> tuple[float, str]:
    rate, _ = wrk_rate(url, WRK_SCRIPT % (lua_list(devices), token, json.dumps(body)), seconds)
    return rate, "wrk -t2 -c16"


# --- 2. round trip -------------------------------------------------------------------------------------


POLL_PAUSE_SECONDS = 0.002  # the polling client's pause between two GET /messages/{id}


def round_trip(url: str, token: str, devices: list[str], count: int, rate: float, db: Database,
               client: str = "wait", poll_pause: float = POLL_PAUSE_SECONDS) -> dict[str, float]:
    """`count` commands at `rate` per second (open loop), each until the client holds the `completed` message:
    with `client="wait"` one POST ...?wait=10 (200 with the final message); with `client="poll"` a POST without
    wait (202), then GET /messages/{id} after every `poll_pause` until the status is final (`poll_pause=0`:
    back to back, figures prefixed `tight_poll_`). A ?wait request answered 202 (its worker's waiter bound was
    full, or 10 s passed) goes on polling, as a client should."""
    latencies: list[float] = []
    ids: list[str] = []
    fallbacks: list[int] = []
    lock = threading.Lock()
    session_local = threading.local()
    headers = {"Authorization": f"Bearer {token}"}
    query = "?wait=10" if client == "wait" else ""

    def one(i: int) -> None:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        started = time.perf_counter()
        r = session.post(f"{url}/api/v1/devices/{devices[i % len(devices)]}/command{query}",
                         json={"command": "bench", "params": {"i": i}}, headers=headers, timeout=20)
        message = r.json()
        if r.status_code == 202:
            if client == "wait":
                with lock:
                    fallbacks.append(i)
            deadline = started + 20
            while (message.get("status") not in ("completed", "failed", "expired", "cancelled")
                   and time.perf_counter() < deadline):
                if poll_pause:
                    time.sleep(poll_pause)
                r = session.get(f"{url}/api/v1/messages/{message['message_id']}", headers=headers, timeout=20)
                message = r.json()
        elapsed = (time.perf_counter() - started) * 1000
        if r.status_code != 200 or message["status"] != "completed":
            raise RuntimeError(f"round trip {i} ({client}): {r.status_code} {r.text}")
        with lock:
            latencies.append(elapsed)
            ids.append(message["message_id"])

    with ThreadPoolExecutor(8) as pool:
        started = time.monotonic()
        futures = []
        for i in range(count):  # open loop at `rate` per second
            pause = started + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            futures.append(pool.submit(one, i))
        for future in futures:
            future.result()

    def stored(cur):
        cur.execute("SELECT extract(epoch FROM completed_at - created_at) * 1000 AS ms FROM commands "
                    "WHERE message_id = ANY(%s::uuid[])", (ids,))
        return [float(row["ms"]) for row in cur.fetchall()]

    in_db = db.transaction(stored)
    prefix = "round_trip" if client == "wait" else "poll_round_trip" if poll_pause else "tight_poll_round_trip"
    figures = {f"{prefix}_p50_ms": statistics.median(latencies), f"{prefix}_p99_ms": percentile(latencies, 99),
               f"{prefix}s": count}
    if client == "wait":
        figures.update(stored_p50_ms=statistics.median(in_db), stored_p99_ms=percentile(in_db, 99),
                       wait_answered_202=len(fallbacks))
    return figures


# --- 3. relay ack throughput ---------------------------------------------------------------------------


def ack_throughput(db: Database, nats_url: str, device_id: str, count: int) -> float:
    def prepare(cur):
        cur.execute(
            "INSERT INTO commands (message_id, device_id, command, qos, priority, status, sent_at, expires_at, "
            "next_attempt_at) SELECT gen_random_uuid(), %s, 'bench-ack', 1, 5, 'sent', now(), "
            "now() + interval '1 hour', now() + interval '1 hour' FROM generate_series(1, %s) RETURNING message_id",
            (device_id, count),
        )
        return [str(row["message_id"]) for row in cur.fetchall()]

    ids = db.transaction(prepare)
    publisher = Messaging([nats_url], name="uaip-bench")
    try:
        assert publisher.wait_connected(10)
        started = time.perf_counter()
        for message_id in ids:
            publisher.publish(ack_subject(device_id), {"message_id": message_id, "status": "completed", "result": {}})
        publisher.flush()

        def remaining(cur):
            cur.execute("SELECT count(*) AS n FROM commands "
                        "WHERE message_id = ANY(%s::uuid[]) AND status <> 'completed'", (ids,))
            return cur.fetchone()["n"]

        services.wait_for(lambda: db.transaction(remaining) == 0, timeout=120, interval=0.01, message="acks applied")
        return count / (time.perf_counter() - started)
    finally:
        publisher.close()


# --- all -----------------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict[str, object]:
    name, url = services.create_database("uaip_bench")
    db = Database(url, maxconn=4)
    try:
        migrate(url)
        client, secret = create_client(db, "bench", "admin")
        env = bench_env(url)
        figures: dict[str, object] = {}
        with Gunicorn(env) as hub, Relay(env) as relay:
            token = fetch_token(hub.url, client.client_id, secret)
            # The submit-rate phase gets devices of its own, deleted afterwards (which cancels their thousands of
            # never-acknowledged commands): otherwise the relay would be re-sending them, and the simulator
            # acknowledging them, while the round trip is measured.
            flood = register_devices(hub.url, token,
                                     [f"bench-flood-{uuid.uuid4().hex[:6]}-{i}" for i in range(1, 51)])
            seconds = 5 if quick else 15
            rate, tool = submit_rate_wrk(hub.url, token, flood, seconds)
            figures.update(submit_per_s=rate, submit_tool=tool)
            for device_id in flood:
                requests.delete(f"{hub.url}/api/v1/devices/{device_id}", headers={"Authorization": f"Bearer {token}"},
                                timeout=30).raise_for_status()
            prefix = f"bench-{uuid.uuid4().hex[:6]}"
            devices = register_devices(hub.url, token, [f"{prefix}-{i}" for i in range(1, 51)])
            # The devices run in their own process (as they would in reality), not competing for this one's GIL.
            simulator = subprocess.Popen(
                [str(Path(sys.executable).with_name("uaip-hub")), "simulate", "--devices", str(len(devices)),
                 "--prefix", prefix, "--token", token, "--hub-url", hub.url, "--nats-url", services.NATS_URL,
                 "--heartbeat-seconds", "5"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "LOG_LEVEL": "warning"})
            try:
                def last_online():
                    response = requests.get(f"{hub.url}/api/v1/devices/{devices[-1]}", timeout=5,
                                            headers={"Authorization": f"Bearer {token}"})
                    return response.json()["status"] == "online"

                services.wait_for(last_online, timeout=30, message="simulated devices online")
                round_trip(hub.url, token, devices, 20, 50, db)  # warm-up: connections, waiter subscriptions
                figures.update(round_trip(hub.url, token, devices, 200 if quick else 500, 50, db))
                figures.update(round_trip(hub.url, token, devices, 200 if quick else 500, 50, db, client="poll"))
                figures.update(round_trip(hub.url, token, devices, 200 if quick else 500, 50, db, client="poll",
                                          poll_pause=0))
            finally:
                simulator.terminate()
                simulator.wait(30)
            figures["acks_per_s"] = ack_throughput(db, services.NATS_URL, devices[0], 2000 if quick else 5000)
            assert relay.running()
        return figures
    finally:
        db.close()
        services.drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(quick=args.quick)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    rows = [
        ("command submits", f"{figures['submit_per_s']:.0f}/s ({figures['submit_tool']})", "≥ 500/s"),
        ("round trip p50 (client, wait=)", f"{figures['round_trip_p50_ms']:.1f} ms", "≤ 10 ms"),
        ("round trip p99 (client, wait=)", f"{figures['round_trip_p99_ms']:.1f} ms", "≤ 50 ms"),
        ("round trip p50 (client polling every 2 ms)", f"{figures['poll_round_trip_p50_ms']:.1f} ms", "≤ 10 ms"),
        ("round trip p99 (client polling every 2 ms)", f"{figures['poll_round_trip_p99_ms']:.1f} ms", "≤ 50 ms"),
        ("round trip p50 (client polling back to back)", f"{figures['tight_poll_round_trip_p50_ms']:.1f} ms", ""),
        ("round trip p99 (client polling back to back)", f"{figures['tight_poll_round_trip_p99_ms']:.1f} ms", ""),
        ("round trip p50 (stored timestamps)", f"{figures['stored_p50_ms']:.1f} ms", ""),
        ("round trip p99 (stored timestamps)", f"{figures['stored_p99_ms']:.1f} ms", ""),
        ("relay acks applied", f"{figures['acks_per_s']:.0f}/s", "≥ 1000/s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'figure':<28}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<28}  {goal}")


if __name__ == "__main__":
    main()
