"""Health, liveness and readiness through the app (docs/api.md, "System endpoints"); process-level behaviour is in
test_lifecycle.py."""

from __future__ import annotations

import signal

import pytest
from prometheus_client import REGISTRY

from app import create_app
from app.web import worker_hooks as lifecycle
from tests.support.asserting import nonempty
from tests.support.services import free_port

HEALTH = "/api/v1/system/health"


@pytest.fixture()
def connected(app):
    """The app with its NATS connection up (under gunicorn, post_worker_init starts it)."""
    assert app.extensions["uaip.messaging"].wait_connected(10)
    yield app
    app.extensions["uaip.messaging"].close()
    app.extensions["uaip.db"].close()


@pytest.fixture()
def shutting_down():
    lifecycle.mark_shutting_down("test")
    yield
    lifecycle._shutting_down.clear()


def dependencies(body: dict) -> dict[str, dict]:
    return {dep["name"]: dep for dep in body["dependencies"]}


def test_health_reports_every_dependency_with_a_round_trip(connected):
    response = connected.test_client().get(HEALTH)
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"status", "version", "uptime_seconds", "timestamp", "dependencies"}
    assert body["status"] == "healthy" and body["version"] == "1.0.0"
    assert body["uptime_seconds"] >= 0 and body["timestamp"].endswith("Z")
    assert [dep["name"] for dep in body["dependencies"]] == ["PostgreSQL", "Redis", "NATS"]
    for dep in body["dependencies"]:
        assert set(dep) == {"name", "status", "response_time_ms", "message"}
        assert dep["status"] == "healthy" and dep["response_time_ms"] > 0, dep
    assert response.headers["Cache-Control"] == "no-store"
    for name in ("PostgreSQL", "Redis", "NATS"):
        assert REGISTRY.get_sample_value("uaip_dependency_up", {"name": name}) == 1


def test_health_is_cached_so_a_probe_storm_probes_once(connected):
    client = connected.test_client()
    checker = connected.extensions["uaip.health"]
    bodies = [client.get(HEALTH).json for _ in range(20)] + [client.get(HEALTH + "/readiness").json]
    assert checker.probe_count == 1
    assert all(body["timestamp"] == bodies[0]["timestamp"] for body in nonempty(bodies[:20]))
    assert all(body["dependencies"] == bodies[0]["dependencies"] for body in nonempty(bodies[:20]))


def test_cache_can_be_turned_off(hub_env, monkeypatch):
    monkeypatch.setenv("UAIP_HEALTH_CACHE_SECONDS", "0")
    app = create_app(hub_env)
    client = app.test_client()
    client.get(HEALTH)
    client.get(HEALTH)
    assert app.extensions["uaip.health"].probe_count == 2
    app.extensions["uaip.messaging"].close()
    app.extensions["uaip.db"].close()


def test_liveness_touches_nothing(app):
    response = app.test_client().get(HEALTH + "/liveness")
    assert response.status_code == 200 and response.json == {"status": "alive"}
    assert app.extensions["uaip.health"].probe_count == 0
    assert app.extensions["uaip.messaging"].client is None


def test_readiness_ready(connected):
    response = connected.test_client().get(HEALTH + "/readiness")
    assert response.status_code == 200 and response.json == {"status": "ready"}


def test_readiness_draining_when_the_drain_file_exists(connected, tmp_path, monkeypatch):
    drain = tmp_path / "draining"
    monkeypatch.setenv("UAIP_DRAIN_FILE", str(drain))
    client = connected.test_client()
    assert client.get(HEALTH + "/readiness").status_code == 200
    drain.touch()
    response = client.get(HEALTH + "/readiness")
    assert response.status_code == 503 and response.json == {"status": "draining"}
    assert client.get(HEALTH + "/liveness").status_code == 200


def test_readiness_draining_once_the_worker_is_stopping(connected, shutting_down):
    response = connected.test_client().get(HEALTH + "/readiness")
    assert response.status_code == 503 and response.json == {"status": "draining"}


def test_redis_not_configured_does_not_degrade(hub_env):
    app = create_app({**hub_env, "REDIS_URL": ""})
    assert app.extensions["uaip.messaging"].wait_connected(10)
    body = app.test_client().get(HEALTH).json
    assert body["status"] == "healthy"
    redis = dependencies(body)["Redis"]
    assert redis["status"] == "not_configured" and redis["response_time_ms"] is None
    assert "not configured" in redis["message"]
    app.extensions["uaip.messaging"].close()
    app.extensions["uaip.db"].close()


