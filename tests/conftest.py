"""Fixtures on real PostgreSQL, Redis and NATS (see tests/support/services.py for where they are).

Each test run gets its own database (created, migrated, dropped), its own Redis key prefix and unique device
ids, hence unique NATS subjects, so runs never see each other's data.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import hypothesis
import pytest

from app import create_app
from app.infra.db import Database
from app.infra.migrate import migrate
from app.services.clients import create_client
from app.web import worker_hooks as lifecycle
from tests.support import ast_guard, services
from tests.support.environment import scrub_hub_configuration
from tests.support.hub_api import Api, token
from tests.support.processes import start_relay

ast_guard.install()  # before anything parses in a second thread (CPython < 3.11.8, see the module)
scrub_hub_configuration(os.environ)  # before any fixture: no app or process of the suite inherits the shell's settings
# Property tests check what is computed, not how fast: hypothesis's 200 ms per-example deadline failed them on a
# loaded 2-core machine (speed goals live in bench/). Examples still have to finish; pytest's own timeout applies.
hypothesis.settings.register_profile("uaip", deadline=None)
hypothesis.settings.load_profile("uaip")

ALL_SCOPES = "device:read device:write device:command message:read"


@pytest.fixture(scope="session")
def database():
    services.wait_for_services()
    name, url = services.create_database()
    migrate(url)
    yield url
    services.drop_database(name)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def hub_env(database, run_id) -> dict[str, str]:
    """The environment a hub process of this test run gets (also used for gunicorn/relay subprocesses)."""
    return {
        "DATABASE_URL": database,
        "REDIS_URL": services.REDIS_BASE_URL,
        "NATS_URL": services.NATS_URL,
        "JWT_SECRET": "test-" + secrets.token_hex(24),
        "UAIP_REDIS_KEY_PREFIX": f"uaip-test-{run_id}",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "UAIP_RELAY_METRICS_PORT": "0",  # relays started by tests must not fight over one port
        # Tests exercise limits explicitly; everything else should not trip them.
        "RATE_LIMIT_PER_MINUTE": "100000",
        "RATE_LIMIT_BURST": "100000",
    }


@pytest.fixture()
def app(hub_env):
    return create_app(hub_env)


@pytest.fixture(autouse=True)
def _close_apps_after_each_test():
    """Close what every app built during the test opened (NATS loop thread, Redis, pools), as a gunicorn worker
    does at exit; tests that build apps themselves need not remember to. All of it reopens lazily if used again."""
    yield
    lifecycle.close_extensions()


@pytest.fixture()
def client(app):
    return app.test_client()


def capture_logs(level: str = "info"):
    """Send everything logged from now on (until the next create_app) to a buffer, as our JSON handler writes it.
    Returns a function giving the JSON objects so far; its `.text()` gives the raw output."""
    from app.telemetry.logs import configure_logging

    buffer = io.StringIO()
    configure_logging(level, "json", stream=buffer)

    def lines() -> list[dict]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    lines.text = buffer.getvalue
    return lines


@pytest.fixture()
def log_lines(app):
    """capture_logs() for the `app` fixture's app (apps created later in the test reconfigure logging)."""
    yield capture_logs(app.config["SETTINGS"].log_level)
    from app.telemetry.logs import configure_logging

    configure_logging(app.config["SETTINGS"].log_level, app.config["SETTINGS"].log_format)


@pytest.fixture()
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def db(database) -> Database:
    pool = Database(database, maxconn=4)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def api_client_factory(db):
    """Create a real API client with the given scopes; returns (client_id, client_secret)."""

    def make(scopes: str = ALL_SCOPES) -> tuple[str, str]:
        client, secret = create_client(db, "test-" + uuid.uuid4().hex[:6], scopes)
        return client.client_id, secret

    return make


@pytest.fixture()
def token_for(client, api_client_factory):
    """Fetch a real access token through the token endpoint for a new client with `scopes`."""

    def fetch(scopes: str = ALL_SCOPES) -> str:
        client_id, secret = api_client_factory(scopes)
        response = client.post(
            "/api/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
        assert response.status_code == 200, response.json
        return response.json["access_token"]

    return fetch


@pytest.fixture()
def auth(token_for):
    """Authorization headers for a client with every non-admin scope."""
    return {"Authorization": f"Bearer {token_for()}"}


@pytest.fixture()
def admin_auth(token_for):
    return {"Authorization": f"Bearer {token_for('admin')}"}


# --- the relay as a real `uaip-hub relay` process (tests/integration/test_relay.py, tests/process) -------------


@pytest.fixture(scope="session")
def relay_env(hub_env, run_id):
    """Short relay intervals for tests, and a queue group of this run's own (the NATS server is shared)."""
    return {**hub_env, "UAIP_RELAY_SWEEP_SECONDS": "0.2", "UAIP_COMMAND_RETRY_SECONDS": "1",
            "UAIP_RELAY_QUEUE_GROUP": f"uaip-relay-test-{run_id}", "LOG_FORMAT": "text",
            "UAIP_RELAY_METRICS_PORT": "0"}  # several relays run at once; a test that scrapes one gives it a port


@pytest.fixture()
def relay(relay_env):
    """A `uaip-hub relay` process with `relay_env`, stopped after the test."""
    process = start_relay(relay_env)
    yield process
    process.stop()


@pytest.fixture()
def api(client, api_client_factory):
    """The API through the `client` fixture's app, as a new client with every non-admin scope."""
    return Api(client, token(client, *api_client_factory()))


def unique_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture()
def make_device(client, auth):
    """Register a device through the API; returns the 201 body (with device_secret)."""

    def make(**fields) -> dict:
        body = {"device_id": unique_id(), "name": "Test device", "device_type": "sensor", **fields}
        response = client.post("/api/v1/devices", json=body, headers=auth)
        assert response.status_code == 201, response.json
        return response.json

    return make


# The console script installed next to this interpreter: running it proves the packaging, not just the code.
UAIP_HUB = str(Path(sys.executable).with_name("uaip-hub"))


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `uaip-hub ARGS` as a real subprocess with exactly `env` (plus PATH and HOME; no .env file is read)."""
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "UAIP_ENV_FILE": "", **env}
    return subprocess.run([UAIP_HUB, *args], env=full_env, capture_output=True, text=True, timeout=timeout)


def parse_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])
