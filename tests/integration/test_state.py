"""Device state over HTTP on real PostgreSQL (docs/state.md): read, desired merge patches, reports, the
per-property timestamp rule, the type's property declarations, size limits, If-Match, and the order of checks."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import basic, unique_id

TYPES = "/api/v1/device-types"
THERMOSTAT_PROPERTIES = {
    "temperature": {"description": "Measured temperature", "schema": {"type": "number"}, "unit": "celsius"},
    "target_temperature": {"schema": {"type": "number", "minimum": 5, "maximum": 35}, "writable": True,
                           "unit": "celsius"},
    "mode": {"schema": {"enum": ["heat", "off"]}, "writable": True, "observable": False},
    "schedule": {"schema": {"type": "object", "properties": {"on": {"type": "string"}},
                            "additionalProperties": False}, "writable": True},
}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture()
def typed_device(client, admin_auth, make_device):
    """A device of a type that declares THERMOSTAT_PROPERTIES; returns the registration body."""
    name = f"thermo-{uuid.uuid4().hex[:8]}"
    response = client.put(f"{TYPES}/{name}", json={"commands": {}, "properties": THERMOSTAT_PROPERTIES},
                          headers=admin_auth)
    assert response.status_code == 201, response.json
    return make_device(device_type=name)


def state_url(device_id: str, tail: str = "") -> str:
    return f"/api/v1/devices/{device_id}/state{tail}"


def report(client, device, reported, timestamp=None, **kwargs):
    body = {"reported": reported}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return client.patch(state_url(device["device_id"], "/reported"), json=body,
                        headers=basic(device["device_id"], device["device_secret"]), **kwargs)


def test_a_new_device_has_an_empty_state_at_version_0(client, auth, make_device):
    device = make_device()
    response = client.get(state_url(device["device_id"]), headers=auth)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"0"'
    assert response.json == {"device_id": device["device_id"], "reported": {}, "desired": {}, "delta": {},
                             "metadata": {"reported": {}, "desired": {}}, "version": 0, "updated_at": None}


def test_the_device_reads_its_own_state_with_basic_auth_and_not_another(client, make_device):
    device, other = make_device(), make_device()
    own = client.get(state_url(device["device_id"]), headers=basic(device["device_id"], device["device_secret"]))
    assert own.status_code == 200
    foreign = client.get(state_url(other["device_id"]), headers=basic(device["device_id"], device["device_secret"]))
    assert foreign.status_code == 403


def test_state_routes_need_their_scopes(client, token_for, make_device):
    device = make_device()
    read_only = {"Authorization": f"Bearer {token_for('device:read')}"}
    assert client.get(state_url(device["device_id"]), headers=read_only).status_code == 200
    assert client.patch(state_url(device["device_id"], "/desired"), json={"a": 1}, headers=read_only).status_code == 403
    assert client.patch(state_url(device["device_id"], "/reported"), json={"reported": {"a": 1}},
                        headers=read_only).status_code == 403
    assert client.get(state_url(device["device_id"])).status_code == 401
    writer = {"Authorization": f"Bearer {token_for('device:write')}"}
    assert client.patch(state_url(device["device_id"], "/reported"), json={"reported": {"a": 1}},
                        headers=writer).status_code == 200


def test_desired_merge_patch_sets_removes_and_merges_nested_members(client, auth, make_device):
    device = make_device()
    url = state_url(device["device_id"], "/desired")
    first = client.patch(url, json={"a": 1, "b": {"x": 1, "y": 2}}, headers=auth)
    assert first.status_code == 200 and first.headers["ETag"] == '"1"'
    assert first.json["desired"] == {"a": 1, "b": {"x": 1, "y": 2}} and first.json["version"] == 1
    assert first.json["delta"] == {"a": 1, "b": {"x": 1, "y": 2}}
    meta = first.json["metadata"]["desired"]["a"]
    assert meta["client_id"] and meta["timestamp"].endswith("Z")
    assert first.json["updated_at"] is not None
    second = client.patch(url, data='{"a": null, "b": {"y": null, "z": 3}}', headers={
        **auth, "Content-Type": "application/merge-patch+json"})
    assert second.status_code == 200, second.json
    assert second.json["desired"] == {"b": {"x": 1, "z": 3}} and second.json["version"] == 2
    assert "a" not in second.json["metadata"]["desired"]


def test_a_patch_that_changes_nothing_keeps_the_version(client, auth, make_device):
    device = make_device()
    url = state_url(device["device_id"], "/desired")
    assert client.patch(url, json={"a": 1}, headers=auth).json["version"] == 1
    again = client.patch(url, json={"a": 1.0}, headers=auth)
    assert again.status_code == 200 and again.json["version"] == 1 and again.headers["ETag"] == '"1"'
    removed_nothing = client.patch(url, json={"nope": None}, headers=auth)
    assert removed_nothing.json["version"] == 1


def test_delta_is_desired_minus_matching_reported(client, auth, make_device):
    device = make_device()
    client.patch(state_url(device["device_id"], "/desired"), json={"a": 1, "b": True, "c": {"k": [1, 2]}},
                 headers=auth)
    reported = report(client, device, {"a": 1.0, "b": 1, "c": {"k": [1, 2]}, "d": 5})
    assert reported.status_code == 200, reported.json
    assert reported.json["delta"] == {"b": True}  # 1 == 1.0, but true != 1; whole values compared
    assert reported.json["version"] == 2


def test_reports_keep_per_property_timestamps_and_ignore_older_ones(client, auth, make_device):
    device = make_device()
    now = dt.datetime.now(dt.UTC)
    first = report(client, device, {"t": 20, "h": 50}, _iso(now - dt.timedelta(seconds=10)))
    assert first.status_code == 200 and first.json["version"] == 1
    assert first.json["metadata"]["reported"]["t"] == {"timestamp": _iso(now - dt.timedelta(seconds=10))}
    # Older for t, newer for h: t keeps its value, h changes.
    mixed = report(client, device, {"t": 19, "h": 55}, _iso(now - dt.timedelta(seconds=20)))
    assert mixed.json["reported"] == {"t": 20, "h": 50}
    assert mixed.json["version"] == 1
    newer = report(client, device, {"h": 55}, _iso(now - dt.timedelta(seconds=5)))
    assert newer.json["reported"] == {"t": 20, "h": 55} and newer.json["version"] == 2
    # An equal timestamp applies.
    equal = report(client, device, {"h": 56}, _iso(now - dt.timedelta(seconds=5)))
    assert equal.json["reported"]["h"] == 56 and equal.json["version"] == 3


def test_a_repeated_value_refreshes_only_its_timestamp(client, make_device):
    device = make_device()
    now = dt.datetime.now(dt.UTC)
    report(client, device, {"t": 20}, _iso(now - dt.timedelta(seconds=10)))
    again = report(client, device, {"t": 20}, _iso(now - dt.timedelta(seconds=2)))
    assert again.json["version"] == 1
    assert again.json["metadata"]["reported"]["t"]["timestamp"] == _iso(now - dt.timedelta(seconds=2))


def test_report_timestamps_default_to_receive_time_and_future_ones_are_capped(client, make_device):
    device = make_device()
    before = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=5)
    plain = report(client, device, {"t": 1})
    stamped = dt.datetime.fromisoformat(plain.json["metadata"]["reported"]["t"]["timestamp"].replace("Z", "+00:00"))
    assert before <= stamped <= dt.datetime.now(dt.UTC)
    future = report(client, device, {"t": 2}, _iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    capped = dt.datetime.fromisoformat(future.json["metadata"]["reported"]["t"]["timestamp"].replace("Z", "+00:00"))
    assert capped <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    # So a report timestamped now still applies after the capped one.
    later = report(client, device, {"t": 3}, _iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)))
    assert later.json["reported"]["t"] == 3


def test_null_in_a_report_removes_the_member_and_its_metadata(client, make_device):
    device = make_device()
    report(client, device, {"t": 1, "h": 2})
    removed = report(client, device, {"t": None})
    assert removed.json["reported"] == {"h": 2} and "t" not in removed.json["metadata"]["reported"]
    assert removed.json["version"] == 2


def test_a_report_is_a_heartbeat(client, auth, make_device):
    device = make_device()
    assert client.get(f"/api/v1/devices/{device['device_id']}", headers=auth).json["status"] == "pending"
    report(client, device, {"t": 1})
    seen = client.get(f"/api/v1/devices/{device['device_id']}", headers=auth).json
    assert seen["status"] == "online" and seen["last_seen"] is not None


def test_if_match_on_desired(client, auth, make_device):
    device = make_device()
    url = state_url(device["device_id"], "/desired")
    client.patch(url, json={"a": 1}, headers=auth)
    stale = client.patch(url, json={"a": 2}, headers={**auth, "If-Match": '"0"'})
    assert stale.status_code == 412 and stale.json["code"] == "PRECONDITION_FAILED"
    fresh = client.patch(url, json={"a": 2}, headers={**auth, "If-Match": '"1"'})
    assert fresh.status_code == 200 and fresh.json["version"] == 2
    assert client.get(state_url(device["device_id"]), headers=auth).json["desired"] == {"a": 2}
    unchanged = client.get(state_url(device["device_id"]), headers={**auth, "If-None-Match": '"2"'})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == '"2"'
    assert client.get(state_url(device["device_id"]), headers={**auth, "If-None-Match": '"1"'}).status_code == 200


def test_concurrent_patches_with_one_if_match_exactly_one_wins(app, auth, make_device):
    device = make_device()
    url = state_url(device["device_id"], "/desired")
    results: list[int] = []
    barrier = threading.Barrier(6)

    def patch(value: int) -> None:
        client = app.test_client()
        barrier.wait()
        results.append(client.patch(url, json={"v": value}, headers={**auth, "If-Match": '"0"'}).status_code)

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [200] + [412] * 5
    final = app.test_client().get(state_url(device["device_id"]), headers=auth).json
    assert final["version"] == 1


def test_bad_bodies_are_400_and_change_nothing(client, auth, make_device):
    device = make_device()
    desired = state_url(device["device_id"], "/desired")
    assert client.patch(desired, json=[1, 2], headers=auth).json["code"] == "VALIDATION_ERROR"
    assert client.patch(desired, data="{", headers={**auth, "Content-Type": "application/json"}).status_code == 400
    assert client.patch(desired, data="a=1", headers={**auth, "Content-Type": "text/plain"}).status_code == 415
    for body in ({"reported": 5}, {"values": {}}, {"reported": {}, "timestamp": "yesterday"}, {}):
        response = client.patch(state_url(device["device_id"], "/reported"), json=body, headers=auth)
        assert response.status_code == 400 and response.json["code"] == "VALIDATION_ERROR", body
    assert client.get(state_url(device["device_id"]), headers=auth).json["version"] == 0


def test_unknown_devices_are_404_after_body_checks(client, auth):
    missing = unique_id("missing")
    assert client.get(state_url(missing), headers=auth).status_code == 404
    response = client.patch(state_url(missing, "/desired"), json={"a": 1}, headers=auth)
    assert response.status_code == 404 and response.json["code"] == "DEVICE_NOT_FOUND"
    assert client.patch(state_url(missing, "/desired"), json=[1], headers=auth).status_code == 400
    assert client.patch(state_url(missing, "/reported"), json={"reported": {"a": 1}}, headers=auth).status_code == 404


def test_a_side_over_max_state_bytes_is_413(client, auth, make_device):
    device = make_device()
    big = "x" * 20_000
    url = state_url(device["device_id"], "/desired")
    assert client.patch(url, json={"a": big}, headers=auth).status_code == 200
    too_big = client.patch(url, json={"b": big}, headers=auth)
    assert too_big.status_code == 413 and too_big.json["code"] == "STATE_TOO_LARGE"
    assert too_big.json["details"]["max_bytes"] == 32768
    assert client.get(state_url(device["device_id"]), headers=auth).json["desired"] == {"a": big}
    reported = report(client, device, {"a": big, "b": big})
    assert reported.status_code == 413


def test_nesting_counts_the_side_as_level_one(client, auth, make_device):
    device = make_device()

    def nested(levels: int):
        value: object = 1
        for _ in range(levels):
            value = {"n": value}
        return value

    url = state_url(device["device_id"], "/desired")
    assert client.patch(url, json={"a": nested(15)}, headers=auth).status_code == 200  # side + 15 = 16 levels
    deep = client.patch(url, json={"b": nested(16)}, headers=auth)
    assert deep.status_code == 413 and deep.json["code"] == "STATE_TOO_LARGE"


def test_typed_devices_accept_only_declared_writable_valid_properties(client, auth, typed_device):
    device_id = typed_device["device_id"]
    url = state_url(device_id, "/desired")
    unknown = client.patch(url, json={"colour": "red", "mode": "heat"}, headers=auth)
    assert unknown.status_code == 422 and unknown.json["code"] == "UNKNOWN_PROPERTY"
    assert unknown.json["details"]["properties"] == sorted(THERMOSTAT_PROPERTIES)
    fixed = client.patch(url, json={"temperature": 20}, headers=auth)
    assert fixed.status_code == 422 and fixed.json["code"] == "PROPERTY_NOT_WRITABLE"
    invalid = client.patch(url, json={"target_temperature": 50, "schedule": {"on": 1, "extra": 2}}, headers=auth)
    assert invalid.status_code == 422 and invalid.json["code"] == "INVALID_VALUE"
    pointers = [error["pointer"] for error in invalid.json["details"]["errors"]]
    assert pointers == ["/schedule/extra", "/schedule/on", "/target_temperature"]
    assert client.patch(url, json={"target_temperature": 21.5, "mode": "heat"}, headers=auth).status_code == 200
    bad_report = report(client, typed_device, {"temperature": "warm"})
    assert bad_report.status_code == 422 and bad_report.json["code"] == "INVALID_VALUE"
    assert bad_report.json["details"]["errors"][0]["pointer"] == "/reported/temperature"
    assert report(client, typed_device, {"colour": 1}).json["code"] == "UNKNOWN_PROPERTY"
    # A device reports read-only properties (writable is about desired only).
    assert report(client, typed_device, {"temperature": 19.5, "target_temperature": 21.5}).status_code == 200


def test_checks_run_in_order_412_then_413_then_422(client, auth, typed_device):
    url = state_url(typed_device["device_id"], "/desired")
    big = {"colour": "x" * 40_000}
    assert client.patch(url, json=big, headers={**auth, "If-Match": '"7"'}).status_code == 412
    assert client.patch(url, json=big, headers=auth).status_code == 413
    assert client.patch(url, json={"colour": "x"}, headers=auth).status_code == 422


def test_declarations_are_checked_and_kept_with_defaults(client, admin_auth, auth):
    name = f"props-{uuid.uuid4().hex[:8]}"
    declared = client.put(f"{TYPES}/{name}", json={"commands": {}, "properties": {
        "level": {"schema": {"type": "integer"}}, "on": {"schema": True, "writable": True, "unit": "bool"}}},
        headers=admin_auth)
    assert declared.status_code == 201, declared.json
    assert declared.json["properties"] == {
        "level": {"description": "", "schema": {"type": "integer"}, "writable": False, "observable": True},
        "on": {"description": "", "schema": True, "writable": True, "observable": True, "unit": "bool"},
    }
    assert client.get(f"{TYPES}/{name}", headers=auth).json["properties"] == declared.json["properties"]
    untouched = client.put(f"{TYPES}/{name}", json={"commands": {}, "properties": {"level": {"schema": {
        "type": "integer"}}, "on": {"schema": True, "writable": True, "unit": "bool"}}}, headers=admin_auth)
    assert untouched.json["version"] == 1
    changed = client.put(f"{TYPES}/{name}", json={"commands": {}, "properties": {}}, headers=admin_auth)
    assert changed.json["version"] == 2 and changed.json["properties"] == {}


@pytest.mark.parametrize("properties, named", [
    ({"1bad": {"schema": {}}}, "1bad"),
    ({"has-dash": {"schema": {}}}, "has-dash"),
    ({"status": {"schema": {}}}, "status"),
    ({"last_seen": {"schema": {}}}, "last_seen"),
    ({"x" * 65: {"schema": {}}}, "x" * 64),
    ({"ok": {"schema": {"type": "nonsense"}}}, "ok"),
    ({"ok": {"schema": {"$ref": "http://example.com/s"}}}, "ok"),
    ({"ok": {"schema": {"type": "string", "pattern": "(?=a)"}}}, "ok"),
    ({"ok": {"schema": {}, "writable": "yes"}}, "ok"),
    ({"ok": {"schema": {}, "colour": 1}}, "ok"),
])
def test_bad_declarations_are_invalid_schema_naming_the_property(client, admin_auth, properties, named):
    response = client.put(f"{TYPES}/{uuid.uuid4().hex[:10]}", json={"commands": {}, "properties": properties},
                          headers=admin_auth)
    assert response.status_code == 400 and response.json["code"] == "INVALID_SCHEMA", response.json
    assert response.json["details"]["property"] == named


def test_at_most_128_properties(client, admin_auth):
    many = {f"p{n}": {"schema": {"type": "number"}} for n in range(129)}
    response = client.put(f"{TYPES}/{uuid.uuid4().hex[:10]}", json={"commands": {}, "properties": many},
                          headers=admin_auth)
    assert response.status_code == 400 and response.json["code"] == "INVALID_SCHEMA"
    del many["p128"]
    assert client.put(f"{TYPES}/{uuid.uuid4().hex[:10]}", json={"commands": {}, "properties": many},
                      headers=admin_auth).status_code == 201


def test_property_schemas_of_any_root_type(client, admin_auth, make_device, auth):
    name = f"any-{uuid.uuid4().hex[:8]}"
    response = client.put(f"{TYPES}/{name}", json={"commands": {}, "properties": {
        "label": {"schema": {"type": "string", "maxLength": 3}, "writable": True},
        "items": {"schema": {"type": "array", "items": {"type": "integer"}}, "writable": True}}}, headers=admin_auth)
    assert response.status_code == 201, response.json
    device = make_device(device_type=name)
    url = state_url(device["device_id"], "/desired")
    assert client.patch(url, json={"label": "abc", "items": [1, 2]}, headers=auth).status_code == 200
    bad = client.patch(url, json={"items": [1, "2"]}, headers=auth)
    assert bad.json["details"]["errors"][0]["pointer"] == "/items/1"


def test_deleting_a_device_deletes_its_state(client, auth, make_device):
    device = make_device()
    report(client, device, {"t": 1})
    assert client.delete(f"/api/v1/devices/{device['device_id']}", headers=auth).status_code == 204
    assert client.get(state_url(device["device_id"]), headers=auth).status_code == 404


# --- history -------------------------------------------------------------------------------------------


def history(client, auth, device_id, **query):
    return client.get(state_url(device_id, "/history"), query_string=query, headers=auth)


def test_history_points_oldest_first_with_paging(client, auth, make_device):
    device = make_device()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
    for n in range(5):
        assert report(client, device, {"t": n, "other": n}, _iso(start + dt.timedelta(seconds=n))).status_code == 200
    report(client, device, {"t": 4}, _iso(start + dt.timedelta(seconds=6)))  # a repeat: no point
    first = history(client, auth, device["device_id"], property="t", limit=2)
    assert first.status_code == 200 and first.headers["ETag"] == '"5"'  # the repeat added no version
    assert first.json["device_id"] == device["device_id"] and first.json["property"] == "t"
    assert first.json["points"] == [{"timestamp": _iso(start), "value": 0},
                                    {"timestamp": _iso(start + dt.timedelta(seconds=1)), "value": 1}]
    second = history(client, auth, device["device_id"], property="t", limit=2, cursor=first.json["next_cursor"])
    assert [p["value"] for p in second.json["points"]] == [2, 3]
    third = history(client, auth, device["device_id"], property="t", limit=2, cursor=second.json["next_cursor"])
    assert [p["value"] for p in third.json["points"]] == [4] and third.json["next_cursor"] is None
    window = history(client, auth, device["device_id"], property="t", **{
        "from": _iso(start + dt.timedelta(seconds=1)), "to": _iso(start + dt.timedelta(seconds=3))})
    assert [p["value"] for p in window.json["points"]] == [1, 2]  # from inclusive, to exclusive


def test_history_ignores_out_of_order_reports_and_keeps_the_report_timestamp(client, auth, make_device):
    device = make_device()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    report(client, device, {"t": 2}, _iso(now - dt.timedelta(seconds=5)))
    report(client, device, {"t": 1}, _iso(now - dt.timedelta(seconds=9)))  # older: ignored, no point
    points = history(client, auth, device["device_id"], property="t").json["points"]
    assert points == [{"timestamp": _iso(now - dt.timedelta(seconds=5)), "value": 2}]


def test_history_buckets_aligned_to_the_epoch(client, auth, make_device):
    device = make_device()
    base = dt.datetime.fromtimestamp((int(dt.datetime.now(dt.UTC).timestamp()) // 60 - 30) * 60, dt.UTC)
    values = [(0, 10), (20, 20), (59, 30), (60, 1), (185, 7), (190, 9)]  # seconds after base, value
    for offset, value in values:
        assert report(client, device, {"t": value}, _iso(base + dt.timedelta(seconds=offset))).status_code == 200
    avg = history(client, auth, device["device_id"], property="t", bucket=60, agg="avg").json
    assert avg["points"] == [{"timestamp": _iso(base), "value": 20},
                             {"timestamp": _iso(base + dt.timedelta(seconds=60)), "value": 1},
                             {"timestamp": _iso(base + dt.timedelta(seconds=180)), "value": 8}]  # empty bucket left out
    assert [p["value"] for p in history(client, auth, device["device_id"], property="t", bucket=60,
                                        agg="min").json["points"]] == [10, 1, 7]
    assert [p["value"] for p in history(client, auth, device["device_id"], property="t", bucket=60,
                                        agg="max").json["points"]] == [30, 1, 9]
    last = history(client, auth, device["device_id"], property="t", bucket=60).json  # no agg: last
    assert [p["value"] for p in last["points"]] == [30, 1, 9]
    page = history(client, auth, device["device_id"], property="t", bucket=60, agg="avg", limit=2).json
    assert len(page["points"]) == 2 and page["next_cursor"]
    rest = history(client, auth, device["device_id"], property="t", bucket=60, agg="avg", limit=2,
                   cursor=page["next_cursor"]).json
    assert rest["points"] == [{"timestamp": _iso(base + dt.timedelta(seconds=180)), "value": 8}]
    assert rest["next_cursor"] is None


def test_history_numeric_aggregates_refuse_non_numbers(client, auth, make_device):
    device = make_device()
    report(client, device, {"mode": "heat"})
    refused = history(client, auth, device["device_id"], property="mode", bucket=60, agg="avg")
    assert refused.status_code == 400 and refused.json["code"] == "VALIDATION_ERROR"
    last = history(client, auth, device["device_id"], property="mode", bucket=60, agg="last")
    assert last.status_code == 200 and last.json["points"][0]["value"] == "heat"


@pytest.mark.parametrize("query", [
    {}, {"property": "t", "limit": 0}, {"property": "t", "limit": 1001}, {"property": "t", "from": "yesterday"},
    {"property": "t", "agg": "sum", "bucket": 60}, {"property": "t", "bucket": 0}, {"property": "t", "agg": "avg"},
    {"property": "t", "cursor": "nonsense"},
])
def test_bad_history_queries_are_400(client, auth, make_device, query):
    device = make_device()
    response = history(client, auth, make_device()["device_id"] if not query else device["device_id"], **query)
    assert response.status_code == 400 and response.json["code"] == "VALIDATION_ERROR", (query, response.json)


def test_history_of_an_unknown_device_is_404(client, auth):
    assert history(client, auth, unique_id("missing"), property="t").status_code == 404


def test_partitions_are_created_ahead_moved_from_default_and_dropped(db, make_device):
    from app.services import state_history

    device = make_device()
    old = dt.datetime(1999, 12, 20, 12, tzinfo=dt.UTC)

    def insert(cur):
        cur.execute("INSERT INTO device_state_history (device_id, property, at, value) VALUES (%s, 't', %s, '1') "
                    "RETURNING tableoid::regclass::text AS part", (device["device_id"], old))
        return cur.fetchone()["part"]

    assert db.transaction(insert) == "device_state_history_default"
    made = state_history.maintain_partitions(db, 168, now=dt.datetime(1999, 12, 22, tzinfo=dt.UTC))
    assert "device_state_history_19991220" in made["created"] and "device_state_history_19991225" in made["created"]

    def where(cur):
        cur.execute("SELECT tableoid::regclass::text AS part FROM device_state_history WHERE device_id = %s",
                    (device["device_id"],))
        return [row["part"] for row in cur.fetchall()]

    assert db.transaction(where) == ["device_state_history_19991220"]
    later = state_history.maintain_partitions(db, 168, now=dt.datetime(2000, 1, 20, tzinfo=dt.UTC))
    assert "device_state_history_19991220" in later["dropped"]
    assert db.transaction(where) == []
    cleaned = state_history.maintain_partitions(db, 168)  # today: the test's old partitions go, nothing recent
    assert set(later["created"]) <= set(cleaned["dropped"])
    cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=168)).strftime("%Y%m%d")
    assert [name for name in cleaned["dropped"] if name[-8:] >= cutoff] == []
    assert not cleaned["created"]  # the migration made today's and the next days' partitions


# --- the delta, property-based, through the API ---------------------------------------------------------

_SCALAR = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([1.0, 2.5]) | st.sampled_from(["x", "y"])
_VALUE = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
    st.sampled_from(["p", "q"]), inner, max_size=2), max_leaves=5)
_PATCH = st.dictionaries(st.sampled_from(["a", "b", "c"]), _VALUE, min_size=1, max_size=3)
_STEPS = st.lists(st.tuples(st.sampled_from(["desired", "reported"]), _PATCH), min_size=1, max_size=4)


def _merge(target, patch):
    """RFC 7396, written again here as the reference the hub is compared with."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _same(a, b) -> bool:
    """JSON equality: numbers by value (1 == 1.0), booleans apart from numbers, key order ignored."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_delta_is_always_desired_minus_matching_reported(client, auth, make_device, steps):
    device = make_device()
    desired: dict = {}
    reported: dict = {}
    for side, patch in steps:
        if side == "desired":
            response = client.patch(state_url(device["device_id"], "/desired"), json=patch, headers=auth)
            desired = _merge(desired, patch)
        else:
            response = report(client, device, patch)
            reported = _merge(reported, patch)
        assert response.status_code == 200, response.json
    state = client.get(state_url(device["device_id"]), headers=auth).json
    assert _same(state["desired"], desired) and _same(state["reported"], reported)
    expected = {k: v for k, v in desired.items() if k not in reported or not _same(reported[k], v)}
    assert _same(state["delta"], expected)


# --- events and audit ------------------------------------------------------------------------------------


def test_every_state_change_is_one_event_and_desired_changes_are_audited(client, auth, make_device,
                                                                         api_client_factory):
    def poll(**query):
        response = client.get("/api/v1/events", query_string=query, headers={**auth, "Accept": "application/json"})
        assert response.status_code == 200, response.json
        return response.json

    start = poll()["next"]
    device = make_device()
    device_id = device["device_id"]
    desired = state_url(device_id, "/desired")
    client.patch(desired, json={"a": 1, "b": 2}, headers={**auth, "X-Request-ID": "state-audit-1"})
    client.patch(desired, json={"a": 1}, headers=auth)  # no change: no event, no audit entry
    client.patch(desired, json={"b": None}, headers=auth)
    report(client, device, {"t": 20})
    report(client, device, {"t": 20})  # a repeated value: no event
    events = poll(after=start, device_id=device_id, types="state.reported,state.desired", limit=100)["events"]
    assert [(e["type"], e["data"]) for e in events] == [
        ("state.desired", {"version": 1, "changed": {"a": 1, "b": 2}}),
        ("state.desired", {"version": 2, "changed": {"b": None}}),
        ("state.reported", {"version": 3, "changed": {"t": 20}}),
    ]
    admin_id, admin_secret = api_client_factory("admin")
    token = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": admin_id,
                                                     "client_secret": admin_secret}).json["access_token"]
    entries = client.get("/api/v1/audit", query_string={"limit": 1000, "action": "state.desired"},
                         headers={"Authorization": f"Bearer {token}"}).json["entries"]
    mine = [e for e in entries if e["target"] == f"device:{device_id}"]
    assert len(mine) == 2
    assert {e["request_id"] for e in mine} >= {"state-audit-1"}


def test_a_desired_change_writes_its_event_with_the_device_type_and_its_audit_entry_with_actor_and_details(
        client, auth, make_device, api_client_factory):
    """The state row, the event and the audit entry are written by one statement: each keeps what it says."""
    device_type = f"thermo{unique_id()[:8]}"
    device = make_device(device_type=device_type)
    device_id = device["device_id"]
    start = client.get("/api/v1/events", headers={**auth, "Accept": "application/json"}).json["next"]
    response = client.patch(state_url(device_id, "/desired"), json={"target": 21},
                            headers={**auth, "X-Request-ID": "state-desired-one-statement"})
    assert response.status_code == 200 and response.json["version"] == 1
    events = client.get("/api/v1/events", query_string={"after": start, "device_type": device_type, "limit": 10},
                        headers={**auth, "Accept": "application/json"}).json["events"]
    assert [(e["type"], e["device_id"], e["data"]) for e in events] == [
        ("state.desired", device_id, {"version": 1, "changed": {"target": 21}})]
    admin_id, admin_secret = api_client_factory("admin")
    token = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": admin_id,
                                                     "client_secret": admin_secret}).json["access_token"]
    query = {"limit": 10, "target": f"device:{device_id}", "action": "state.desired"}
    entries = client.get("/api/v1/audit", query_string=query,
                         headers={"Authorization": f"Bearer {token}"}).json["entries"]
    assert [(e["action"], e["request_id"], e["details"]) for e in entries] == [
        ("state.desired", "state-desired-one-statement", {"version": 1, "changed": {"target": 21}})]
    assert entries[0]["actor"].startswith("client:")
