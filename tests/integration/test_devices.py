"""The device registry over HTTP on a real database (docs/api.md, "Devices")."""

import threading

import pytest

from tests.conftest import basic, unique_id

DEVICES = "/api/v1/devices"


def count_devices(db, device_id):
    def query(cur):
        cur.execute("SELECT count(*) AS n FROM devices WHERE device_id = %s", (device_id,))
        return cur.fetchone()["n"]

    return db.transaction(query)


# --- create ---------------------------------------------------------------------------------------------


def test_register_returns_device_secret_location_and_etag(client, auth):
    device_id = unique_id()
    body = {"device_id": device_id, "name": "Boiler", "device_type": "thermostat", "capabilities": ["temp", "set_temp"],
            "location": "Basement", "metadata": {"floor": -1}}
    r = client.post(DEVICES, json=body, headers=auth)
    assert r.status_code == 201
    assert r.headers["Location"] == f"{DEVICES}/{device_id}"
    assert r.headers["ETag"] == '"1"'
    device = r.json
    assert device["status"] == "pending" and device["version"] == 1 and device["last_seen"] is None
    assert device["capabilities"] == ["temp", "set_temp"] and device["metadata"] == {"floor": -1}
    assert len(device["device_secret"]) >= 32
    got = client.get(f"{DEVICES}/{device_id}", headers=auth).json
    assert "device_secret" not in got and "secret_hash" not in got


def test_register_alias_and_generated_id(client, auth):
    r = client.post(f"{DEVICES}/register", json={"name": "No id", "device_type": "sensor"}, headers=auth)
    assert r.status_code == 201 and r.json["device_id"].startswith("dev-")


def test_duplicate_id_is_409(client, auth, make_device):
    device = make_device()
    r = client.post(DEVICES, json={"device_id": device["device_id"], "name": "x", "device_type": "y"}, headers=auth)
    assert r.status_code == 409 and r.json["code"] == "DEVICE_EXISTS"


