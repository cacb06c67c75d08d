"""Device state figures (docs/state.md): report ingest through one relay, report → visible over REST, GET state vs
GET device, desired PATCH → the device's NATS message, and a day of history aggregated into minutes.

    python -m bench.state [--quick]      # prints JSON; part of `scripts/bench --only state`
    python -m bench.state --only desired # some phases only (ingest, visibility, get_ratio, desired, history)

Runs against the benchmark database (bench/run.py: 1,000 devices `bench-1..1000`), one gunicorn (2 workers × 4
threads) and ONE relay (`uaip-hub relay`, a private queue group; a fresh one after the ingest phase), all on
127.0.0.1. Reports and the desired-state
subscription go through the local NATS; the bench process publishes the reports itself (nats-py, paced open loop).

1. ingest: `{"reported": {"temperature": x}}` on `uaip.devices.{id}.state.reported`, every device 5 times a
   second (1,000 × 5 = 5,000/s offered), x different each time so every report changes the state. Applied
   reports are counted in PostgreSQL (the sum of `device_states.version`, which each applied change raises by
   one), every 100 ms while publishing and until all are applied. Figures: the steady rate (applied per second
   while publishing, from 1 s in) and the overall one (all applied / time from the first publish until the last
   one was applied, which can only fall a little below the published rate). Then the same at 7,500/s offered
   (1,000 × 7.5/s), whose steady rate is what one relay can apply when offered more than it keeps up with: the
   goal ≥ 5,000/s is judged on it.
2. visibility: with 1,000 reports/s flowing on the other devices, probe reports on `bench-1`: publish, then
   GET /devices/bench-1/state back to back until it shows the probe's value. Goal p99 ≤ 50 ms. Measured first
   without the other reports (for comparison), after a relay restart (a backlog the ingest left is dropped).
3. GET /devices/{id}/state vs GET /devices/{id} with hey (alternating rounds, same concurrency). Goal ≥ 0.9×.
4. desired: PATCH /devices/bench-2/state/desired one at a time, the bench subscribed to
   `uaip.devices.bench-2.state.desired`; time from sending the PATCH to receiving the `{version, desired, delta}`
   message with that version. Goal p99 ≤ 20 ms.
5. history: N points (1,000,000; fewer with --quick) of `bench_temperature` for `bench-3`, spread evenly over the
   last 24 h, inserted with one generate_series statement into the partitioned history table (migration 009; its
   trigger keeps the per-minute aggregates, migration 013), then
   GET …/state/history?property=bench_temperature&from=<24 h ago>&to=<now>&bucket=60&agg=avg&limit=1000 several
   times. Goal: median ≤ 100 ms.
"""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
import threading
import time

import orjson
import psycopg2
import requests

from app.infra.db import Database
from app.infra.messaging import Messaging
from app.infra.subjects import state_desired_subject, state_reported_subject
from bench.commands import bench_env, percentile
from bench.harness import BenchDatabase, Gunicorn, hey, median, standalone
from bench.registry import fetch_token
from tests.support import services
from tests.support.processes import start_relay

INGEST_GOAL = 5_000
# What the capacity run offers: 1,000 devices × 7.5 reports/s.
CAPACITY_RATE = 7_500
VISIBLE_P99_GOAL_MS = 50
GET_RATIO_GOAL = 0.9
DESIRED_P99_GOAL_MS = 20
HISTORY_GOAL_MS = 100
PROBE_TIMEOUT_S = 5.0

_values = itertools.count(1)


def _publisher() -> Messaging:
    publisher = Messaging([services.NATS_URL], name="uaip-bench-state")
    assert publisher.wait_connected(10), "NATS not reachable"
    return publisher


def _report(publisher: Messaging, device_id: str, value: float) -> None:
    publisher.publish(state_reported_subject(device_id), orjson.dumps({"reported": {"temperature": value}}),
                      wait=False)


def _applied(db: Database) -> int:
    return db.read(lambda cur: (cur.execute("SELECT coalesce(sum(version), 0)::bigint AS n FROM device_states"),
                                cur.fetchone()["n"])[1])


