"""Commands to devices of a declared type, through every REST entry point: refused with 422 and RFC 6901 pointers
into the request body, nothing stored or sent, the Idempotency-Key left unused; checks in the documented order."""

import threading
import uuid

import pytest

from app import create_app
from tests.conftest import unique_id
from tests.support.asserting import nonempty

TYPES = "/api/v1/device-types"
POINTS = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "minimum": 5, "maximum": 35},
        "points": {"type": "array", "maxItems": 100,
                   "items": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                             "required": ["x", "y"], "additionalProperties": False}},
        "a/b": {"type": "string"},
        "m~n": {"type": "string"},
        "label": {"type": "string", "pattern": "^(a+)+$"},
    },
    "required": ["value"],
    "additionalProperties": False,
}
DECLARATION = {"commands": {
    "set_temperature": {"params": POINTS},
    "read": {"params": {"type": "object", "additionalProperties": False}, "safe": True},
}}


@pytest.fixture()
def typed_device(client, admin_auth, make_device):
    """A device of a freshly declared type; returns (device_id, type name)."""
    name = f"typed-{uuid.uuid4().hex[:8]}"
    assert client.put(f"{TYPES}/{name}", json=DECLARATION, headers=admin_auth).status_code == 201
    return make_device(device_type=name)["device_id"], name


def stored_commands(db, device_id) -> int:
    def query(cur):
        cur.execute("SELECT count(*) AS n FROM commands WHERE device_id = %s", (device_id,))
        return cur.fetchone()["n"]

    return db.transaction(query)


def stored_keys(db, key) -> int:
    def query(cur):
        cur.execute("SELECT count(*) AS n FROM idempotency_keys WHERE key = %s", (key,))
        return cur.fetchone()["n"]

    return db.transaction(query)


def pointers(response):
    assert response.status_code == 422 and response.json["code"] == "INVALID_PARAMS", response.json
    return [(e["pointer"], e["keyword"]) for e in response.json["details"]["errors"]]


def test_valid_typed_command_is_accepted(client, auth, typed_device):
    device_id, _ = typed_device
    response = client.post(f"/api/v1/devices/{device_id}/command",
                           json={"command": "set_temperature", "params": {"value": 21, "points": [{"x": 1, "y": 2}]}},
                           headers=auth)
    assert response.status_code == 202, response.json


def test_invalid_params_name_nested_members_array_indexes_and_escaped_keys(client, auth, typed_device, db):
    device_id, name = typed_device
    params = {"value": 900, "points": [{"x": 1, "y": 1}, {"x": 2, "y": 2}, {"x": "3", "y": 3}, {"y": 4, "z": 0}],
              "a/b": 1, "m~n": 2, "extra": True}
    response = client.post(f"/api/v1/devices/{device_id}/command",
                           json={"command": "set_temperature", "params": params}, headers=auth)
    assert pointers(response) == [
        ("/params/a~1b", "type"),
        ("/params/extra", "additionalProperties"),
        ("/params/m~0n", "type"),
        ("/params/points/2/x", "type"),
        ("/params/points/3/x", "required"),
        ("/params/points/3/z", "additionalProperties"),
        ("/params/value", "maximum"),
    ]
    details = response.json["details"]
    assert details["device_type"] == name and details["type_version"] == 1 and details["command"] == "set_temperature"
    assert all(error["message"] for error in nonempty(details["errors"]))
    missing = client.post(f"/api/v1/devices/{device_id}/command", json={"command": "set_temperature"}, headers=auth)
    assert pointers(missing) == [("/params/value", "required")]
    assert stored_commands(db, device_id) == 0


def test_unknown_command_lists_the_declared_ones(client, auth, typed_device, db):
    device_id, name = typed_device
    response = client.post(f"/api/v1/devices/{device_id}/command", json={"action": "reboot"}, headers=auth)
    assert response.status_code == 422 and response.json["code"] == "UNKNOWN_COMMAND"
    assert response.json["details"] == {"device_type": name, "type_version": 1, "command": "reboot",
                                        "commands": ["read", "set_temperature"]}
    assert stored_commands(db, device_id) == 0


