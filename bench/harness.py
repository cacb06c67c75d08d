"""Shared benchmark plumbing: a seeded database, gunicorn instances on free ports, `hey` runs, RSS readings.

Benchmarks use the local services (PostgreSQL/Redis/NATS on their standard ports, as scripts/lib.sh starts
them) and their own database, which is dropped afterwards.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.extras

from app.auth.secrets import hash_secret
from app.infra.migrate import migrate
from tests.support import services
from tests.support.processes import HubServer

ROOT = Path(__file__).resolve().parents[1]
# The servers under test run from a venv with the runtime dependencies only (`pip install -e .`, as in the
# image): test-only packages change what the hub imports (nats-py loads aiohttp and PyJWT loads cryptography
# when present), which would inflate memory figures by ~17 MB per worker.
BENCH_VENV = Path(os.environ.get("UAIP_BENCH_VENV", ROOT / ".venv-bench"))


def ensure_runtime_venv() -> Path:
    stamp = BENCH_VENV / ".uaip-installed"
    inputs = hashlib.sha256((ROOT / "setup.cfg").read_bytes()).hexdigest()[:16]
    if not stamp.exists() or stamp.read_text() != inputs:
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin/pip"), "install", "-q", "-e", str(ROOT)], check=True)
        stamp.write_text(inputs)
    return BENCH_VENV / "bin"


@dataclass
class BenchDatabase:
    name: str
    url: str

    @classmethod
    def create(cls) -> BenchDatabase:
        name, url = services.create_database("uaip_bench")
        migrate(url)
        return cls(name, url)

    def drop(self) -> None:
        services.drop_database(self.name)

    def seed_devices(self, count: int, prefix: str = "bench-") -> list[str]:
        """Insert `count` devices `<prefix>1..N` in one statement (one shared secret hash: seeding is not what we
        measure); returns their ids."""
        secret_hash = hash_secret(secrets.token_urlsafe(16))
        conn = psycopg2.connect(self.url)
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO devices (device_id, name, device_type, capabilities, metadata, secret_hash) "
                "SELECT %s || i, 'Bench device ' || i, CASE WHEN i %% 2 = 0 THEN 'sensor' ELSE 'actuator' END, "
                "ARRAY['temperature', 'humidity'], jsonb_build_object('rack', i %% 10), %s "
                "FROM generate_series(1, %s) AS i ON CONFLICT DO NOTHING",
                (prefix, secret_hash, count),
            )
            cur.execute("ANALYZE devices")
        conn.close()
        return [f"{prefix}{i}" for i in range(1, count + 1)]

    def create_client(self, scopes: str = "admin") -> tuple[str, str]:
        from app.infra.db import Database
        from app.services.clients import create_client

        db = Database(self.url, maxconn=1)
        try:
            client, secret = create_client(db, "bench", scopes)
        finally:
            db.close()
        return client.client_id, secret


def hub_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("UAIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "NATS_URL": os.environ.get("UAIP_TEST_NATS_URL", "nats://127.0.0.1:4222"),
        "JWT_SECRET": "bench-" + secrets.token_hex(24),
        "UAIP_REDIS_KEY_PREFIX": "uaip-bench-" + secrets.token_hex(4),
        "LOG_LEVEL": "warning",
        "UAIP_RELAY_METRICS_PORT": "0",
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "RATE_LIMIT_BURST": "1000000",
        **extra,
    }


class Gunicorn(HubServer):
    """A gunicorn serving any WSGI target (the hub by default) with the hub's gunicorn.conf.py."""

    def __init__(self, env: dict[str, str], target: str = "wsgi:app", workers: int = 2, threads: int = 4,
                 worker_class: str | None = None) -> None:
        super().__init__(env, workers=workers, threads=threads)
        self.args[0] = str(ensure_runtime_venv() / "gunicorn")
        self.args[-1] = target
        if worker_class:
            self.args[1:1] = ["-k", worker_class]

    def worker_rss_mb(self) -> list[float]:
        """Resident memory of each worker, in pid order (so two readings pair up)."""
        sizes = []
        for pid in sorted(self.worker_pids()):
            status = Path(f"/proc/{pid}/status").read_text()
            kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
            sizes.append(kb / 1024)
        return sizes