def _paced(devices: list[str], rate: float, seconds: float, publisher: Messaging, stop: threading.Event | None = None
           ) -> tuple[int, float]:
    """Publish reports round-robin over `devices` at `rate`/s (open loop, in 10 ms slices) for `seconds`; returns
    (published, achieved publish rate)."""
    started = time.perf_counter()
    sent = 0
    cycle = itertools.cycle(devices)
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= seconds or (stop is not None and stop.is_set()):
            break
        due = min(int(elapsed * rate) + int(rate / 100), int(seconds * rate))
        while sent < due:
            _report(publisher, next(cycle), float(next(_values)))
            sent += 1
        time.sleep(0.01)
    return sent, sent / (time.perf_counter() - started)


def ingest(db: Database, devices: list[str], seconds: float, rate: float = 5_000) -> dict:
    """Publish `rate` reports/s for `seconds`, then wait until all are applied. Two rates come out: the overall
    one (applied / time from the first publish to the last applied: never above what was published, and a little
    below it by the last batch's latency) and the steady one, the slope of applied reports while publishing
    (from 1 s in to the end of publishing; sampled every 100 ms): when `rate` is above what the relay can apply,
    the steady rate is its capacity."""
    publisher = _publisher()
    samples: list[tuple[float, int]] = []
    publishing = threading.Event()
    publishing.set()

    def sample() -> None:
        while publishing.is_set():
            samples.append((time.perf_counter(), _applied(db)))
            time.sleep(0.1)

    try:
        before = _applied(db)
        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        sent, publish_rate = _paced(devices, rate, seconds, publisher)
        publisher.flush()
        publishing.clear()
        sampler.join()
        deadline = time.perf_counter() + max(30.0, seconds * 6)
        applied, applied_at, moved_at = before, started, time.perf_counter()
        while time.perf_counter() < deadline:
            now = _applied(db)
            if now != applied:
                applied, applied_at = now, time.perf_counter()
                moved_at = applied_at
            if applied - before >= sent or time.perf_counter() - moved_at > 10:  # all applied, or no progress
                break
            time.sleep(0.05)
        count = applied - before
        if count == 0:
            raise RuntimeError("the relay applied no report (is it subscribed? see its log)")
        steady = [(at, n) for at, n in samples if at - started >= min(1.0, seconds / 2)]
        steady_rate = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]) if len(steady) > 1 else None
        return {"offered_per_s": rate, "published": sent, "published_per_s": round(publish_rate),
                "applied": count, "applied_per_s": round(count / (applied_at - started)),
                "steady_applied_per_s": round(steady_rate) if steady_rate is not None else None,
                "seconds": round(applied_at - started, 2), "devices": len(devices)}
    finally:
        publisher.close()