def test_messages_route_points_under_payload_params(client, auth, typed_device, db):
    device_id, _ = typed_device
    response = client.post("/api/v1/messages", headers=auth, json={
        "destination": device_id, "payload": {"command": "set_temperature", "params": {"value": "hot"}}})
    assert pointers(response) == [("/payload/params/value", "type")]
    # A payload without a command is the command "message", which this type does not declare.
    response = client.post("/api/v1/messages", headers=auth, json={"destination": device_id, "payload": {"x": 1}})
    assert response.status_code == 422 and response.json["details"]["command"] == "message"
    ok = client.post("/api/v1/messages", headers=auth, json={
        "destination": device_id, "payload": {"command": "set_temperature", "params": {"value": 20}}})
    assert ok.status_code == 202
    assert stored_commands(db, device_id) == 1


def test_action_route_takes_the_params_as_body_and_points_from_the_root(client, auth, typed_device, db):
    device_id, _ = typed_device
    url = f"/api/v1/devices/{device_id}/commands"
    response = client.post(f"{url}/set_temperature", json={"value": 2, "points": [{"x": 1, "y": "2"}]}, headers=auth)
    assert pointers(response) == [("/points/0/y", "type"), ("/value", "minimum")]
    assert client.post(f"{url}/set_temperature", json=[1], headers=auth).json["code"] == "VALIDATION_ERROR"
    as_text = {**auth, "Content-Type": "text/plain"}
    assert client.post(f"{url}/set_temperature", data="x", headers=as_text).status_code == 415
    assert client.post(f"{url}/set_temperature?qos=7", json={"value": 20}, headers=auth).status_code == 400
    assert client.post(f"{url}/nope", headers=auth).json["code"] == "UNKNOWN_COMMAND"
    assert stored_commands(db, device_id) == 0

    empty = client.post(f"{url}/read", headers=auth)  # no body: params {}
    assert empty.status_code == 202 and empty.headers["Location"] == f"/api/v1/messages/{empty.json['message_id']}"
    accepted = client.post(f"{url}/set_temperature?qos=2&priority=9&ttl_ms=60000", json={"value": 20}, headers=auth)
    assert accepted.status_code == 202
    message = client.get(accepted.headers["Location"], headers=auth).json
    assert (message["command"], message["params"], message["qos"], message["priority"]) == (
        "set_temperature", {"value": 20}, 2, 9)


def test_action_route_works_free_form_for_undeclared_types(client, auth, make_device):
    device_id = make_device(device_type=f"undeclared-{uuid.uuid4().hex[:6]}")["device_id"]
    response = client.post(f"/api/v1/devices/{device_id}/commands/anything", json={"x": [1, 2]}, headers=auth)
    assert response.status_code == 202
    assert client.get(response.headers["Location"], headers=auth).json["params"] == {"x": [1, 2]}
    assert client.post(f"/api/v1/devices/{unique_id()}/commands/x", headers=auth).status_code == 404