@dataclass
class HeyResult:
    requests_per_second: float
    latencies_ms: dict[str, float]
    statuses: dict[int, int]
    errors: int
    raw: str = field(repr=False, default="")

    @property
    def p50_ms(self) -> float:
        return self.latencies_ms.get("50%", float("nan"))


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"bench: `{name}` is not installed (Debian: apt-get install -y {name})")
    return path


def hey(url: str, *, requests: int | None = None, duration: str | None = None, concurrency: int = 16,
        headers: dict[str, str] | None = None, method: str = "GET", body: str | None = None,
        content_type: str | None = None, qps: float | None = None) -> HeyResult:
    """Run hey and parse its summary (requests/s, latency percentiles in ms, status counts, errors)."""
    args = [require_tool("hey"), "-c", str(concurrency), "-m", method]
    args += ["-z", duration] if duration else ["-n", str(requests or 1000)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        args += ["-d", body]
    if content_type:
        args += ["-T", content_type]
    if qps:
        args += ["-q", str(qps)]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=600).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latencies = {m.group(1): float(m.group(2)) * 1000 for m in re.finditer(r"(\d+%) in ([\d.]+) secs", out)}
    statuses = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors_block = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
    errors = sum(int(m.group(1)) for m in re.finditer(r"\[(\d+)\]", errors_block))
    return HeyResult(rps, latencies, statuses, errors, out)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate_pings(servers: dict[str, HubServer], path: str, *, rounds: int, requests_per_round: int,
                    concurrency: int, headers: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per server, the medians over `rounds` of: p50 latency at 1 connection (`c1`), p50 and requests/s at
    `concurrency` connections (`loaded`, `rps`). The servers take turns (A, B, C, A, B, C, ...) so that drift in
    the machine's load hits all alike; a warm-up first (imports, connections, the Lua script load)."""
    for server in servers.values():
        hey(f"{server.url}{path}", requests=500, concurrency=concurrency, headers=headers)
    samples = {side: {"c1": [], "loaded": [], "rps": []} for side in servers}
    for _ in range(rounds):
        for side, server in servers.items():
            url = f"{server.url}{path}"
            serial = hey(url, requests=requests_per_round // 3, concurrency=1, headers=headers)
            loaded = hey(url, requests=requests_per_round, concurrency=concurrency, headers=headers)
            samples[side]["c1"].append(serial.p50_ms)
            samples[side]["loaded"].append(loaded.p50_ms)
            samples[side]["rps"].append(loaded.requests_per_second)
    return {side: {key: median(values) for key, values in series.items()} for side, series in samples.items()}


def standalone(run, description: str, devices: int, phases: tuple[str, ...] = ()) -> None:
    """`python -m bench.<scenario> [--quick]`: one scenario on a database of its own with `devices` devices, its
    figures printed as JSON (scripts/bench runs the same `run` among the others). A scenario with `phases` also
    takes `--only PHASE[,PHASE]` (passed to `run` as `only`), to measure one part again without the rest."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    if phases:
        parser.add_argument("--only", type=lambda text: tuple(text.split(",")), default=phases,
                            help=f"comma-separated phases to run, of: {', '.join(phases)}")
    args = parser.parse_args()
    if phases and not set(args.only) <= set(phases):
        parser.error(f"--only takes {', '.join(phases)}")
    options = {"only": args.only} if phases else {}
    db = BenchDatabase.create()
    try:
        db.seed_devices(devices)
        print(json.dumps(run(db, quick=args.quick, **options), indent=2))
    finally:
        db.drop()

