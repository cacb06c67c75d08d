"""A stray .env never lowers security (gunicorn.conf.py, app/core/envfile.py): UAIP_ENV comes from the real
environment only, and development mode signs with a random secret of this start, shared by every worker, never
the fixed development constant of older versions."""

import subprocess
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from app.core.config import DEVELOPMENT_JWT_SECRET
from tests.support.processes import BIN, ROOT, HubServer, _process_env
from tests.support.services import free_port

pytestmark = pytest.mark.process

DEVICES = "/api/v1/devices"


def environment(hub_env, **extra):
    """hub_env without the settings the .env gives and without JWT_SECRET; UAIP_ENV_FILE unset, so ./.env counts."""
    env = {name: value for name, value in hub_env.items() if name not in ("DATABASE_URL", "NATS_URL", "JWT_SECRET")}
    return {**env, "UAIP_ENV_FILE": None, "UAIP_ENV": None, "JWT_SECRET": None, **extra}


def write_dotenv(directory, hub_env, **extra):
    values = {"DATABASE_URL": hub_env["DATABASE_URL"], "NATS_URL": hub_env["NATS_URL"], **extra}
    (directory / ".env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))


def constant_token() -> str:
    """An admin token signed with the development constant older versions used: anyone could make it."""
    claims = {"sub": "attacker", "scope": "admin", "iss": "uaip-hub", "iat": 1_700_000_000, "exp": 4_000_000_000,
              "jti": "x"}
    return jwt.encode(claims, DEVELOPMENT_JWT_SECRET, algorithm="HS256")


def test_a_dotenv_cannot_switch_a_production_hub_to_development(tmp_path, hub_env):
    write_dotenv(tmp_path, hub_env, UAIP_ENV="development")
    port = free_port()
    env = _process_env({**environment(hub_env), "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port),
                        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    done = subprocess.run([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "JWT_SECRET is required in production" in output, output
    assert "UAIP_ENV in .env is ignored" in output, output


def test_development_mode_signs_with_a_random_secret_shared_by_the_workers(tmp_path, hub_env, api_client_factory):
    write_dotenv(tmp_path, hub_env)
    with HubServer(environment(hub_env, UAIP_ENV="development", LOG_FORMAT="text"), workers=2, threads=2,
                   cwd=tmp_path) as hub:
        output = hub.output()
        assert "variables read from .env: DATABASE_URL, NATS_URL" in output, output
        assert "random secret" in output, output
        assert hub_env["DATABASE_URL"] not in output  # names only, never values

        forged = {"Authorization": f"Bearer {constant_token()}"}
        assert requests.get(hub.url + DEVICES, headers=forged, timeout=10).status_code == 401

        client_id, secret = api_client_factory("device:read")

        def fetch_and_use(_):
            # A new connection each time, so the token is issued by one worker and used on either.
            token = requests.post(hub.url + "/api/v1/auth/token", timeout=10, data={
                "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}", "Connection": "close"}
            return [requests.get(hub.url + DEVICES, headers=headers, timeout=10).status_code for _ in range(5)]

        with ThreadPoolExecutor(4) as pool:
            results = [status for batch in pool.map(fetch_and_use, range(8)) for status in batch]
        assert results == [200] * 40
        assert len(hub.worker_pids()) == 2  # the 48 connections above were shared out between two workers