def test_action_route_idempotency_counts_the_query_values(client, auth, typed_device):
    device_id, _ = typed_device
    url = f"/api/v1/devices/{device_id}/commands/set_temperature"
    key = {"Idempotency-Key": f"act-{uuid.uuid4().hex}"}
    first = client.post(f"{url}?priority=3", json={"value": 20}, headers={**auth, **key})
    replay = client.post(f"{url}?priority=3", json={"value": 20}, headers={**auth, **key})
    assert first.status_code == replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json["message_id"] == first.json["message_id"]
    other = client.post(f"{url}?priority=4", json={"value": 20}, headers={**auth, **key})
    assert other.status_code == 409 and other.json["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_a_refused_command_does_not_use_up_its_idempotency_key(client, auth, typed_device, db):
    device_id, _ = typed_device
    key = f"refused-{uuid.uuid4().hex}"
    headers = {**auth, "Idempotency-Key": key}
    url = f"/api/v1/devices/{device_id}/command"
    out_of_range = {"command": "set_temperature", "params": {"value": 99}}
    assert client.post(url, json=out_of_range, headers=headers).status_code == 422
    assert client.post(url, json={"command": "unknown"}, headers=headers).status_code == 422
    assert stored_keys(db, key) == 0 and stored_commands(db, device_id) == 0
    accepted = client.post(url, json={"command": "set_temperature", "params": {"value": 21}}, headers=headers)
    assert accepted.status_code == 202 and "Idempotent-Replayed" not in accepted.headers
    replay = client.post(url, json={"command": "set_temperature", "params": {"value": 21}}, headers=headers)
    assert replay.json["message_id"] == accepted.json["message_id"] and replay.headers["Idempotent-Replayed"] == "true"
    assert stored_commands(db, device_id) == 1


def test_checks_run_in_the_documented_order(hub_env, auth, typed_device, db, client):
    """Body (400), device (404), command and params (422), offline (503), queue (429)."""
    device_id, _ = typed_device
    bad = {"command": "set_temperature", "params": {"value": "x"}, "qos": 0}
    assert client.post(f"/api/v1/devices/{device_id}/command", json={**bad, "qos": 5}, headers=auth).status_code == 400
    assert client.post(f"/api/v1/devices/{unique_id()}/command", json=bad, headers=auth).status_code == 404
    # The device is still pending (never heartbeated): qos 0 would be 503, but bad params come first.
    assert client.post(f"/api/v1/devices/{device_id}/command", json=bad, headers=auth).status_code == 422
    good = {"command": "set_temperature", "params": {"value": 20}, "qos": 0}
    assert client.post(f"/api/v1/devices/{device_id}/command", json=good, headers=auth).json["code"] == "DEVICE_OFFLINE"

    small_queue = create_app({**hub_env, "MAX_PENDING_COMMANDS_PER_DEVICE": "1"}).test_client()
    good["qos"] = 1
    assert small_queue.post(f"/api/v1/devices/{device_id}/command", json=good, headers=auth).status_code == 202
    bad["qos"] = 1
    assert small_queue.post(f"/api/v1/devices/{device_id}/command", json=bad, headers=auth).status_code == 422
    assert small_queue.post(f"/api/v1/devices/{device_id}/command", json=good, headers=auth).status_code == 429
    assert stored_commands(db, device_id) == 1


def test_devices_of_undeclared_types_stay_free_form(client, auth, make_device):
    device_id = make_device(device_type=f"free-{uuid.uuid4().hex[:6]}")["device_id"]
    response = client.post(f"/api/v1/devices/{device_id}/command",
                           json={"command": "whatever", "params": {"value": 900, "anything": [1]}}, headers=auth)
    assert response.status_code == 202


def test_a_catastrophic_pattern_cannot_stall_the_request(client, auth, typed_device):
    """`^(a+)+$` on 'aaa…a!' would take Python's backtracking re 2^n steps; the hub answers at once."""
    device_id, _ = typed_device
    params = {"value": 20, "label": "a" * 20_000 + "!"}
    response = client.post(f"/api/v1/devices/{device_id}/command",
                           json={"command": "set_temperature", "params": params}, headers=auth)
    assert pointers(response) == [("/params/label", "pattern")]


def test_a_new_type_version_applies_to_the_next_command(hub_env, client, admin_auth, auth, typed_device):
    """Another app (as another worker would) compiled and cached version 1; version 2 still applies at once,
    because the version is read with the device. (tests/process has the same across gunicorn workers.)"""
    device_id, name = typed_device
    other_worker = create_app(hub_env)
    url = f"/api/v1/devices/{device_id}/command"
    assert other_worker.test_client().post(url, json={"command": "read"}, headers=auth).status_code == 202
    stricter = {"commands": {"read": {"params": {"type": "object", "required": ["channel"]}}}}
    assert client.put(f"{TYPES}/{name}", json=stricter, headers=admin_auth).json["version"] == 2
    response = other_worker.test_client().post(url, json={"command": "read"}, headers=auth)
    assert pointers(response) == [("/params/channel", "required")] and response.json["details"]["type_version"] == 2


def test_types_replaced_while_commands_flow_validate_each_command_against_one_version(app, admin_auth, auth,
                                                                                       typed_device, db):
    """Writers alternate the type between a version requiring `a` (odd versions) and one requiring `b` (even),
    while submitters send either. Every answer is 202 or 422 (never 500), and every 422 names a version whose
    schema really refuses those params."""
    device_id, name = typed_device
    requires = {key: {"commands": {"read": {"params": {"type": "object", "properties": {key: {"type": "integer"}},
                                                       "required": [key], "additionalProperties": False}}}}
                for key in ("a", "b")}
    client = app.test_client()
    assert client.put(f"{TYPES}/{name}", json=requires["a"], headers=admin_auth).json["version"] == 2
    # Version 2 requires a; from here on odd versions require b and even versions a.
    stop = threading.Event()
    answers, versions = [], []

    def replace():
        writer = app.test_client()
        for i in range(12):
            key = "b" if i % 2 == 0 else "a"
            response = writer.put(f"{TYPES}/{name}", json=requires[key], headers=admin_auth)
            assert response.status_code == 200
            versions.append(response.json["version"])
        stop.set()

    def submit(key):
        submitter = app.test_client()
        while not stop.is_set():
            response = submitter.post(f"/api/v1/devices/{device_id}/command",
                                      json={"command": "read", "params": {key: 1}, "ttl_ms": 60_000}, headers=auth)
            answers.append((key, response.status_code, response.json))

    threads = [threading.Thread(target=replace)] + [threading.Thread(target=submit, args=(k,)) for k in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert versions == list(range(3, 15))
    assert any(status == 422 for _, status, _ in answers), "no command met a version that refuses it"
    assert answers and {status for _, status, _ in answers} <= {202, 422}, {status for _, status, _ in answers}
    for key, status, body in answers:
        if status == 422:
            version = body["details"]["type_version"]
            refusing_key = "b" if version % 2 == 1 else "a"  # the key this version requires
            assert key != refusing_key, (key, version, body)
            problems = [(e["pointer"], e["keyword"]) for e in body["details"]["errors"]]
            assert ("/params/" + refusing_key, "required") in problems
    # An accepted command is stored with the version it was checked against: one that requires the key it sent
    # (or, when a later PUT moved it on, a version that still accepts it; the PUT cancels it otherwise).
    def stored(cur):
        cur.execute("SELECT message_id, type_version, status, error FROM commands WHERE device_id = %s",
                    (device_id,))
        return {str(row["message_id"]): row for row in cur.fetchall()}

    rows = db.transaction(stored)
    for key, status, body in answers:
        if status == 202:
            row = rows[body["message_id"]]
            if row["status"] == "cancelled":
                assert row["error"] == "type_changed", row
            else:
                assert ("b" if row["type_version"] % 2 == 1 else "a") == key, (key, row)


def test_a_costly_schema_and_params_combination_is_refused_not_stalled(client, admin_auth, auth, make_device, db):
    """A declarable schema (under every size limit) that makes each array item build 700 errors, and a body of
    15,000 items just under 64 KB: refused with maxSteps instead of keeping the worker busy for minutes."""
    name = f"costly-{uuid.uuid4().hex[:8]}"
    items = {"anyOf": [{"required": [f"k{i}"]} for i in range(700)]}
    params = {"type": "object", "properties": {"v": {"type": "array", "items": items}}}
    declaration = {"commands": {"load": {"params": params}}}
    assert client.put(f"{TYPES}/{name}", json=declaration, headers=admin_auth).status_code == 201
    device_id = make_device(device_type=name)["device_id"]
    response = client.post(f"/api/v1/devices/{device_id}/commands/load", json={"v": [{}] * 15_000}, headers=auth)
    assert pointers(response) == [("", "maxSteps")]
    assert stored_commands(db, device_id) == 0


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json_and_never_reach_a_schema(client, auth, typed_device, make_device, db, constant):
    """Python's json accepts them; NaN would pass `minimum`/`maximum`, and PostgreSQL's jsonb refuses them (a 500
    before this check)."""
    for device_id in (typed_device[0], make_device()["device_id"]):
        body = b'{"command": "set_temperature", "params": {"value": ' + constant + b"}}"
        response = client.post(f"/api/v1/devices/{device_id}/command", data=body,
                               headers={**auth, "Content-Type": "application/json"})
        assert response.status_code == 400 and response.json["code"] == "INVALID_JSON", response.json
        assert stored_commands(db, device_id) == 0
