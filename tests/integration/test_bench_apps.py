"""The device-list benchmark compares equal work: the naive and the tuned bare apps (bench/apps.py) answer with the
very bytes the hub does, on devices chosen to exercise every field, the effective status and non-ASCII text."""

from __future__ import annotations

import json

import pytest
from psycopg2.extras import Json

from bench.apps import bare_device_list, tuned_device_list
from tests.conftest import unique_id


@pytest.fixture(params=["naive", "tuned"])
def bare_client(request, monkeypatch, database):
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.delenv("HEARTBEAT_TIMEOUT_SECONDS", raising=False)  # the hub's default, 90 s, as in hub_env
    factory = {"naive": bare_device_list, "tuned": tuned_device_list}[request.param]
    return factory().test_client()


@pytest.fixture()
def varied_devices(db):
    """Devices whose fields take every shape the document can hold, inserted directly (statuses and timestamps
    an API client cannot set): stale and fresh heartbeats, null, text and object locations, nested metadata with
    floats, integers beyond 64 bits, unicode, quotes and control characters, timestamps with 0–6 fraction
    digits. Registered "in 2000", they head every list of this test run's database."""
    rows = [
        ("online", "now() - interval '10 minutes'", "Thermostat Küche ☃", "Haus \"A\"\n2. Stock",
         {"rack": 1, "ratio": 0.25, "big": 12345678901234567890, "nested": {"list": [1, "zwei", None, True]}}),
        ("online", "now()", "Fresh online", None, {}),
        ("error", "now() - interval '1 day'", "Stale error", {"lat": 52.52, "lon": 13.405}, {"tab": "a\tb\u2028c"}),
        ("error", "now()", "Fresh error", "", {"emoji": "🌡️"}),
        ("pending", "NULL", "Never seen", None, {"deep": {"a": {"b": {"c": [0.1, -0.0, 1e21, 2**70]}}}}),
        ("offline", "'2026-01-02 03:04:05.6+00'", "Old timer", "lab", {"slash": "a/b\\c"}),
        ("online", "'2026-01-02 03:04:05+00'", "Whole second", None, {}),
    ]
    ids = []

    def insert(cur):
        for status, last_seen, name, location, metadata in rows:
            device_id = unique_id("bench-doc")
            cur.execute(
                f"INSERT INTO devices (device_id, name, device_type, status, capabilities, location, metadata, "
                f"secret_hash, last_seen, registered_at, updated_at) VALUES (%s, %s, 'sensor', %s, %s, %s, %s, 'x', "
                f"{last_seen}, '2000-01-01 00:00:00+00'::timestamptz + make_interval(secs => %s), now())",
                (device_id, name, status, ["temperature", "ünïcode"], Json(location) if location is not None else None,
                 Json(metadata), len(ids) * 1.234567),
            )
            ids.append(device_id)

    db.transaction(insert)
    yield ids
    db.transaction(lambda cur: cur.execute("DELETE FROM devices WHERE device_id = ANY(%s)", (ids,)))


def test_bare_app_answers_the_hub_document_byte_for_byte(client, auth, bare_client, varied_devices):
    for query in ("limit=50", "limit=3", "limit=1000", "limit=2&offset=1", "limit=5&offset=100000"):
        hub = client.get(f"/api/v1/devices?{query}", headers=auth)
        bare = bare_client.get(f"/api/v1/devices?{query}")
        assert hub.status_code == bare.status_code == 200
        assert hub.content_type == bare.content_type == "application/json"
        assert hub.data == bare.data, query
    page = json.loads(client.get("/api/v1/devices?limit=7", headers=auth).data)
    assert [device["device_id"] for device in page["devices"]] == varied_devices
    assert page["total"] >= len(varied_devices)
    # What the comparison covered: the effective status (stale heartbeaters read offline), timestamps cut to
    # milliseconds and padded, text and object locations, unicode as UTF-8.
    assert [device["status"] for device in page["devices"]] == [
        "offline", "online", "offline", "error", "pending", "offline", "offline"]
    assert page["devices"][5]["last_seen"] == "2026-01-02T03:04:05.600Z"
    assert page["devices"][6]["last_seen"] == "2026-01-02T03:04:05.000Z"
    assert page["devices"][1]["registered_at"] == "2000-01-01T00:00:01.234Z"
    assert "Küche ☃".encode() in client.get("/api/v1/devices?limit=1", headers=auth).data
