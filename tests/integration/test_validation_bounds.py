"""Checking a typed command costs at most about a second of server time whatever the schema and the body, and
never holds a lock another request needs: schema bombs through the REST API, beside another device's commands."""

import json
import threading
import time
import uuid

import psycopg2
import pytest

from app.services import device_types

TYPES = "/api/v1/device-types"
NUMBERS = [1] * 30_000  # 60 KB of JSON


def declare(client, admin_auth, params_schema):
    name = f"bomb-{uuid.uuid4().hex[:8]}"
    response = client.put(f"{TYPES}/{name}", json={"commands": {"load": {"params": params_schema}}},
                          headers=admin_auth)
    return name, response


class Timed:
    """One request run on its own thread: its wall time and the CPU time of the thread that served it (in-process,
    the request runs on the calling thread, so thread time is the server's time for it, not the machine's load)."""

    def __init__(self, call):
        self.call, self.response, self.wall, self.cpu = call, None, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        started, cpu = time.monotonic(), time.thread_time()
        self.response = self.call()
        self.cpu, self.wall = time.thread_time() - cpu, time.monotonic() - started

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(120)
        assert not self.thread.is_alive(), "the request did not finish within 120 s"

    def running(self) -> bool:
        return self.thread.is_alive()


def round_trips_beside(app, auth, make_device, timed: Timed) -> list[float]:
    """Submit commands to another (free-form) device while `timed` runs; their latencies."""
    other = make_device(device_type=f"free-{uuid.uuid4().hex[:6]}")["device_id"]
    client = app.test_client()
    latencies = []
    while timed.running() or not latencies:
        started = time.monotonic()
        response = client.post(f"/api/v1/devices/{other}/command", json={"command": "ping", "ttl_ms": 60_000},
                               headers=auth)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 202, response.json
    return latencies


BOMBS = {
    # jsonschema tested each index against a list of evaluated indexes: quadratic, ~4.5 s of CPU.
    "unevaluated items next to items": (
        {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"},
                                                "unevaluatedItems": False}}},
        {"a": NUMBERS}, 202, None),
    # 600 patterns searched one by one for 5,500 member names: ~7 s of CPU.
    "600 pattern properties": (
        {"type": "object", "properties": {"a": {"type": "object", "patternProperties": {
            f"^p{i}_": {"minimum": 0} for i in range(600)}}}},
        {"a": {f"k{i}": 1 for i in range(5_500)}}, 202, None),
    # every allOf branch re-evaluates every item: ~5 s of CPU (44 s wall); now stopped by the budget.
    "allOf of references to unevaluatedItems": (
        {"type": "object", "$defs": {"u": {"unevaluatedItems": {"type": "number"}}},
         "properties": {"a": {"allOf": [{"$ref": "#/$defs/u"}] * 600}}},
        {"a": NUMBERS}, 422, {"maxSteps", "maxTime"}),
    # each branch's message quoted the 60 KB array, and anyOf kept them all: ~1.5 s of CPU and ~65 MB.
    "anyOf errors quoting the instance": (
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}] * 700}}},
        {"a": NUMBERS}, 422, {"anyOf"}),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_schema_bomb_costs_a_bounded_time_and_other_devices_stay_fast(app, client, admin_auth, auth, make_device,
                                                                         bomb):
    schema, params, status, keywords = BOMBS[bomb]
    name, declared = declare(client, admin_auth, schema)
    assert declared.status_code == 201, declared.json
    device_id = make_device(device_type=name)["device_id"]
    body = {"command": "load", "params": params, "ttl_ms": 60_000}
    assert len(json.dumps(body, separators=(",", ":"))) < 65_536
    submitter = app.test_client()
    with Timed(lambda: submitter.post(f"/api/v1/devices/{device_id}/command", json=body, headers=auth)) as bomb_call:
        latencies = round_trips_beside(app, auth, make_device, bomb_call)
    assert bomb_call.response.status_code == status, bomb_call.response.json
    if keywords:
        assert {e["keyword"] for e in bomb_call.response.json["details"]["errors"]} <= keywords
    assert bomb_call.cpu < 1.5, f"the request used {bomb_call.cpu:.2f} s of server CPU"
    assert bomb_call.wall < 10, f"the request took {bomb_call.wall:.2f} s"
    assert max(latencies) < 2, f"another device's command took {max(latencies):.2f} s beside it"


def test_an_unbounded_unevaluated_schema_is_refused_when_declared(client, admin_auth):
    """`unevaluatedItems` next to 200 references would re-check the whole array against each on every request."""
    schema = {"type": "object", "$defs": {"u": {"items": {"type": "number"}}},
              "properties": {"a": {"allOf": [{"$ref": "#/$defs/u"}] * 200, "unevaluatedItems": False}}}
    _, response = declare(client, admin_auth, schema)
    assert response.status_code == 400 and response.json["code"] == "INVALID_SCHEMA", response.json
    assert "unevaluatedItems" in json.dumps(response.json["details"])


def test_declaring_seven_hundred_references_is_fast(app, admin_auth):
    """The meta-schema check ran through every subschema at ~1 ms each (~0.5 s of CPU for this body)."""
    schema = {"type": "object", "$defs": {"d": {"type": "integer", "minimum": 0}},
              "properties": {"a": {"allOf": [{"$ref": "#/$defs/d"} for _ in range(700)]}}}
    client = app.test_client()
    with Timed(lambda: declare(client, admin_auth, schema)[1]) as put:
        pass
    assert put.response.status_code == 201, put.response.json
    assert put.cpu < 0.3, f"declaring used {put.cpu:.2f} s of server CPU"


def test_validation_does_not_hold_the_device_row_lock(monkeypatch, client, admin_auth, auth, make_device, database):
    """While a command's params are being checked, the relay's heartbeat batch can still update the device row:
    the check runs before the submit transaction locks it. Observed from inside the check: a concurrent UPDATE of
    the row with a short lock_timeout must succeed."""
    name, declared = declare(client, admin_auth, {"type": "object", "properties": {"v": {"type": "integer"}}})
    assert declared.status_code == 201
    device_id = make_device(device_type=name)["device_id"]
    outcomes = []
    real_check = device_types.params_errors

    def check_while_heartbeating(validator, params, prefix):
        conn = psycopg2.connect(database)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = '1s'")
                cur.execute("UPDATE devices SET last_seen = now() WHERE device_id = %s", (device_id,))
                outcomes.append(cur.rowcount)
        except psycopg2.errors.LockNotAvailable:
            outcomes.append("locked")
        finally:
            conn.close()
        return real_check(validator, params, prefix)

    monkeypatch.setattr(device_types, "params_errors", check_while_heartbeating)
    for value in (1, "not an integer"):
        response = client.post(f"/api/v1/devices/{device_id}/command",
                               json={"command": "load", "params": {"v": value}}, headers=auth)
        assert response.status_code == (202 if value == 1 else 422), response.json
    assert outcomes == [1, 1], outcomes
