"""Dependency probes, health report, readiness and drain state (docs/api.md, "System endpoints"; docs/decisions.md,
"Draining").

Each probe is a real round trip with its own short timeout: PostgreSQL `SELECT 1` on a dedicated connection
(`Database.ping`), Redis `PING` (the client's 0.5 s socket timeouts), NATS PING/PONG (`Messaging.round_trip_ms`).
The three run in parallel, so a report costs the slowest probe, never more than PROBE_TIMEOUT_SECONDS (plus
a little); a probe still stuck from an earlier report is waited on, not started again, so a hung dependency
cannot pile up threads.

A report is cached per worker for UAIP_HEALTH_CACHE_SECONDS (default and maximum 2): however many probes
(load balancers, Kubernetes, monitoring) arrive, each worker touches each dependency at most once per period,
and concurrent callers of an expired report wait for the one probe in progress instead of starting their own.

Status: PostgreSQL down → "unhealthy" (503; readiness "not_ready"); Redis or NATS down → "degraded" (200):
the API keeps serving (rate limits fall back to memory, commands stay queued in PostgreSQL). Redis not
configured is not a fault.

Draining: readiness answers 503 "draining" when a drain file exists (UAIP_DRAIN_FILE; unset: /tmp/uaip-draining,
which a Kubernetes preStop hook creates, or this hub's own /tmp/uaip-draining-<instance>; every worker sees them)
or when this worker was told to stop (`app.web.worker_hooks.shutting_down`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import importlib.metadata
import os
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app, has_app_context

from app.telemetry import metrics
from app.web import worker_hooks as lifecycle

DRAIN_FILE_ENV = "UAIP_DRAIN_FILE"
DEFAULT_DRAIN_FILE = "/tmp/uaip-draining"
MAX_CACHE_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 1.0

HEALTHY, UNHEALTHY, NOT_CONFIGURED = "healthy", "unhealthy", "not_configured"
POSTGRES, REDIS, NATS = "PostgreSQL", "Redis", "NATS"


@dataclasses.dataclass(frozen=True)
class Dependency:
    name: str
    status: str
    response_time_ms: float | None
    message: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Report:
    status: str  # healthy | degraded | unhealthy
    dependencies: tuple[Dependency, ...]
    checked_at: dt.datetime

    def dependency(self, name: str) -> Dependency:
        return next(dep for dep in self.dependencies if dep.name == name)


def package_version() -> str:
    try:
        return importlib.metadata.version("uaip-hub")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def drain_files() -> tuple[str, ...]:
    """The files whose existence means "drain": UAIP_DRAIN_FILE alone when it is set; else the host-wide
    /tmp/uaip-draining (what the chart's preStop hook touches; in a pod it concerns this hub only) and this hub's
    own /tmp/uaip-draining-<instance> (UAIP_INSTANCE, else SERVER_PORT), which drains one of several hubs on a
    host without touching the others."""
    configured = os.environ.get(DRAIN_FILE_ENV, "").strip()
    if configured:
        return (configured,)
    if not has_app_context():
        return (DEFAULT_DRAIN_FILE,)
    return DEFAULT_DRAIN_FILE, f"{DEFAULT_DRAIN_FILE}-{current_app.config['SETTINGS'].instance}"


def draining() -> bool:
    """Shutdown began: this worker was told to stop, or the pod is being drained (a drain file exists)."""
    return lifecycle.shutting_down() or any(os.path.exists(path) for path in drain_files())


def _timed(name: str, probe: Callable[[], float | None], ok_message: str) -> Dependency:
    try:
        elapsed = probe()
    except Exception as exc:  # noqa: BLE001 - any failure of the round trip means "down"
        detail = str(exc).strip()
        return Dependency(name, UNHEALTHY, None, detail.splitlines()[0] if detail else exc.__class__.__name__)
    return Dependency(name, HEALTHY, round(elapsed, 2), ok_message)


class HealthChecker:
    """Probes this app's dependencies and caches the report (one per worker process)."""

    def __init__(self, db, cache, messaging, cache_seconds: float = MAX_CACHE_SECONDS,
                 probe_timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.db = db
        self.cache = cache
        self.messaging = messaging
        self.cache_seconds = cache_seconds
        self.probe_timeout = probe_timeout
        self.probe_count = 0  # how many reports were actually probed (tests prove the cache with it)
        self._report: Report | None = None
        self._fresh_until = 0.0
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_pid: int | None = None
        self._running: dict[str, concurrent.futures.Future] = {}

    # -- probes ------------------------------------------------------------------------------------------

    def _probe_postgres(self) -> Dependency:
        return _timed(POSTGRES, lambda: self.db.ping(self.probe_timeout), "SELECT 1 succeeded")

    def _probe_redis(self) -> Dependency:
        if self.cache is None:
            return Dependency(REDIS, NOT_CONFIGURED, None, "not configured (REDIS_URL is unset)")

        def ping() -> float:
            started = time.perf_counter()
            self.cache.client.ping()
            return (time.perf_counter() - started) * 1000

        return _timed(REDIS, ping, "PING succeeded")

    def _probe_nats(self) -> Dependency:
        self.messaging.start()  # idempotent; connects in the background if nothing did yet
        return _timed(NATS, lambda: self.messaging.round_trip_ms(self.probe_timeout), "PING/PONG succeeded")

    # -- report ------------------------------------------------------------------------------------------

    def report(self) -> Report:
        """The cached report if it is fresh, else a new one (one probe at a time per worker)."""
        report = self._report
        if report is not None and time.monotonic() < self._fresh_until:
            return report
        with self._lock:
            if self._report is not None and time.monotonic() < self._fresh_until:
                return self._report
            report = self._probe_all()
            self._report, self._fresh_until = report, time.monotonic() + self.cache_seconds
            return report

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix="health-probe")
            self._pool_pid, self._running = os.getpid(), {}
        return self._pool

    def _probe_all(self) -> Report:
        self.probe_count += 1
        probes = {POSTGRES: self._probe_postgres, REDIS: self._probe_redis, NATS: self._probe_nats}
        executor = self._executor()
        for name, probe in probes.items():
            running = self._running.get(name)
            if running is None or running.done():
                self._running[name] = executor.submit(probe)
        deadline = time.monotonic() + self.probe_timeout + 0.25
        dependencies = []
        for name in probes:
            try:
                dependencies.append(self._running[name].result(timeout=max(0.0, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                dependencies.append(Dependency(name, UNHEALTHY, None, f"no answer within {self.probe_timeout:g} s"))
        for dep in dependencies:
            if dep.status != NOT_CONFIGURED:
                metrics.dependency_up.labels(name=dep.name).set(1 if dep.status == HEALTHY else 0)
        return Report(_overall(dependencies), tuple(dependencies), dt.datetime.now(dt.UTC))

    def readiness(self) -> str:
        """"ready", "draining" or "not_ready" (PostgreSQL unreachable, from the cached report)."""
        if draining():
            return "draining"
        return "ready" if self.report().dependency(POSTGRES).status == HEALTHY else "not_ready"

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


def _overall(dependencies: list[Dependency]) -> str:
    down = {dep.name for dep in dependencies if dep.status == UNHEALTHY}
    if POSTGRES in down:
        return "unhealthy"
    return "degraded" if down else "healthy"


def init_app(app: Flask) -> None:
    app.extensions["uaip.health"] = HealthChecker(
        app.extensions["uaip.db"],
        app.extensions["uaip.cache"],
        app.extensions["uaip.messaging"],
        cache_seconds=app.config["SETTINGS"].health_cache_seconds,
    )
    app.config["UAIP_VERSION"] = package_version()


def get_health() -> HealthChecker:
    return current_app.extensions["uaip.health"]
