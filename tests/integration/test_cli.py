"""`uaip-hub migrate` and `uaip-hub create-client` as real subprocesses on a real database."""

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

from tests.conftest import run_cli
from tests.support import services


def test_create_client_json_prints_usable_credentials(hub_env, client):
    result = run_cli(["create-client", "--name", "agent", "--scopes", "device:read device:write", "--json"], hub_env)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"client_id", "client_secret", "scopes"}
    assert created["scopes"] == "device:read device:write"
    r = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": created["client_id"],
              "client_secret": created["client_secret"]},
    )
    assert r.status_code == 200 and r.json["scope"] == "device:read device:write"


def test_create_client_rejects_unknown_scope(hub_env):
    result = run_cli(["create-client", "--name", "agent", "--scopes", "device:read root"], hub_env)
    assert result.returncode != 0 and "unknown scope" in result.stderr


def test_a_metrics_directory_that_does_not_exist_yet_is_made_not_a_crash(hub_env, tmp_path):
    """A pod's ConfigMap may give every container PROMETHEUS_MULTIPROC_DIR; only gunicorn.conf.py used to create it,
    so migrate, create-client and the relay died with a traceback on a fresh /tmp."""
    missing = tmp_path / "metrics" / "not-yet"
    result = run_cli(["create-client", "--name", "agent", "--json"],
                     {**hub_env, "PROMETHEUS_MULTIPROC_DIR": str(missing)})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and missing.is_dir()


def test_bad_configuration_stops_with_one_line(hub_env):
    result = run_cli(["migrate"], {**hub_env, "SERVER_PORT": "eighty"})
    assert result.returncode != 0
    assert result.stderr.strip() == "uaip-hub: configuration error: SERVER_PORT must be an integer, got 'eighty'"
    result = run_cli(["migrate"], {**hub_env, "UAIP_HEALTH_CACHE_SECONDS": "five"})
    assert result.returncode != 0
    assert result.stderr.strip() == \
        "uaip-hub: configuration error: UAIP_HEALTH_CACHE_SECONDS must be a number, got 'five'"


def test_production_refuses_placeholder_jwt_secret(hub_env):
    result = run_cli(["migrate"], {**hub_env, "JWT_SECRET": "changeme"})
    assert result.returncode != 0 and "JWT_SECRET" in result.stderr and "Traceback" not in result.stderr


def test_two_concurrent_migrations_both_succeed_and_apply_once():
    name, url = services.create_database("uaip_migrate")
    try:
        env = {"DATABASE_URL": url, "NATS_URL": services.NATS_URL, "UAIP_ENV": "development"}
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: run_cli(["migrate"], env), range(2)))
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        outputs = sorted(r.stdout for r in results)
        assert "schema up to date" in outputs[0] or "schema up to date" in outputs[1]
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT version) FROM schema_migrations")
            total, distinct = cur.fetchone()
        conn.close()
        assert total == distinct >= 1
        again = run_cli(["migrate"], env)
        assert again.returncode == 0 and "schema up to date" in again.stdout
    finally:
        services.drop_database(name)


FIRST_BOOT_SECRET, SECOND_BOOT_SECRET = "first-secret-value-" + "1" * 16, "second-secret-value-" + "2" * 16


def test_bootstrap_client_is_created_then_updated(hub_env, client):
    env = {**hub_env, "UAIP_BOOTSTRAP_CLIENT_ID": "boot-admin", "UAIP_BOOTSTRAP_CLIENT_SECRET": FIRST_BOOT_SECRET}
    assert run_cli(["migrate"], env).returncode == 0
    form = {"grant_type": "client_credentials", "client_id": "boot-admin", "client_secret": FIRST_BOOT_SECRET}
    r = client.post("/api/v1/auth/token", data=form)
    assert r.status_code == 200 and r.json["scope"] == "admin"
    env["UAIP_BOOTSTRAP_CLIENT_SECRET"] = SECOND_BOOT_SECRET
    assert run_cli(["migrate"], env).returncode == 0
    assert client.post("/api/v1/auth/token", data=form).status_code == 401
    assert client.post("/api/v1/auth/token", data={**form, "client_secret": SECOND_BOOT_SECRET}).status_code == 200


def test_a_weak_bootstrap_secret_stops_migrate_with_one_line_and_creates_nothing(hub_env, client):
    client_id = "weak-boot-" + uuid.uuid4().hex[:6]
    env = {**hub_env, "UAIP_BOOTSTRAP_CLIENT_ID": client_id, "UAIP_BOOTSTRAP_CLIENT_SECRET": "admin-password-1"}
    result = run_cli(["migrate"], env)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "uaip-hub: configuration error: UAIP_BOOTSTRAP_CLIENT_SECRET must be at least 32 characters long"]
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "admin-password-1"}
    assert client.post("/api/v1/auth/token", data=form).status_code == 401  # no such client was made
    relaxed = run_cli(["migrate"], {**env, "UAIP_ENV": "development"})
    assert relaxed.returncode == 0 and f"bootstrap client {client_id} is ready" in relaxed.stdout


def test_commands_also_run_through_flask_cli(hub_env):
    """uaip-hub is built on Flask's CLI (docs/api.md, "Command line"), so `flask --app wsgi ...` offers the same
    commands."""
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(root),
           **hub_env}
    flask = str(Path(sys.executable).with_name("flask"))
    migrated = subprocess.run([flask, "--app", "wsgi", "migrate"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=60)
    assert migrated.returncode == 0 and "schema up to date" in migrated.stdout, migrated.stderr
    created = subprocess.run([flask, "--app", "wsgi", "create-client", "--name", "via-flask", "--json"], cwd=root,
                             env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0 and json.loads(created.stdout)["scopes"] == "device:read", created.stderr
