"""A batch of reports (the relay's set-based apply, docs/state.md "Over NATS") ends exactly where applying the same
reports one by one does, on real PostgreSQL: state, metadata, version, history points, events, presence and each
report's outcome — with good, bad, repeated and out-of-order reports of several devices mixed in one batch."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from app.core.errors import APIError
from app.services import state
from tests.conftest import unique_id

LIMITS = state.Limits(max_state_bytes=32768, heartbeat_timeout=90, history_hours=168)
PROPERTIES = {
    "temperature": {"schema": {"type": "number"}},
    "target_temperature": {"schema": {"type": "number", "minimum": 5, "maximum": 35}, "writable": True},
    "mode": {"schema": {"enum": ["heat", "off"]}},
    "schedule": {"schema": {"type": "object", "properties": {"on": {"type": "string"}, "off": {"type": "string"}},
                            "additionalProperties": False, "maxProperties": 1}},
}
BASE = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)


def at(seconds: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


# (device role, reported members, the device's timestamp in seconds after BASE, or None)
SCRIPT = [
    ("typed", {"temperature": 20, "mode": "heat"}, 10),
    ("free", {"a": 1, "b": {"x": 1}}, 1),
    ("typed", {"temperature": 20}, 11),  # the same value: metadata only
    ("typed", {"temperature": 21}, 5),  # older than what is stored: ignored
    ("free", {"b": {"y": 2}}, 2),  # merges into the object
    ("typed", {"target_temperature": 99}, 12),  # invalid value: rejected whole
    ("bad", {"big": "x" * 40_000}, 1),  # too large: rejected, and the device's only report
    ("typed", {"nope": 1}, 12),  # undeclared: rejected
    ("free", {"a": 1.0}, 3),  # 1 == 1.0: metadata only
    ("typed", {"temperature": 22, "mode": None}, 10),  # temperature older (ignored), mode equal (removed)
    ("free", {"big": "x" * 40_000}, 4),  # too large: rejected, the device's other reports apply
    ("typed", {"schedule": {"on": "07:00"}}, 13),
    ("free", {}, 4),  # nothing, but a heartbeat
    ("typed", {"schedule": {"off": "22:00"}}, 14),  # merged it has two members: rejected
    ("free", {"a": None}, 0),  # older than a's timestamp: ignored
    ("typed", {"temperature": 23.5, "target_temperature": 21}, 15),
    ("missing", {"a": 1}, 1),  # no such device
]


@pytest.fixture()
def devices(client, admin_auth, make_device):
    """Two devices per role, one to get the batch and one to get the reports one by one."""
    type_name = f"batch-{uuid.uuid4().hex[:8]}"
    response = client.put(f"/api/v1/device-types/{type_name}", json={"commands": {}, "properties": PROPERTIES},
                          headers=admin_auth)
    assert response.status_code == 201, response.json
    made = {}
    for copy in ("batch", "single"):
        made[copy] = {"typed": make_device(device_type=type_name)["device_id"],
                      "free": make_device()["device_id"], "bad": make_device()["device_id"],
                      "missing": unique_id("missing")}
    return made


def reports_for(ids: dict[str, str]) -> list[state.Report]:
    return [(ids[role], patch, at(seconds) if seconds is not None else None) for role, patch, seconds in SCRIPT]


def outcome(result) -> tuple:
    if isinstance(result, APIError):
        return ("rejected", result.code)
    return (result.outcome, result.changed, result.state["version"], result.previous_status, result.status)


def observed(db, device_id: str) -> dict:
    """Everything the reports may have changed for one device, without its id and wall-clock times."""

    def read(cur):
        found = state.read_state_in(cur, device_id)
        cur.execute("SELECT status, last_seen IS NOT NULL AS seen FROM devices WHERE device_id = %s", (device_id,))
        device = cur.fetchone()
        cur.execute("SELECT property, at, value FROM device_state_history WHERE device_id = %s ORDER BY seq",
                    (device_id,))
        points = [(r["property"], r["at"], r["value"]) for r in cur.fetchall()]
        cur.execute("SELECT type, data FROM event_outbox WHERE device_id = %s AND type <> 'device.registered' "
                    "ORDER BY seq", (device_id,))
        events = [(r["type"], r["data"] if r["type"].startswith("state.") else None) for r in cur.fetchall()]
        cur.execute("SELECT count(*) AS n FROM device_states WHERE device_id = %s", (device_id,))
        rows = cur.fetchone()["n"]
        return found, device, points, events, rows

    found, device, points, events, rows = db.read(read)
    if found is None:
        return {"device": None}
    return {"reported": found["reported"], "metadata": found["metadata"], "version": found["version"],
            "updated": found["updated_at"] is not None, "device": dict(device), "points": points, "events": events,
            "state_rows": rows}


def test_a_mixed_batch_ends_where_one_by_one_does(db, database, devices):
    received = dt.datetime.now(dt.UTC)
    batch = sorted(reports_for(devices["batch"]), key=lambda report: report[0])  # as the relay orders a batch
    batch_results = db.transaction(lambda cur: state.reports_in(cur, database, batch, received, limits=LIMITS))

    single_results = []
    for device_id, patch, sent_at in sorted(reports_for(devices["single"]), key=lambda report: report[0]):
        # One transaction per report, as the relay did report by report.
        single_results.append(db.transaction(lambda cur, r=(device_id, patch, sent_at): state.reports_in(
            cur, database, [r], received, limits=LIMITS))[0])

    roles = {device_id: role for copy in devices.values() for role, device_id in copy.items()}
    by_role_batch = [(roles[r[0]], outcome(res)) for r, res in zip(batch, batch_results, strict=True)]
    single_order = sorted(reports_for(devices["single"]), key=lambda report: report[0])
    by_role_single = [(roles[r[0]], outcome(res)) for r, res in zip(single_order, single_results, strict=True)]
    assert sorted(by_role_batch, key=repr) == sorted(by_role_single, key=repr)
    for role in ("typed", "free", "bad", "missing"):
        assert [o for r, o in by_role_batch if r == role] == [o for r, o in by_role_single if r == role], role

    for role in ("typed", "free", "bad", "missing"):
        assert observed(db, devices["batch"][role]) == observed(db, devices["single"][role]), role

    # And what that is, so the comparison cannot pass on two equally wrong results.
    typed = observed(db, devices["batch"]["typed"])
    assert typed["reported"] == {"temperature": 23.5, "target_temperature": 21, "schedule": {"on": "07:00"}}
    assert typed["version"] == 4
    assert [p[0] for p in typed["points"]] == ["mode", "temperature", "schedule", "target_temperature",
                                               "temperature"]
    assert [e[0] for e in typed["events"]] == ["device.online"] + ["state.reported"] * 4
    assert typed["events"][2] == ("state.reported", {"version": 2, "changed": {"mode": None}})
    assert typed["metadata"]["reported"]["temperature"] == {"timestamp": state.timestamp(at(15))}
    free = observed(db, devices["batch"]["free"])
    assert free["reported"] == {"a": 1, "b": {"x": 1, "y": 2}} and free["version"] == 2
    assert free["metadata"]["reported"]["a"] == {"timestamp": state.timestamp(at(3))}
    assert free["device"]["status"] == "online"
    bad = observed(db, devices["batch"]["bad"])
    assert bad["device"] == {"status": "pending", "seen": False}
    assert bad["events"] == [] and bad["state_rows"] == 0 and bad["version"] == 0
    assert [o for r, o in by_role_batch if r == "missing"] == [("rejected", "DEVICE_NOT_FOUND")]