def test_unreachable_postgres_is_unhealthy_and_not_ready(hub_env):
    app = create_app({**hub_env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"})
    client = app.test_client()
    response = client.get(HEALTH)
    assert response.status_code == 503 and response.json["status"] == "unhealthy"
    postgres = dependencies(response.json)["PostgreSQL"]
    assert postgres["status"] == "unhealthy" and postgres["response_time_ms"] is None and postgres["message"]
    readiness = client.get(HEALTH + "/readiness")
    assert readiness.status_code == 503 and readiness.json == {"status": "not_ready"}
    assert REGISTRY.get_sample_value("uaip_dependency_up", {"name": "PostgreSQL"}) == 0
    assert client.get(HEALTH + "/liveness").status_code == 200
    app.extensions["uaip.messaging"].close()


def test_unreachable_nats_and_redis_degrade(hub_env):
    app = create_app({**hub_env, "NATS_URL": f"nats://127.0.0.1:{free_port()}",
                      "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    client = app.test_client()
    response = client.get(HEALTH)
    assert response.status_code == 200 and response.json["status"] == "degraded"
    deps = dependencies(response.json)
    assert deps["PostgreSQL"]["status"] == "healthy"
    assert deps["NATS"]["status"] == "unhealthy" and deps["Redis"]["status"] == "unhealthy"
    assert client.get(HEALTH + "/readiness").json == {"status": "ready"}
    app.extensions["uaip.messaging"].close()
    app.extensions["uaip.db"].close()


# --- app/web/worker_hooks.py, without gunicorn --------------------------------------------------------------------


class FakeWorker:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.alive = True

    def handle_exit(self, signum, frame):
        self.alive = False


def test_sigterm_handler_is_chained_and_marks_the_worker(monkeypatch):
    import os

    worker = FakeWorker(os.getpid())
    original = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, worker.handle_exit)
    try:
        lifecycle._chain_sigterm(worker)
        handler = signal.getsignal(signal.SIGTERM)
        assert handler != worker.handle_exit
        handler(signal.SIGTERM, None)  # what the interpreter does on delivery
        assert lifecycle.shutting_down() and not worker.alive
    finally:
        signal.signal(signal.SIGTERM, original)
        lifecycle._shutting_down.clear()


def test_worker_exit_hook_in_the_master_does_nothing(app):
    """gunicorn calls worker_exit in the master for a worker that vanished; the master must stay clean."""
    lifecycle.worker_exiting(FakeWorker(pid=1))
    assert not lifecycle.shutting_down()


def test_uptime_counts_from_the_master_start(monkeypatch):
    import os
    import time

    monkeypatch.setenv(lifecycle.MASTER_STARTED_ENV, f"{os.getppid()}:{time.time() - 100:.3f}")
    assert 99 < lifecycle.uptime_seconds() < 200
    monkeypatch.setenv(lifecycle.MASTER_STARTED_ENV, f"999999999:{time.time() - 100000:.3f}")
    assert lifecycle.uptime_seconds() < 100000  # another master's record is ignored
    monkeypatch.delenv(lifecycle.MASTER_STARTED_ENV)
    lifecycle.record_master_start()
    assert os.environ[lifecycle.MASTER_STARTED_ENV].startswith(f"{os.getpid()}:")


def test_a_statement_timeout_is_503_not_500(hub_env, auth, make_device, database, monkeypatch):
    """A PATCH stuck behind a lock until statement_timeout answers 503 SERVICE_UNAVAILABLE."""
    import psycopg2

    from app.infra import db as db_module

    device = make_device()
    monkeypatch.setattr(db_module, "STATEMENT_TIMEOUT_MS", 300)
    app = create_app(hub_env)  # a new app: its pool is created with the shortened timeout
    with psycopg2.connect(database) as lock_conn, lock_conn.cursor() as cur:
        cur.execute("LOCK TABLE devices IN SHARE MODE")
        response = app.test_client().patch(f"/api/v1/devices/{device['device_id']}", json={"name": "late"},
                                           headers=auth)
        lock_conn.rollback()
    app.extensions["uaip.db"].close()
    assert response.status_code == 503 and response.json["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["Retry-After"]