def visibility(hub_url: str, token: str, background: list[str], probe_device: str, probes: int,
               rate: float = 1_000) -> dict:
    """Publish → first GET …/state showing the value, with `rate` reports/s on `background` meanwhile."""
    publisher = _publisher()
    stop = threading.Event()
    load = threading.Thread(target=_paced, args=(background, rate, 600, publisher, stop), daemon=True)
    if rate:
        load.start()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{hub_url}/api/v1/devices/{probe_device}/state"
    latencies = []
    try:
        time.sleep(0.5)  # the background load is flowing
        for _ in range(probes):
            value = float(next(_values))
            started = time.perf_counter()
            _report(publisher, probe_device, value)
            while time.perf_counter() - started < PROBE_TIMEOUT_S:
                if session.get(url, headers=headers, timeout=5).json()["reported"].get("temperature") == value:
                    latencies.append((time.perf_counter() - started) * 1000)
                    break
            else:  # the relay fell behind the background load (or NATS dropped the report): counted, not fatal
                latencies.append(float("inf"))
                if latencies.count(float("inf")) >= 3:
                    break
            time.sleep(0.02)
    finally:
        stop.set()
        if rate:
            load.join(10)
        publisher.close()
        session.close()
    return {"probes": len(latencies), "not_visible": latencies.count(float("inf")), "background_per_s": rate,
            "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies)}


def get_ratio(hub_url: str, token: str, device_id: str, rounds: int, seconds: int, concurrency: int = 16) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    paths = {"state": f"/api/v1/devices/{device_id}/state", "device": f"/api/v1/devices/{device_id}"}
    for path in paths.values():
        hey(hub_url + path, requests=300, concurrency=concurrency, headers=headers)
    samples: dict[str, list[float]] = {side: [] for side in paths}
    for _ in range(rounds):
        for side, path in paths.items():
            result = hey(hub_url + path, duration=f"{seconds}s", concurrency=concurrency, headers=headers)
            assert set(result.statuses) == {200}, (side, result.statuses)
            samples[side].append(result.requests_per_second)
    ratios = [s / d for s, d in zip(samples["state"], samples["device"], strict=True)]
    return {"state_rps": median(samples["state"]), "device_rps": median(samples["device"]),
            "ratio": median(ratios), "round_ratios": ratios, "rounds": rounds, "seconds": seconds,
            "concurrency": concurrency}


def desired(hub_url: str, token: str, device_id: str, count: int) -> dict:
    """PATCH desired → the NATS message carrying the new version, one PATCH at a time."""
    received: dict[int, float] = {}
    arrived = threading.Condition()

    def on_message(_subject: str, data: bytes) -> None:
        message = orjson.loads(data)
        with arrived:
            received[message["version"]] = time.perf_counter()
            arrived.notify_all()

    device = Messaging([services.NATS_URL], name="uaip-bench-device")
    device.subscribe(state_desired_subject(device_id), on_message)
    assert device.wait_connected(10)
    device.flush()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{hub_url}/api/v1/devices/{device_id}/state/desired"
    latencies, responses = [], []
    try:
        for i in range(count + 5):  # five warm-ups
            started = time.perf_counter()
            r = session.patch(url, json={"target": i}, headers=headers, timeout=10)
            answered = time.perf_counter()
            r.raise_for_status()
            version = r.json()["version"]
            with arrived:
                if not arrived.wait_for(lambda v=version: v in received, timeout=5):
                    raise RuntimeError(f"desired version {version} never reached the device")
                if i >= 5:
                    latencies.append((received[version] - started) * 1000)
                    responses.append((answered - started) * 1000)
    finally:
        session.close()
        device.close()
    # The HTTP response's own latency, for comparison: the message may arrive before or after it.
    return {"patches": count, "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies), "response_p50_ms": statistics.median(responses),
            "response_p99_ms": percentile(responses, 99)}


def bulk_history(url: str, device_id: str, points: int) -> float:
    """Insert the points with one INSERT on an own connection (no statement timeout); the history's trigger folds
    them into their minutes as it does for every insert (so the foreign-key check is not skipped either: a replica
    session would skip the trigger too). Returns the seconds."""
    started = time.perf_counter()
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO device_state_history (device_id, property, at, value) "
                "SELECT %(device)s, 'bench_temperature', "
                "now() - interval '24 hours' + (i * (86400.0 / %(n)s)) * interval '1 second', "
                "to_jsonb(round((20 + 5 * sin(i / 500.0))::numeric, 2)) "
                "FROM generate_series(0, %(n)s - 1) AS i ORDER BY i", {"device": device_id, "n": points})
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE device_state_history")
            cur.execute("ANALYZE device_state_minutes")
    finally:
        conn.close()
    return time.perf_counter() - started


