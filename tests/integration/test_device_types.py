"""Device types over HTTP on real PostgreSQL: declare, read, replace, delete; conditional requests; scopes; schemas
refused with INVALID_SCHEMA (docs/device-types.md)."""

import threading
import uuid

import pytest

from tests.conftest import unique_id
from tests.support.services import wait_for

TYPES = "/api/v1/device-types"
THERMOSTAT = {
    "description": "A room thermostat",
    "commands": {
        "set_temperature": {
            "description": "Set the target temperature.",
            "params": {"type": "object", "properties": {"value": {"type": "number", "minimum": 5, "maximum": 35}},
                       "required": ["value"], "additionalProperties": False},
            "result": {"type": "object", "properties": {"target": {"type": "number"}}},
            "idempotent": True,
        },
        "read": {"params": {"type": "object", "additionalProperties": False}, "safe": True},
    },
}


def type_name(prefix="type"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def declared(client, admin_auth):
    """Declare a type (THERMOSTAT unless given); returns (name, 201 body)."""

    def declare(body=None, name=None):
        name = name or type_name()
        response = client.put(f"{TYPES}/{name}", json=body or THERMOSTAT, headers=admin_auth)
        assert response.status_code == 201, response.json
        return name, response.json

    return declare


def test_put_creates_then_replaces_with_etag_and_defaults(client, admin_auth):
    name = type_name()
    created = client.put(f"{TYPES}/{name}", json=THERMOSTAT, headers=admin_auth)
    assert created.status_code == 201
    assert created.headers["ETag"] == '"1"' and created.headers["Location"].endswith(f"{TYPES}/{name}")
    body = created.json
    assert body["device_type"] == name and body["description"] == "A room thermostat" and body["version"] == 1
    assert body["created_at"] and body["updated_at"]
    assert body["commands"]["set_temperature"] == {**THERMOSTAT["commands"]["set_temperature"], "safe": False}
    assert body["commands"]["read"] == {"description": "", "params": {"type": "object", "additionalProperties": False},
                                        "safe": True, "idempotent": False}
    assert "result" not in body["commands"]["read"]
    # Read back as written: commands and schema keywords keep their order.
    assert list(body["commands"]) == ["set_temperature", "read"]
    assert list(body["commands"]["set_temperature"]["params"]) == ["type", "properties", "required",
                                                                   "additionalProperties"]

    changed = {**THERMOSTAT, "description": "Version two"}
    replaced = client.put(f"{TYPES}/{name}", json=changed, headers=admin_auth)
    assert replaced.status_code == 200 and replaced.json["version"] == 2 and replaced.headers["ETag"] == '"2"'
    assert replaced.json["created_at"] == body["created_at"] and replaced.json["description"] == "Version two"

    # Putting what is already there changes nothing: same version, same ETag (idempotent PUT).
    again = client.put(f"{TYPES}/{name}", json=changed, headers=admin_auth)
    assert again.status_code == 200 and again.json["version"] == 2
    assert again.json["updated_at"] == replaced.json["updated_at"]


def test_command_without_params_takes_none(client, admin_auth, declared):
    name, body = declared({"commands": {"reboot": {}}})
    assert body["description"] == ""
    assert body["commands"]["reboot"]["params"] == {"type": "object", "additionalProperties": False}


def test_get_has_etag_and_answers_304_when_unchanged(client, auth, declared):
    name, body = declared()
    response = client.get(f"{TYPES}/{name}", headers=auth)
    assert response.status_code == 200 and response.json == body and response.headers["ETag"] == '"1"'
    not_modified = client.get(f"{TYPES}/{name}", headers={**auth, "If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304 and not_modified.headers["ETag"] == '"1"' and not_modified.data == b""
    assert client.get(f"{TYPES}/{name}", headers={**auth, "If-None-Match": '"7"'}).status_code == 200


@pytest.mark.parametrize("name", ["no-such-type", "bad name", "x" * 65])
def test_unknown_or_impossible_type_is_404(client, auth, admin_auth, name):
    for method, headers in (("GET", auth), ("DELETE", admin_auth)):
        response = client.open(f"{TYPES}/{name}", method=method, headers=headers)
        assert response.status_code == 404 and response.json["code"] == "DEVICE_TYPE_NOT_FOUND", response.json


def test_if_match_is_honoured_and_412_when_the_type_does_not_exist(client, admin_auth, declared):
    name, _ = declared()
    stale = client.put(f"{TYPES}/{name}", json={**THERMOSTAT, "description": "x"},
                       headers={**admin_auth, "If-Match": '"9"'})
    assert stale.status_code == 412 and stale.json["code"] == "PRECONDITION_FAILED"
    assert stale.json["details"]["current_etag"] == '"1"'
    fresh = client.put(f"{TYPES}/{name}", json={**THERMOSTAT, "description": "x"},
                       headers={**admin_auth, "If-Match": '"1"'})
    assert fresh.status_code == 200 and fresh.json["version"] == 2
    assert client.put(f"{TYPES}/{name}", json=THERMOSTAT, headers={**admin_auth, "If-Match": "*"}).status_code == 200

    missing = type_name()
    for header in ('"1"', "*"):
        response = client.put(f"{TYPES}/{missing}", json=THERMOSTAT, headers={**admin_auth, "If-Match": header})
        assert response.status_code == 412 and response.json["details"]["current_etag"] is None, header
    assert client.get(f"{TYPES}/{missing}", headers=admin_auth).status_code == 404  # nothing was created

    # If-None-Match: * means "create only".
    create_only = {**admin_auth, "If-None-Match": "*"}
    assert client.put(f"{TYPES}/{name}", json=THERMOSTAT, headers=create_only).status_code == 412
    assert client.put(f"{TYPES}/{missing}", json=THERMOSTAT, headers=create_only).status_code == 201


def test_list_pages_by_name(client, auth, declared):
    prefix = f"page-{uuid.uuid4().hex[:6]}"
    names = sorted(declared(name=f"{prefix}-{i}")[0] for i in range(3))
    everything = client.get(f"{TYPES}?limit=1000", headers=auth).json
    listed = [t["device_type"] for t in everything["device_types"]]
    assert listed == sorted(listed) and set(names) <= set(listed)
    assert everything["total"] == len(listed) and everything["limit"] == 1000 and everything["offset"] == 0
    start = listed.index(names[0])
    page = client.get(f"{TYPES}?limit=2&offset={start}", headers=auth).json
    assert [t["device_type"] for t in page["device_types"]] == names[:2]
    assert page["total"] == everything["total"] and page["limit"] == 2 and page["offset"] == start
    assert client.get(f"{TYPES}?limit=0", headers=auth).status_code == 400


def test_delete_204_then_404_and_409_while_devices_have_it(client, admin_auth, declared, make_device):
    name, _ = declared()
    device = make_device(device_type=name)
    in_use = client.delete(f"{TYPES}/{name}", headers=admin_auth)
    assert in_use.status_code == 409 and in_use.json["code"] == "DEVICE_TYPE_IN_USE"
    assert in_use.json["details"] == {"device_type": name, "devices": 1}
    client.patch(f"/api/v1/devices/{device['device_id']}", json={"device_type": "other"}, headers=admin_auth)
    assert client.delete(f"{TYPES}/{name}", headers={**admin_auth, "If-Match": '"5"'}).status_code == 412
    assert client.delete(f"{TYPES}/{name}", headers=admin_auth).status_code == 204
    assert client.get(f"{TYPES}/{name}", headers=admin_auth).status_code == 404
    assert client.delete(f"{TYPES}/{name}", headers=admin_auth).status_code == 404


def waiting_on_a_lock(db, statement_start: str) -> bool:
    """Whether another session of this database is blocked on a lock in a statement starting so."""

    def query(cur):
        cur.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE %s", (statement_start + "%",))
        return cur.fetchone()["n"]

    return db.transaction(query) > 0


def run_in_thread(work):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", work()), daemon=True)
    thread.start()
    return thread, result


def test_delete_waits_for_a_registration_in_flight_and_then_refuses(app, admin_auth, declared, db):
    """A device being registered with the type (its transaction holds the type's row, app/services/registry.py)
    makes a concurrent DELETE wait, then count it: 409, never a 204 that leaves the device behind."""
    from app.services.registry import hold_type

    name, _ = declared()
    with db.connection() as conn:
        with conn.cursor() as cur:
            hold_type(cur, name)
            cur.execute("INSERT INTO devices (device_id, name, device_type, secret_hash) VALUES (%s, 'x', %s, 'x')",
                        (unique_id("inflight"), name))
            thread, result = run_in_thread(lambda: app.test_client().delete(f"{TYPES}/{name}", headers=admin_auth))
            wait_for(lambda: waiting_on_a_lock(db, "SELECT version FROM device_types"), timeout=10,
                     message="the DELETE waiting for the registration")
        conn.commit()
    thread.join(10)
    assert result["value"].status_code == 409, result["value"].json


def test_a_registration_waits_for_a_delete_in_flight_and_then_finds_the_type_gone(app, admin_auth, declared, db):
    name, _ = declared()
    device_id = unique_id("after")
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM device_types WHERE name = %s FOR UPDATE", (name,))
            cur.execute("DELETE FROM device_types WHERE name = %s", (name,))
            body = {"device_id": device_id, "name": "late", "device_type": name}
            thread, result = run_in_thread(
                lambda: app.test_client().post("/api/v1/devices", json=body, headers=admin_auth))
            wait_for(lambda: waiting_on_a_lock(db, "SELECT 1 FROM device_types"), timeout=10,
                     message="the registration waiting for the DELETE")
        conn.commit()
    thread.join(10)
    assert result["value"].status_code == 201
    # Its type is undeclared now: commands to it are free-form again.
    command = app.test_client().post(f"/api/v1/devices/{device_id}/command", json={"command": "anything"},
                                     headers=admin_auth)
    assert command.status_code == 202, command.json


def test_scopes_admin_to_write_device_read_to_read(client, token_for, declared):
    name, _ = declared()
    reader = {"Authorization": f"Bearer {token_for('device:read')}"}
    writer = {"Authorization": f"Bearer {token_for('device:write device:command')}"}
    assert client.get(f"{TYPES}/{name}", headers=reader).status_code == 200
    assert client.get(TYPES, headers=reader).status_code == 200
    for method in ("PUT", "DELETE"):
        response = client.open(f"{TYPES}/{name}", method=method, json=THERMOSTAT, headers=writer)
        assert response.status_code == 403 and response.json["details"] == {"required_scope": "admin"}
    assert client.get(TYPES, headers={"Authorization": f"Bearer {token_for('device:command')}"}).status_code == 403
    assert client.get(TYPES).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"description": "x"}, "commands"),
    ({"commands": {"bad name": {}}}, "commands.bad name.[key]"),
    ({"commands": {"x": {"safe": "yes"}}}, "commands.x.safe"),
    ({"commands": {"x": {"title": "unknown field"}}}, "commands.x.title"),
    ({"commands": {f"c{i}": {} for i in range(65)}}, "commands"),
    ({"description": "\x1b[31m", "commands": {}}, "description"),
    ({"description": "d" * 1025, "commands": {}}, "description"),
])
def test_malformed_declarations_are_400_validation_errors(client, admin_auth, body, field):
    response = client.put(f"{TYPES}/{type_name()}", json=body, headers=admin_auth)
    assert response.status_code == 400 and response.json["code"] == "VALIDATION_ERROR", response.json
    assert field in response.json["details"], response.json["details"]


