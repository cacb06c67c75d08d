"""NATS unreachable when the hub starts: API workers, relay and simulator keep working without it and pick it up
when it appears, with no restart (docs/decisions.md, "NATS publishes fail fast").

A private nats-server whose port is reserved but which is not running yet; real gunicorn, a real relay, the
simulator in this process.
"""

import time
import uuid

import psycopg2
import pytest
import requests

from app.cli.simulate import DeviceSimulator
from tests.conftest import basic
from tests.support.hub_api import Api, token
from tests.support.processes import HubServer, start_relay
from tests.support.servers import NatsServer
from tests.support.services import wait_for

pytestmark = pytest.mark.process

OUTAGE_WARNING = "NATS unavailable"
# The defect this guards against: every publish waited for a connection attempt (2 s connect timeout + 0.5 s) while
# NATS was unreachable. A request that makes one publish (register: an event; submit: the command) and answers
# within 1 s cannot have waited for one.
FAST_SECONDS = 1.0


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def outage_warnings(lines: list[dict]) -> dict[int, int]:
    """Outage warnings per process id."""
    counts: dict[int, int] = {}
    for line in lines:
        if line.get("level") == "warning" and line.get("message", "").startswith(OUTAGE_WARNING):
            counts[line["pid"]] = counts.get(line["pid"], 0) + 1
    return counts


def stored_status(database_url: str, device_ids: list[str]) -> dict[str, str]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT device_id, status FROM devices WHERE device_id = ANY(%s)", (device_ids,))
        return dict(cur.fetchall())


def test_everything_started_while_nats_is_down_works_fast_then_recovers_without_a_restart(
    relay_env, api_client_factory,
):
    nats = NatsServer()  # its port is reserved; the server starts later
    env = {**relay_env, "NATS_URL": nats.url, "LOG_FORMAT": "json", "UAIP_HEALTH_CACHE_SECONDS": "0",
           "HEARTBEAT_TIMEOUT_SECONDS": "1", "UAIP_RELAY_QUEUE_GROUP": f"uaip-outage-{uuid.uuid4().hex[:8]}"}
    try:
        with HubServer(env) as hub:
            relay = start_relay(env)
            try:
                api = Api(hub.url, token(hub.url, *api_client_factory()))

                # API workers: register and submit answer at once; the command is stored as queued.
                device, register_seconds = timed(api.register)
                (status, accepted, _), submit_seconds = timed(lambda: api.command(device["device_id"], ttl_ms=120_000))
                assert status == 202 and accepted["status"] == "queued", accepted
                assert register_seconds < FAST_SECONDS and submit_seconds < FAST_SECONDS, (
                    register_seconds, submit_seconds)
                report = requests.get(f"{hub.url}/api/v1/system/health", timeout=10).json()
                assert report["status"] == "degraded"
                assert {d["name"]: d["status"] for d in report["dependencies"]}["NATS"] == "unhealthy"

                # The relay: a sweep that marks many devices offline (one event each, all dropped) does not stall;
                # the command that expires right after is expired on the next sweeps, not minutes later.
                fleet = [api.register() for _ in range(20)]
                for member in fleet:
                    requests.post(f"{hub.url}/api/v1/devices/{member['device_id']}/heartbeat", timeout=10,
                                  headers=basic(member["device_id"], member["device_secret"])).raise_for_status()
                ids = [member["device_id"] for member in fleet]
                wait_for(lambda: set(stored_status(env["DATABASE_URL"], ids).values()) == {"offline"}, timeout=20,
                         message="the relay marked the fleet offline")
                _, short, _ = api.command(fleet[0]["device_id"], ttl_ms=1000)
                wait_for(lambda: api.status(short["message_id"]) == "expired", timeout=8,
                         message="the next sweeps expired a command (no stall per dropped event)")

                # The simulator starts while NATS is down too.
                simulator = DeviceSimulator(nats.url, [device["device_id"]], heartbeat_seconds=0.5)
                simulator.start(connect_timeout=0)
                try:
                    warned = outage_warnings(hub.json_lines())
                    assert len(warned) == 2 and set(warned.values()) == {1}, warned  # one per worker, once
                    assert set(outage_warnings(relay.json_lines()).values()) == {1}

                    nats.start()
                    health_url = f"{hub.url}/api/v1/system/health"
                    wait_for(lambda: requests.get(health_url, timeout=10).json()["status"] == "healthy",
                             timeout=20, message="healthy once NATS is up")
                    wait_for(lambda: api.status(accepted["message_id"]) == "completed", timeout=30,
                             message="the command queued during the outage completed")
                    assert accepted["message_id"] in simulator.received_ids()
                finally:
                    simulator.stop()
                assert hub.running() and relay.running()
                warned = outage_warnings(hub.json_lines())  # the outage ended: no further warnings
                assert len(warned) == 2 and set(warned.values()) == {1}, warned
                assert sum(outage_warnings(relay.json_lines()).values()) == 1
                assert relay.stop() == 0
            finally:
                relay.stop()
    finally:
        nats.cleanup()