@pytest.mark.parametrize(
    "body, bad_fields",
    [
        ({"device_type": "sensor"}, {"name"}),
        ({"name": 5, "device_type": "sensor"}, {"name"}),
        ({"name": "x", "device_type": "sensor", "unknown": 1}, {"unknown"}),
        ({"name": "x" * 257, "device_type": "sensor"}, {"name"}),
        ({"name": "x", "device_type": "sensor", "device_id": "bad id!"}, {"device_id"}),
        ({"name": "x", "device_type": "sensor", "device_id": "d" * 129}, {"device_id"}),
        ({"name": "x", "device_type": "sensor", "capabilities": "temp"}, {"capabilities"}),
        ({"name": "x", "device_type": "sensor", "metadata": []}, {"metadata"}),
        ({"name": "line\nbreak", "device_type": 7}, {"name", "device_type"}),
    ],
)
def test_invalid_registration_lists_each_bad_field_and_writes_nothing(client, auth, db, body, bad_fields):
    device_id = body.get("device_id") if isinstance(body.get("device_id"), str) else None
    r = client.post(DEVICES, json=body, headers=auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR"
    assert {key.split(".")[0] for key in r.json["details"]} == bad_fields
    if device_id:
        assert count_devices(db, device_id) == 0


@pytest.mark.parametrize("bad", [".lead", "trail.", "dou..ble", ".", "..", "a...b"])
def test_ids_that_would_make_an_empty_nats_subject_token_are_refused(client, auth, db, bad):
    device_id = bad.replace("lead", unique_id()) if "lead" in bad else bad
    r = client.post(DEVICES, json={"name": "x", "device_type": "sensor", "device_id": device_id}, headers=auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR"
    assert set(r.json["details"]) == {"device_id"} and "'..'" in r.json["details"]["device_id"]
    assert count_devices(db, device_id) == 0


@pytest.mark.parametrize("template", ["sensor.{}", "a.b.c.{}", "plant-3:line_2.{}", "{}:x-y_z"])
def test_ids_with_dots_colons_dashes_and_underscores_register(client, auth, template):
    device_id = template.format(unique_id())
    r = client.post(DEVICES, json={"name": "x", "device_type": "sensor", "device_id": device_id}, headers=auth)
    assert r.status_code == 201 and r.json["device_id"] == device_id
    assert client.get(f"{DEVICES}/{device_id}", headers=auth).json["device_id"] == device_id


# --- list -----------------------------------------------------------------------------------------------


@pytest.fixture()
def fleet(client, auth, make_device):
    kind = unique_id("type")
    a = make_device(device_type=kind, capabilities=["temp"])
    b = make_device(device_type=kind, capabilities=["temp", "humidity"])
    c = make_device(device_type=kind, capabilities=["light"])
    secret = b["device_secret"]
    client.post(f"{DEVICES}/{b['device_id']}/heartbeat", headers=basic(b["device_id"], secret))
    return kind, a, b, c


def ids(response):
    return [d["device_id"] for d in response.json["devices"]]


def test_list_filters_by_type_capability_and_status(client, auth, fleet):
    kind, a, b, c = fleet
    r = client.get(f"{DEVICES}?type={kind}", headers=auth)
    assert r.status_code == 200 and ids(r) == [a["device_id"], b["device_id"], c["device_id"]]
    assert r.json["total"] == 3 and r.json["limit"] == 100 and r.json["offset"] == 0
    assert ids(client.get(f"{DEVICES}?type={kind}&capability=temp", headers=auth)) == [a["device_id"], b["device_id"]]
    assert ids(client.get(f"{DEVICES}?type={kind}&status=online", headers=auth)) == [b["device_id"]]
    assert ids(client.get(f"{DEVICES}?type={kind}&status=pending", headers=auth)) == [a["device_id"], c["device_id"]]


def test_list_pages_with_limit_and_offset(client, auth, fleet):
    kind, a, b, c = fleet
    r = client.get(f"{DEVICES}?type={kind}&limit=2&offset=1", headers=auth)
    assert ids(r) == [b["device_id"], c["device_id"]] and r.json["total"] == 3
    r = client.get(f"{DEVICES}?type={kind}&limit=2&offset=5", headers=auth)
    assert ids(r) == [] and r.json["total"] == 3


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "offset=-1", "status=sleeping"])
def test_list_rejects_bad_query(client, auth, query):
    r = client.get(f"{DEVICES}?{query}", headers=auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR" and r.json["details"]


def test_sql_metacharacters_in_filters_are_just_text(client, auth, fleet):
    for value in ("' OR 1=1 --", "x'; DROP TABLE devices; --", "%", "\\"):
        r = client.get(DEVICES, query_string={"type": value}, headers=auth)
        assert r.status_code == 200 and r.json["total"] == 0
    assert client.get(f"{DEVICES}?type={fleet[0]}", headers=auth).json["total"] == 3


# --- get / update / delete ------------------------------------------------------------------------------


def test_get_unknown_and_impossible_ids_are_404(client, auth):
    for device_id in ("no-such-device", "bad%20id", "x" * 300):
        r = client.get(f"{DEVICES}/{device_id}", headers=auth)
        assert r.status_code == 404 and r.json["code"] == "DEVICE_NOT_FOUND"


def test_get_honours_if_none_match(client, auth, make_device):
    device = make_device()
    r = client.get(f"{DEVICES}/{device['device_id']}", headers={**auth, "If-None-Match": '"1"'})
    assert r.status_code == 304 and r.headers["ETag"] == '"1"'


def test_patch_changes_only_given_fields_and_bumps_version(client, auth, make_device):
    device = make_device(capabilities=["a"], metadata={"k": 1})
    r = client.patch(f"{DEVICES}/{device['device_id']}", json={"name": "Renamed", "metadata": {"k": 2}}, headers=auth)
    assert r.status_code == 200
    assert r.json["name"] == "Renamed" and r.json["metadata"] == {"k": 2} and r.json["capabilities"] == ["a"]
    assert r.json["version"] == 2 and r.headers["ETag"] == '"2"'


def test_patch_with_stale_if_match_is_412_and_changes_nothing(client, auth, make_device):
    device = make_device()
    path = f"{DEVICES}/{device['device_id']}"
    assert client.patch(path, json={"name": "v2"}, headers={**auth, "If-Match": '"1"'}).status_code == 200
    r = client.patch(path, json={"name": "v3"}, headers={**auth, "If-Match": '"1"'})
    assert r.status_code == 412 and r.json["code"] == "PRECONDITION_FAILED"
    assert client.get(path, headers=auth).json["name"] == "v2"
    assert client.patch(path, json={"name": "v3"}, headers={**auth, "If-Match": "garbage"}).status_code == 412
    assert client.patch(path, json={"name": "v3"}, headers={**auth, "If-Match": "*"}).status_code == 200


def test_racing_patches_with_the_same_if_match_only_one_wins(app, auth, make_device):
    device = make_device()
    path = f"{DEVICES}/{device['device_id']}"
    statuses, barrier = [], threading.Barrier(8)

    def patch(n):
        local = app.test_client()
        barrier.wait()
        statuses.append(local.patch(path, json={"name": f"racer-{n}"}, headers={**auth, "If-Match": '"1"'}).status_code)

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [412] * 7


def test_put_replaces_every_mutable_field(client, auth, make_device):
    device = make_device(capabilities=["a"], location="Hall", metadata={"k": 1})
    r = client.put(f"{DEVICES}/{device['device_id']}", json={"name": "New", "device_type": "camera"}, headers=auth)
    assert r.status_code == 200
    assert (r.json["name"], r.json["device_type"], r.json["capabilities"], r.json["location"], r.json["metadata"]) == (
        "New", "camera", [], None, {})
    r = client.put(f"{DEVICES}/{device['device_id']}", json={"name": "Only name"}, headers=auth)
    assert r.status_code == 400 and "device_type" in r.json["details"]


@pytest.mark.parametrize("body", [{"name": None}, {"capabilities": [1]}, {"status": "online"}, {"version": 9}])
def test_patch_rejects_bad_fields_and_writes_nothing(client, auth, make_device, body):
    device = make_device()
    r = client.patch(f"{DEVICES}/{device['device_id']}", json=body, headers=auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR"
    assert client.get(f"{DEVICES}/{device['device_id']}", headers=auth).json["version"] == 1


def test_update_and_delete_unknown_device_is_404(client, auth):
    assert client.patch(f"{DEVICES}/ghost-device", json={"name": "x"}, headers=auth).status_code == 404
    assert client.delete(f"{DEVICES}/ghost-device", headers=auth).status_code == 404


def test_delete_removes_device(client, auth, make_device):
    device = make_device()
    assert client.delete(f"{DEVICES}/{device['device_id']}", headers=auth).status_code == 204
    assert client.get(f"{DEVICES}/{device['device_id']}", headers=auth).status_code == 404


# --- heartbeat and offline --------------------------------------------------------------------------------


def test_heartbeat_with_device_basic_auth_makes_device_online(client, auth, make_device):
    device = make_device()
    r = client.post(f"{DEVICES}/{device['device_id']}/heartbeat",
                    headers=basic(device["device_id"], device["device_secret"]))
    assert r.status_code == 200 and r.json["status"] == "online" and r.json["last_seen"]
    assert r.json["version"] == 1  # telemetry does not change the ETag


def test_heartbeat_with_bearer_scope_and_error_status(client, auth, make_device):
    device = make_device()
    r = client.post(f"{DEVICES}/{device['device_id']}/heartbeat", json={"status": "error", "temp": 80}, headers=auth)
    assert r.status_code == 200 and r.json["status"] == "error"


def test_heartbeat_rejects_wrong_secret_other_device_and_bad_status(client, auth, make_device):
    a, b = make_device(), make_device()
    path = f"{DEVICES}/{a['device_id']}/heartbeat"
    assert client.post(path, headers=basic(a["device_id"], "wrong")).status_code == 401
    assert client.post(path, headers=basic(b["device_id"], b["device_secret"])).status_code == 403
    r = client.post(path, json={"status": "sleeping"}, headers=basic(a["device_id"], a["device_secret"]))
    assert r.status_code == 400
    assert client.get(f"{DEVICES}/{a['device_id']}", headers=auth).json["status"] == "pending"


def test_stale_heartbeat_reads_offline_everywhere_before_any_sweeper(client, auth, db, make_device):
    device = make_device(device_type=unique_id("type"))
    device_id = device["device_id"]
    client.post(f"{DEVICES}/{device_id}/heartbeat", headers=basic(device_id, device["device_secret"]))
    db.transaction(lambda cur: cur.execute(
        "UPDATE devices SET last_seen = now() - interval '91 seconds' WHERE device_id = %s", (device_id,)))
    assert client.get(f"{DEVICES}/{device_id}", headers=auth).json["status"] == "offline"
    by_type = f"{DEVICES}?type={device['device_type']}"
    assert ids(client.get(by_type + "&status=offline", headers=auth)) == [device_id]
    assert ids(client.get(by_type + "&status=online", headers=auth)) == []


def age_heartbeat(db, device_id: str, seconds: int) -> None:
    db.transaction(lambda cur: cur.execute(
        "UPDATE devices SET last_seen = now() - make_interval(secs => %s) WHERE device_id = %s", (seconds, device_id)))


def test_a_device_that_reported_error_goes_offline_when_its_heartbeats_stop(client, auth, db, make_device):
    """`error` is a live device reporting a fault; silence makes it `offline` like an `online` one: in get, list,
    the list filter, and the qos 0 check (503 DEVICE_OFFLINE instead of a send no one will receive)."""
    device = make_device(device_type=unique_id("type"))
    device_id = device["device_id"]
    beat = client.post(f"{DEVICES}/{device_id}/heartbeat", json={"status": "error"},
                       headers=basic(device_id, device["device_secret"]))
    assert beat.json["status"] == "error"
    qos0 = {"command": "reset", "qos": 0}
    assert client.post(f"{DEVICES}/{device_id}/command", json=qos0, headers=auth).status_code == 202  # still alive

    age_heartbeat(db, device_id, 91)
    assert client.get(f"{DEVICES}/{device_id}", headers=auth).json["status"] == "offline"
    by_type = f"{DEVICES}?type={device['device_type']}"
    assert ids(client.get(by_type + "&status=offline", headers=auth)) == [device_id]
    assert ids(client.get(by_type + "&status=error", headers=auth)) == []
    refused = client.post(f"{DEVICES}/{device_id}/command", json=qos0, headers=auth)
    assert refused.status_code == 503 and refused.json["code"] == "DEVICE_OFFLINE"
    assert refused.json["details"]["device_status"] == "offline"
    assert client.post(f"{DEVICES}/{device_id}/command", json={"command": "reset"}, headers=auth).status_code == 202

    again = client.post(f"{DEVICES}/{device_id}/heartbeat", json={"status": "error"},
                        headers=basic(device_id, device["device_secret"]))
    assert again.json["status"] == "error"  # a new heartbeat brings it back as it reports itself


def test_the_offline_sweep_uses_the_heartbeat_index(db):
    """The relay runs the stale-device sweep every few seconds: it must stay an index scan, whatever the status."""
    def plan(cur):
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("EXPLAIN SELECT device_id FROM devices WHERE status IN ('online', 'error') "
                    "AND last_seen < now() - make_interval(secs => 90)")
        return " ".join(row["QUERY PLAN"] for row in cur.fetchall())

    assert "devices_heartbeating_idx" in db.transaction(plan)