def test_a_bad_type_name_cannot_be_declared(client, admin_auth):
    for name in ("has space", "x" * 65, "é"):
        response = client.put(f"{TYPES}/{name}", json=THERMOSTAT, headers=admin_auth)
        assert response.status_code == 400 and response.json["details"] == {
            "device_type": "must be 1-64 characters of A-Z a-z 0-9 . _ : -"}


def deep_schema(levels):
    schema = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "not": schema}
    return schema


@pytest.mark.parametrize("schema, pointer, words", [
    ({"type": "array"}, "", "root of the schema"),
    (True, "", "root of the schema"),
    ({"type": "object", "minimum": "x"}, "/minimum", "not a valid JSON Schema"),
    ({"type": "object", "$ref": "https://example.com/remote.json"}, "/$ref", "leaves the document"),
    ({"type": "object", "properties": {"a": {"pattern": "(a)\\1"}}}, "/properties/a/pattern", "linear-time"),
    ({"type": "object", "properties": {"a": {"$ref": "#"}}}, "/properties/a/$ref", "recursive"),
    ({"type": "object", "description": "x" * 17_000}, "", "bytes of JSON"),
    (deep_schema(20), "/not" * 16, "deeper than 16"),
])
def test_hostile_or_invalid_schemas_are_400_invalid_schema_naming_command_and_problem(client, admin_auth, schema,
                                                                                      pointer, words):
    name = type_name()
    for kind in ("params", "result"):
        body = {"commands": {"ok": {}, "bad": {kind: schema}}}
        response = client.put(f"{TYPES}/{name}", json=body, headers=admin_auth)
        assert response.status_code == 400 and response.json["code"] == "INVALID_SCHEMA", response.json
        details = response.json["details"]
        assert details["command"] == "bad" and details["schema"] == kind and details["pointer"] == pointer
        assert words in details["problem"] and "'bad'" in response.json["error"]
    assert client.get(f"{TYPES}/{name}", headers=admin_auth).status_code == 404  # nothing stored


def test_a_body_over_the_size_limit_is_413(client, admin_auth):
    big = {"commands": {f"c{i}": {"description": "x" * 1000} for i in range(64)}}
    response = client.put(f"{TYPES}/{type_name()}", json=big, headers=admin_auth)
    assert response.status_code == 413 and response.json["code"] == "PAYLOAD_TOO_LARGE"