def history(url: str, hub_url: str, token: str, device_id: str, points: int, requests_count: int) -> dict:
    """Insert the points (bulk_history), then query."""
    insert_seconds = bulk_history(url, device_id, points)
    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(hours=24)
    params = {"property": "bench_temperature", "bucket": 60, "agg": "avg", "limit": 1000,
              "from": start.isoformat(timespec="seconds").replace("+00:00", "Z"),
              "to": end.isoformat(timespec="seconds").replace("+00:00", "Z")}
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{hub_url}/api/v1/devices/{device_id}/state/history"
    latencies = []
    buckets = 0
    for _ in range(requests_count + 1):  # the first warms the worker's connection and PostgreSQL's cache
        started = time.perf_counter()
        r = session.get(url, params=params, headers=headers, timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
        buckets = len(r.json()["points"])
    session.close()
    return {"points": points, "insert_seconds": round(insert_seconds, 1), "requests": requests_count,
            "buckets_returned": buckets, "median_ms": statistics.median(latencies[1:]),
            "max_ms": max(latencies[1:]), "first_ms": latencies[0]}


def _warm_up(db: Database, devices: list[str], timeout: float = 90) -> int:
    """One report per device (its state row made, the device online); waits until the relay applied them, or made
    no progress for 15 s, or `timeout`. Returns how many devices have a state row."""
    publisher = _publisher()
    try:
        _paced(devices, 2_000, len(devices) / 2_000, publisher)
        publisher.flush()
    finally:
        publisher.close()
    deadline = time.monotonic() + timeout
    rows, moved_at = -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - moved_at < 15:
        now = db.read(lambda cur: (cur.execute("SELECT count(*) AS n FROM device_states"), cur.fetchone()["n"])[1])
        if now != rows:
            rows, moved_at = now, time.monotonic()
        if rows >= len(devices):
            break
        time.sleep(0.2)
    return rows


def _relay(env: dict[str, str]):
    # LOG_LEVEL=info: start_relay waits for the relay's "relay started" line (it has subscribed by then).
    return start_relay({**env, "LOG_LEVEL": "info"})


def _stop(relay) -> None:
    relay.stop()
    relay.log_path.unlink(missing_ok=True)


PHASES = ("ingest", "visibility", "get_ratio", "desired", "history")


def run(db: BenchDatabase, quick: bool = False, phases: tuple[str, ...] = PHASES) -> dict:
    """The phases in their fixed order; the warm-up (every device's state row made, every device online) always
    runs, so a phase measured alone meets the same database as in the full run."""
    devices = [f"bench-{i}" for i in range(1, 1001)]
    env = bench_env(db.url)
    client_id, secret = db.create_client()
    database = Database(db.url, maxconn=2)
    figures: dict = {}
    try:
        relay = _relay(env)
        try:
            warmed = _warm_up(database, devices)
            if "ingest" in phases:
                figures["ingest"] = ingest(database, devices, seconds=1 if quick else 5)
                figures["ingest"]["warmed_devices"] = warmed
                # Above the goal's rate, so that the steady rate shows what one relay can apply.
                figures["ingest_capacity"] = ingest(database, devices, seconds=2 if quick else 5,
                                                    rate=CAPACITY_RATE)
            assert relay.running(), relay.output()[-2000:]
        finally:
            # A fresh relay for the rest: a backlog the ingest left (a relay slower than 5,000/s) is dropped with
            # this one's subscription instead of delaying the latency figures.
            _stop(relay)
        if not set(phases) - {"ingest"}:
            return figures
        relay = _relay(env)
        try:
            with Gunicorn(env) as hub:
                token = fetch_token(hub.url, client_id, secret)
                if "visibility" in phases:
                    # First without other reports (what one report costs end to end), then with the goal's 1,000/s.
                    figures["visibility_idle"] = visibility(hub.url, token, devices[10:], devices[0],
                                                            20 if quick else 100, rate=0)
                    figures["visibility"] = visibility(hub.url, token, devices[10:], devices[0], 50 if quick else 300)
                if "get_ratio" in phases:
                    figures["get_ratio"] = get_ratio(hub.url, token, devices[0], rounds=1 if quick else 3,
                                                     seconds=2 if quick else 5)
                if "desired" in phases:
                    figures["desired"] = desired(hub.url, token, devices[1], 50 if quick else 300)
                if "history" in phases:
                    figures["history"] = history(db.url, hub.url, token, devices[2],
                                                 200_000 if quick else 1_000_000, 3 if quick else 9)
                assert relay.running(), relay.output()[-2000:]
        finally:
            _stop(relay)
        return figures
    finally:
        database.close()


if __name__ == "__main__":
    standalone(run, __doc__.split("\n")[0], devices=1000, phases=PHASES)
