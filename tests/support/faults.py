"""The fault drill: PostgreSQL, Redis and NATS killed in turn while a real hub serves a mixed load.

A real gunicorn, a real `uaip-hub relay` and simulated devices run against private servers (so stopping them
harms nobody). Two request streams run throughout: command submits (round robin over the devices) and device
listings. Each dependency is stopped for a few seconds and started again on the same port, with no restart of
hub, relay or devices. The drill records every answer by phase, the time until the hub is healthy again, and
whether every command the hub accepted (202/200) reached `completed`: nothing acknowledged as stored is lost.

Used by tests/process/test_faults.py (which asserts) and bench/faults.py (which prints the figures).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import requests

from app.cli.simulate import DeviceSimulator, fetch_token, register_devices
from app.infra.db import Database
from app.infra.migrate import migrate
from app.services.clients import create_client
from tests.support.processes import HubServer, Relay
from tests.support.servers import NatsServer, PostgresServer, RedisServer
from tests.support.services import wait_for

ACCEPTED = (200, 202)


@dataclass
class Answer:
    at: float  # when the request was sent
    kind: str  # "submit" or "read"
    status: int | None  # None: no HTTP answer (connection error or timeout)
    code: str | None = None
    message_id: str | None = None
    done: float = float("inf")  # when its answer (or error) came


@dataclass
class MixedLoad:
    """Submits and reads at a fixed pace each, from their own threads; every answer is kept."""

    base_url: str
    token: str
    devices: list[str]
    per_second: float = 20.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in ("submit", "read")]

    def start(self) -> MixedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.answers

    def _loop(self, kind: str) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}"}
        n = 0
        started = time.monotonic()
        while not self._stop.is_set():
            n += 1
            answer = Answer(time.monotonic(), kind, None)
            try:
                if kind == "submit":
                    device = self.devices[n % len(self.devices)]
                    r = session.post(f"{self.base_url}/api/v1/devices/{device}/command", headers=headers, timeout=10,
                                     json={"command": "drill", "params": {"n": n}, "qos": 1, "ttl_ms": 600_000})
                else:
                    r = session.get(f"{self.base_url}/api/v1/devices?limit=10", headers=headers, timeout=10)
                answer.status = r.status_code
                body = r.json()
                answer.code = body.get("code")
                answer.message_id = body.get("message_id")
            except (requests.RequestException, ValueError):
                session = requests.Session()  # a broken keep-alive connection is not reused
            answer.done = time.monotonic()
            with self._lock:
                self.answers.append(answer)
            pause = started + n / self.per_second - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)


def _health(base_url: str) -> dict:
    return requests.get(f"{base_url}/api/v1/system/health", timeout=5).json()


def _dependency_up(base_url: str, name: str) -> bool:
    report = _health(base_url)
    return any(d["name"] == name and d["status"] == "healthy" for d in report["dependencies"])


def _completed(db_url: str, message_ids: list[str]) -> tuple[int, list[str]]:
    pool = Database(db_url, maxconn=1)
    try:
        def query(cur):
            cur.execute("SELECT message_id::text AS id, status FROM commands WHERE message_id = ANY(%s::uuid[])",
                        (message_ids,))
            return {row["id"]: row["status"] for row in cur.fetchall()}

        statuses = pool.transaction(query)
    finally:
        pool.close()
    missing = [m for m in message_ids if m not in statuses]
    return sum(1 for s in statuses.values() if s == "completed"), missing


def run_drill(hub_env: dict[str, str], outage_seconds: float = 3.0, per_second: float = 20.0,
              completion_timeout: float = 60.0) -> dict:
    """Run the drill; returns per-phase answers, recovery times, and the fate of every accepted command."""
    with PostgresServer() as pg, RedisServer() as redis_server, NatsServer() as nats_server:
        db_url = pg.create_database("uaip_faults")
        migrate(db_url)
        pool = Database(db_url, maxconn=1)
        client, secret = create_client(pool, "drill", "admin")
        pool.close()
        env = {
            **hub_env, "DATABASE_URL": db_url, "REDIS_URL": redis_server.url, "NATS_URL": nats_server.url,
            "UAIP_REDIS_KEY_PREFIX": f"uaip-drill-{uuid.uuid4().hex[:8]}", "UAIP_RELAY_SWEEP_SECONDS": "0.2",
            "UAIP_COMMAND_RETRY_SECONDS": "1", "UAIP_RELAY_QUEUE_GROUP": f"uaip-drill-{uuid.uuid4().hex[:8]}",
            "UAIP_HEALTH_CACHE_SECONDS": "0", "LOG_LEVEL": "warning", "UAIP_RELAY_METRICS_PORT": "0",
        }
        with HubServer(env) as hub, Relay(env) as relay:
            token = fetch_token(hub.url, client.client_id, secret)
            devices = register_devices(hub.url, token, [f"drill-{uuid.uuid4().hex[:6]}-{i}" for i in range(5)])
            with DeviceSimulator(nats_server.url, devices, heartbeat_seconds=1.0):
                wait_for(lambda: _health(hub.url)["status"] == "healthy", timeout=20, message="hub healthy")
                load = MixedLoad(hub.url, token, devices, per_second=per_second).start()
                time.sleep(2)  # a baseline phase with everything up
                phases = []
                for name, server in (("Redis", redis_server), ("NATS", nats_server), ("PostgreSQL", pg)):
                    down_at = time.monotonic()
                    server.stop()
                    time.sleep(outage_seconds)
                    server.start()
                    up_at = time.monotonic()
                    wait_for(lambda n=name: _dependency_up(hub.url, n), timeout=30,
                             message=f"{name} seen healthy again")
                    healthy_at = time.monotonic()
                    time.sleep(1.0)  # some traffic after recovery belongs to this phase too
                    phases.append({"dependency": name, "down_at": down_at, "up_at": up_at, "healthy_at": healthy_at,
                                   "end_at": time.monotonic()})
                answers = load.stop()
                accepted = [a.message_id for a in answers if a.kind == "submit" and a.status in ACCEPTED]
                deadline = time.monotonic() + completion_timeout
                while time.monotonic() < deadline:
                    completed, missing = _completed(db_url, accepted)
                    if completed == len(accepted):
                        break
                    time.sleep(0.5)
            relay_running = relay.running()
    return _summarise(answers, phases, accepted, completed, missing, relay_running)


def _tally(answers, kind: str) -> dict[str, int]:
    """How often each answer ("503 SERVICE_UNAVAILABLE", "202") came to requests of one kind."""
    return dict(Counter(str(a.status) + (f" {a.code}" if a.code else "") for a in answers if a.kind == kind))


def _summarise(answers, phases, accepted, completed, missing, relay_running) -> dict:
    report = {"phases": [], "accepted_commands": len(accepted), "completed_commands": completed,
              "missing_commands": missing, "relay_survived": relay_running,
              "all_statuses": dict(Counter(a.status for a in answers))}
    start = min(a.at for a in answers) if answers else 0.0
    # Every answer belongs to the phase during which it was *answered* (from the dependency's stop to the phase's
    # end): a slow request sent during the NATS outage and answered 503 while PostgreSQL was down is PostgreSQL's.
    # Answers outside every phase (the baseline, the gaps between phases) are "quiet": no outage explains them.
    attributed: set[int] = set()
    for phase in phases:
        window = [a for a in answers if phase["down_at"] <= a.done < phase["end_at"]]
        attributed.update(id(a) for a in window)
        failed_reads_after = [a for a in window if a.kind == "read" and a.at > phase["up_at"] and a.status != 200]
        report["phases"].append({
            "dependency": phase["dependency"],
            "outage_seconds": round(phase["up_at"] - phase["down_at"], 2),
            "recovery_seconds": round(phase["healthy_at"] - phase["up_at"], 2),
            "submits": _tally(window, "submit"),
            "reads": _tally(window, "read"),
            "failed_reads_after_restart": len(failed_reads_after),
            "starts_at_second": round(phase["down_at"] - start, 1),
        })
    quiet = [a for a in answers if id(a) not in attributed]
    report["quiet"] = {"submits": _tally(quiet, "submit"), "reads": _tally(quiet, "read")}
    return report
