"""gunicorn and the relay read the .env of their working directory; the environment wins over it.

Each process runs in an empty directory of the test's with a .env that holds the required settings the
environment lacks, plus a setting the environment also gives (LOG_FORMAT=text in the file, json in the
environment: JSON lines prove the environment won).
"""

import signal

import pytest
import requests

from tests.support.processes import HubServer, Relay
from tests.support.services import wait_for

pytestmark = pytest.mark.process

FROM_FILE = ("DATABASE_URL", "NATS_URL", "JWT_SECRET")
ORIGIN = "https://from-dotenv.example"
LIVENESS = "/api/v1/system/health/liveness"


def write_dotenv(directory, hub_env, **extra):
    lines = [f"{name}={hub_env[name]}" for name in FROM_FILE]
    lines += [f"{name}={value}" for name, value in {"LOG_FORMAT": "text", **extra}.items()]
    (directory / ".env").write_text("\n".join(lines) + "\n")


def environment_without_dotenv_settings(hub_env, **extra):
    """hub_env less what the file gives; UAIP_ENV_FILE unset, so the default ./.env is the one read."""
    env = {name: value for name, value in hub_env.items() if name not in FROM_FILE}
    return {**env, "LOG_FORMAT": "json", "UAIP_ENV_FILE": None, **extra}


def allowed_origin(hub, origin):
    return requests.get(hub.url + LIVENESS, headers={"Origin": origin}, timeout=5).headers.get(
        "Access-Control-Allow-Origin")


def test_gunicorn_reads_dotenv_at_start_and_again_on_sighup(tmp_path, hub_env):
    write_dotenv(tmp_path, hub_env, CORS_ORIGINS=ORIGIN)
    with HubServer(environment_without_dotenv_settings(hub_env), workers=1, threads=2, cwd=tmp_path) as hub:
        assert allowed_origin(hub, ORIGIN) == ORIGIN  # CORS_ORIGINS exists only in the file
        wait_for(lambda: any(line.get("path") == LIVENESS for line in hub.json_lines()),
                 message=f"a JSON access line (LOG_FORMAT from the environment)\n{hub.output()[-2000:]}")

        # SIGHUP: gunicorn re-reads its configuration, and with it the .env; new workers get the new value.
        write_dotenv(tmp_path, hub_env, CORS_ORIGINS="https://changed.example")
        hub.signal(signal.SIGHUP)
        wait_for(lambda: allowed_origin(hub, "https://changed.example") == "https://changed.example", timeout=30,
                 message=f"CORS_ORIGINS from the changed .env after SIGHUP\n{hub.output()[-2000:]}")
        assert allowed_origin(hub, ORIGIN) is None


def test_relay_reads_dotenv(tmp_path, hub_env, run_id):
    write_dotenv(tmp_path, hub_env)
    env = environment_without_dotenv_settings(
        hub_env, UAIP_RELAY_QUEUE_GROUP=f"uaip-relay-dotenv-{run_id}", UAIP_RELAY_METRICS_PORT="0")
    with Relay(env, cwd=tmp_path) as relay:
        wait_for(lambda: "relay started" in relay.output() or not relay.running(), timeout=30, message="relay start")
        assert relay.running(), relay.output()
        assert any(line.get("message") == "relay started" for line in relay.json_lines()), relay.output()
