"""Device state (docs/state.md): every SQL statement about a device's reported and desired state.

A desired write runs in one transaction of two statements (and the commit): the device row is read with KEY
SHARE (it cannot be deleted meanwhile) joined to its type's identity, and its state row locked FOR UPDATE (made on
the first write), in one; the document is merged in Python (app/services/state_model.py), checked — If-Match
(412), size (413), then the type's property declarations (422) — and written back with `version` + 1 when a value
changed, with its event and audit entry, in the other. The NATS publish of a new desired state happens right
after commit, from the request's thread: the device's wait is the request's round trips, so they are kept few.

Reports (`reports_in`; the relay passes a whole batch, HTTP a batch of one) lock their devices FOR UPDATE (the
heartbeat updates them) and then their state rows, all in device-id order, merge and check each report in Python
on top of the previous ones, and write the result set-based: one statement locks the devices and their state
rows, then one statement each writes the state rows, the heartbeats, the history points and the events, whatever
the batch's size.

The checks on a typed device use the type's property declarations compiled once per (type, version) and
process, in the same LRU as typed commands (app/services/device_types.py): a replaced type takes effect with
the next write on every worker, since its version is read with the device.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from psycopg2.extras import Json

from app.core.audit_context import current_actor, current_request_id
from app.core.errors import APIError
from app.core.timestamps import timestamp
from app.infra import subjects
from app.infra.db import Database, execute_prepared
from app.infra.messaging import Messaging, MessagingUnavailable
from app.schemas.validation import MAX_COLLECTED_ERRORS, compile_schema, escape_token, params_errors
from app.services import state_history
from app.services.audit import UNKNOWN_ACTOR
from app.services.device_types import compiled_types
from app.services.events import STATE_DESIRED, STATE_REPORTED, record_events
from app.services.registry import device_not_found, heartbeats_in, presence_events
from app.services.state_model import (
    Outcome,
    Side,
    apply_desired,
    apply_report,
    delta,
    effective_time,
    size_problem,
)

log = logging.getLogger(__name__)

STATE_COLUMNS = "reported, desired, reported_meta, desired_meta, version, updated_at"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What a write is checked against: MAX_STATE_BYTES, and (for reports) the heartbeat timeout that decides
    whether the report brought the device back online, and STATE_HISTORY_HOURS (older points are not kept)."""

    max_state_bytes: int
    heartbeat_timeout: int = 90
    history_hours: int = 168


# --- views ---------------------------------------------------------------------------------------------


def empty_row() -> dict[str, Any]:
    return {"reported": {}, "desired": {}, "reported_meta": {}, "desired_meta": {}, "version": 0, "updated_at": None}


def state_view(device_id: str, row: dict[str, Any] | None) -> dict[str, Any]:
    """The state object as GET /devices/{id}/state answers it."""
    row = row if row is not None and row.get("version") is not None else empty_row()
    return {
        "device_id": device_id,
        "reported": row["reported"],
        "desired": row["desired"],
        "delta": delta(row["desired"], row["reported"]),
        "metadata": {"reported": row["reported_meta"], "desired": row["desired_meta"]},
        "version": row["version"],
        "updated_at": timestamp(row["updated_at"]),
    }


def desired_message(state: dict[str, Any]) -> dict[str, Any]:
    """What a device gets on `.state.desired` and as the `.state.get` reply."""
    return {"version": state["version"], "desired": state["desired"], "delta": state["delta"]}


def etag_for(version: int) -> str:
    return f'"{version}"'


# --- If-Match -----------------------------------------------------------------------------------------


def _check_if_match(expected: str | frozenset[int] | None, version: int) -> None:
    if expected is None or expected == "*" or version in expected:
        return
    raise APIError(412, "PRECONDITION_FAILED", "The state has changed since you read it (If-Match does not match).",
                   {"current_etag": etag_for(version), "version": version})


# --- reading -------------------------------------------------------------------------------------------


def read_state_in(cur, device_id: str) -> dict[str, Any] | None:
    """The state of `device_id` read in an open transaction, or None when there is no such device."""
    cur.execute(
        f"SELECT d.device_id, {', '.join('s.' + c for c in STATE_COLUMNS.split(', '))} "
        "FROM devices d LEFT JOIN device_states s ON s.device_id = d.device_id WHERE d.device_id = %s",
        (device_id,),
    )
    row = cur.fetchone()
    return None if row is None else state_view(device_id, row)


def get_state(db: Database, device_id: str) -> dict[str, Any]:
    found = db.read(lambda cur: read_state_in(cur, device_id))
    if found is None:
        raise device_not_found(device_id)
    return found


def property_context(db: Database, device_id: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the declared properties of the device's type — None when its type is undeclared —, its state), read in
    one transaction; 404 for no device. What the property routes of a Thing Description need."""

    def query(cur):
        cur.execute("SELECT t.properties FROM devices d LEFT JOIN device_types t ON t.name = d.device_type "
                    "WHERE d.device_id = %s", (device_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return row["properties"], read_state_in(cur, device_id)

    found = db.read(query)
    if found is None:
        raise device_not_found(device_id)
    return found


# --- the type's property declarations -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Declared:
    """A type's properties as the write checks need them."""

    name: str
    version: int
    writable: frozenset[str]
    validators: dict[str, Any]  # property name → compiled value validator

    @property
    def names(self) -> list[str]:
        return sorted(self.validators)


def _declared(cur, scope: str, device: dict[str, Any]) -> Declared | None:
    """The property declarations of the device's type; None for an undeclared type (free-form state)."""
    if device["type_version"] is None:
        return None
    key = ("properties", scope, device["device_type"], device["type_version"], device["type_created_at"])
    found = compiled_types.get(key)
    if found is not None:
        return found
    cur.execute("SELECT name, version, created_at, properties FROM device_types WHERE name = %s",
                (device["device_type"],))
    row = cur.fetchone()
    if row is None:
        return None
    properties = row["properties"] or {}
    compiled = Declared(
        row["name"], row["version"],
        frozenset(name for name, p in properties.items() if p.get("writable", False)),
        {name: compile_schema(p.get("schema", True)) for name, p in properties.items()},
    )
    compiled_types.put(("properties", scope, row["name"], row["version"], row["created_at"]), compiled)
    return compiled


def _check_declared(declared: Declared | None, patch: dict[str, Any], values: dict[str, Any], prefix: str,
                    *, desired: bool, bare: bool = False) -> None:
    """422 UNKNOWN_PROPERTY, PROPERTY_NOT_WRITABLE (desired only) or INVALID_VALUE, in that order. `values` are
    the members after the merge (what is validated); pointers are `prefix` + `/<name>/...`, or `prefix` + `/...`
    with `bare` (a property PUT, whose body is the value itself)."""
    if declared is None:
        return
    about = {"device_type": declared.name, "type_version": declared.version, "properties": declared.names}
    unknown = sorted(name for name in patch if name not in declared.validators)
    if unknown:
        raise APIError(422, "UNKNOWN_PROPERTY",
                       f"Device type '{declared.name}' declares no property {', '.join(repr(n) for n in unknown[:5])}.",
                       {**about, "unknown": unknown[:50]})
    if desired:
        fixed = sorted(name for name in patch if name not in declared.writable)
        if fixed:
            raise APIError(422, "PROPERTY_NOT_WRITABLE",
                           f"Property {', '.join(repr(n) for n in fixed[:5])} of device type '{declared.name}' is "
                           "not writable: only the device reports it.", {**about, "not_writable": fixed[:50]})
    errors: list[dict[str, str]] = []
    found = 0
    for name in sorted(patch):
        if patch[name] is None or name not in values:
            continue
        where = prefix if bare else f"{prefix}/{escape_token(name)}"
        more, count = params_errors(declared.validators[name], values[name], where)
        errors.extend(more)
        found += count
        if found >= MAX_COLLECTED_ERRORS:
            break
    if errors:
        errors.sort(key=lambda e: (e["pointer"], e["keyword"], e["message"]))
        raise APIError(422, "INVALID_VALUE",
                       f"{found} value error(s) against device type '{declared.name}' (version "
                       f"{declared.version}), listed in details.errors.", {**about, "errors": errors[:50]})


# --- writing --------------------------------------------------------------------------------------------


# The device (held with KEY SHARE: it cannot be deleted meanwhile) with its type's identity, then its state row
# locked FOR UPDATE, in one round trip. The device is locked first, as every writer does (reports lock the device,
# then the state row): the CTE is materialized, so its row (and lock) comes before the lateral lock of the state
# row. `has_state` is false before the device's first write (no state row yet).
DEVICE_AND_STATE_LOCK = (
    "WITH d AS MATERIALIZED (SELECT d.device_id, d.device_type, t.version AS type_version, "
    "t.created_at AS type_created_at FROM devices d LEFT JOIN device_types t ON t.name = d.device_type "
    "WHERE d.device_id = %(id)s::text FOR KEY SHARE OF d) "
    f"SELECT d.*, s.device_id IS NOT NULL AS has_state, {', '.join('s.' + c for c in STATE_COLUMNS.split(', '))} "
    f"FROM d LEFT JOIN LATERAL (SELECT device_id, {STATE_COLUMNS} FROM device_states "
    "WHERE device_id = d.device_id FOR UPDATE) s ON true"
)
STATE_LOCK = f"SELECT {STATE_COLUMNS} FROM device_states WHERE device_id = %s FOR UPDATE"


def _locked_state(cur, device_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(device, state row) with the device held and the state row locked; 404 for no device."""
    execute_prepared(cur, DEVICE_AND_STATE_LOCK, {"id": device_id})
    found = cur.fetchone()
    if found is None:
        raise device_not_found(device_id)
    device = {key: found[key] for key in ("device_id", "device_type", "type_version", "type_created_at")}
    if found["has_state"]:
        return device, {column: found[column] for column in STATE_COLUMNS.split(", ")}
    cur.execute("INSERT INTO device_states (device_id) VALUES (%s) ON CONFLICT DO NOTHING", (device_id,))
    cur.execute(STATE_LOCK, (device_id,))
    return device, cur.fetchone()


def _check_size(side: str, values: dict[str, Any], max_bytes: int) -> None:
    problem = size_problem(side, values, max_bytes)
    if problem is not None:
        what = (f"nests deeper than {problem['max_depth']} levels" if "max_depth" in problem
                else f"would be {problem['bytes']} bytes of JSON; at most {problem['max_bytes']} are allowed")
        raise APIError(413, "STATE_TOO_LARGE", f"The {side} state {what}.", problem)


# A desired write in one statement: the state row (`version` + 1 and `updated_at` = now when a value changed,
# else only the metadata), and, when a value changed, its `state.desired` event and audit entry, which carry the
# same `{version, changed}` (docs/events.md). One round trip instead of three: a PATCH's message reaches the device
# after the commit, so every round trip before it is on the device's wait.
DESIRED_WRITE = (
    "WITH saved AS (UPDATE device_states SET desired = %(values)s::jsonb, desired_meta = %(meta)s::jsonb, "
    "version = version + %(bump)s::int, updated_at = CASE WHEN %(bumped)s::boolean THEN now() ELSE updated_at END "
    f"WHERE device_id = %(id)s::text RETURNING {STATE_COLUMNS}), "
    "event AS (INSERT INTO event_outbox (type, device_id, device_type, data) "
    "SELECT %(event)s::text, %(id)s::text, %(device_type)s::text, %(details)s::jsonb WHERE %(bumped)s::boolean), "
    "audit AS (INSERT INTO audit_log (actor, action, target, request_id, details) "
    "SELECT %(actor)s::text, %(event)s::text, %(target)s::text, %(request_id)s::text, %(details)s::jsonb "
    "WHERE %(bumped)s::boolean) "
    "SELECT * FROM saved"
)


def _save_desired(cur, device: dict[str, Any], row: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """Write `desired` back, with the event and audit entry of a change (DESIRED_WRITE); the new state row."""
    bump = bool(outcome.changed)
    details = {"version": row["version"] + int(bump), "changed": outcome.changed}
    execute_prepared(cur, DESIRED_WRITE, {
        "values": Json(outcome.side.values), "meta": Json(outcome.side.metadata), "bump": int(bump), "bumped": bump,
        "id": device["device_id"], "event": STATE_DESIRED, "device_type": device["device_type"],
        "details": Json(details), "actor": current_actor() or UNKNOWN_ACTOR,
        "target": f"device:{device['device_id']}", "request_id": current_request_id()})
    return cur.fetchone()


@dataclasses.dataclass
class Written:
    """A write's result: the new state and what changed (removed members as None); for reports also the outcome
    for uaip_state_reports_total (`ignored`: every member was older than what is stored) and the device's status
    before and after the report's heartbeat."""

    state: dict[str, Any]
    changed: dict[str, Any]
    outcome: str = "applied"
    previous_status: str | None = None
    status: str | None = None


def desired_in(cur, scope: str, device_id: str, patch: dict[str, Any], *, expected: str | frozenset[int] | None,
               client_id: str | None, limits: Limits, prefix: str = "", bare: bool = False) -> Written:
    """A merge patch of `desired` inside an open transaction (see the module docstring for the checks)."""
    device, row = _locked_state(cur, device_id)
    _check_if_match(expected, row["version"])
    now = dt.datetime.now(dt.UTC)
    outcome = apply_desired(Side(row["desired"], row["desired_meta"]), patch, timestamp(now), client_id)
    _check_size("desired", outcome.side.values, limits.max_state_bytes)
    _check_declared(_declared(cur, scope, device), patch, outcome.side.values, prefix, desired=True, bare=bare)
    saved = _save_desired(cur, device, row, outcome)
    state = state_view(device_id, saved)
    return Written(state, outcome.changed)


Report = tuple[str, dict[str, Any], "dt.datetime | None"]  # (device id, reported members, device's timestamp)

# The devices of a batch of reports, locked FOR UPDATE in id order (their heartbeat updates them), with their
# type's identity, and each device's state row locked FOR UPDATE right after its device, in one round trip (the
# CTE is materialized: its rows, locked in id order, come before the lateral lock of their state rows; every
# writer locks a device before its state row, so the order stays deadlock-free). `now()` is the transaction's
# time (what `updated_at` becomes); `has_state` is false for a device without a state row yet.
REPORT_LOCKS = (
    "WITH d AS MATERIALIZED (SELECT d.device_id, d.device_type, t.version AS type_version, "
    "t.created_at AS type_created_at, now() AS now FROM devices d LEFT JOIN device_types t ON t.name = d.device_type "
    "WHERE d.device_id = ANY(%(ids)s::text[]) ORDER BY d.device_id FOR UPDATE OF d) "
    f"SELECT d.*, s.device_id IS NOT NULL AS has_state, {', '.join('s.' + c for c in STATE_COLUMNS.split(', '))} "
    f"FROM d LEFT JOIN LATERAL (SELECT device_id, {STATE_COLUMNS} FROM device_states "
    "WHERE device_id = d.device_id FOR UPDATE) s ON true"
)
DEVICE_KEYS = ("device_id", "device_type", "type_version", "type_created_at", "now")
# The state rows a batch changed, written back at once (made when missing); version and metadata are computed
# under the locks above, `bumped` says whether updated_at moves.
STATES_WRITE = (
    "INSERT INTO device_states AS s (device_id, reported, reported_meta, version, updated_at) "
    "SELECT w.device_id, w.reported, w.reported_meta, w.version, CASE WHEN w.bumped THEN now() END "
    "FROM unnest(%s::text[], %s::jsonb[], %s::jsonb[], %s::bigint[], %s::boolean[]) "
    "AS w(device_id, reported, reported_meta, version, bumped) "
    "ON CONFLICT (device_id) DO UPDATE SET reported = EXCLUDED.reported, reported_meta = EXCLUDED.reported_meta, "
    "version = EXCLUDED.version, updated_at = COALESCE(EXCLUDED.updated_at, s.updated_at)"
)


def reports_in(cur, scope: str, reports: list[Report], received_at: dt.datetime, *, limits: Limits,
               prefix: str = "/reported") -> list[Written | APIError]:
    """Device reports merged into `reported` inside an open transaction, each also a heartbeat: one result per
    report, in order — what it did, or the APIError that refused it whole (nothing of it is written).

    The result is exactly that of applying the reports one after the other (a device's reports in the order
    given), but set-based, so a batch costs a handful of statements whatever its size: the devices are locked
    FOR UPDATE in id order (reports of one device serialise there, and every writer locks device before state),
    each followed by its state row, in one statement; each report is merged in Python on top of the previous
    ones (app/services/state_model.py) and checked (size, declarations); then the changed rows are written back in
    one statement, the heartbeats of the devices with an accepted report in one, the history points in one, and the
    events (presence first, then `state.reported`, in report order) in one."""
    devices: dict[str, dict[str, Any]] = {}
    current: dict[str, dict[str, Any]] = {}
    if reports:
        execute_prepared(cur, REPORT_LOCKS, {"ids": sorted({device_id for device_id, _, _ in reports})})
        for row in cur.fetchall():
            devices[row["device_id"]] = {key: row[key] for key in DEVICE_KEYS}
            if row["has_state"]:
                current[row["device_id"]] = {"device_id": row["device_id"],
                                             **{column: row[column] for column in STATE_COLUMNS.split(", ")}}
    results: list[Written | APIError] = []
    dirty: dict[str, bool] = {}  # device id → whether a value changed (else only metadata, or a new empty row)
    points: list[tuple[str, dt.datetime, dict[str, Any]]] = []
    for device_id, patch, sent_at in reports:
        device = devices.get(device_id)
        if device is None:
            results.append(device_not_found(device_id))
            continue
        row = current.get(device_id)
        if row is None:
            row = current[device_id] = {**empty_row(), "new": True}
        at = _milliseconds(effective_time(sent_at, received_at))
        outcome = apply_report(Side(row["reported"], row["reported_meta"]), patch, at, timestamp(at))
        try:
            _check_size("reported", outcome.side.values, limits.max_state_bytes)
            _check_declared(_declared(cur, scope, device), patch, outcome.side.values, prefix, desired=False)
        except APIError as exc:
            results.append(exc)
            continue
        if row.get("new"):  # an accepted report makes the row, as a write does, even when it changes nothing
            dirty.setdefault(device_id, False)
        if outcome.changed or outcome.refreshed:
            row = current[device_id] = {
                **row, "reported": outcome.side.values, "reported_meta": outcome.side.metadata,
                "version": row["version"] + (1 if outcome.changed else 0),
                "updated_at": device["now"] if outcome.changed else row["updated_at"]}
            dirty[device_id] = dirty.get(device_id, False) or bool(outcome.changed)
        if outcome.changed:
            points.append((device_id, at, outcome.changed))
        ignored = bool(patch) and len(outcome.ignored) == len(patch)
        results.append(Written(state_view(device_id, row), outcome.changed, "ignored" if ignored else "applied"))
    if not dirty and not any(isinstance(result, Written) for result in results):
        return results
    if dirty:
        ids = sorted(dirty)
        cur.execute(STATES_WRITE, (ids, [Json(current[i]["reported"]) for i in ids],
                                   [Json(current[i]["reported_meta"]) for i in ids],
                                   [current[i]["version"] for i in ids], [dirty[i] for i in ids]))
    accepted = [(device_id, result) for (device_id, _, _), result in zip(reports, results, strict=True)
                if isinstance(result, Written)]
    beats = heartbeats_in(cur, [device_id for device_id, _ in accepted], "online", limits.heartbeat_timeout)
    events: list[tuple[str, str, dict, str | None]] = []
    seen: set[str] = set()
    for device_id, result in accepted:
        if device_id not in seen:
            seen.add(device_id)
            beat = beats[device_id]
            result.previous_status, result.status = beat["previous_status"], beat["status"]
            if beat["previous_status"] != beat["status"]:  # else only last_seen moved: no event
                events.extend(presence_events(beat))
        else:
            result.previous_status = result.status = beats[device_id]["status"]
        if result.changed:
            events.append((STATE_REPORTED, device_id, {"version": result.state["version"], "changed": result.changed},
                           devices[device_id]["device_type"]))
    state_history.record_points_many(cur, points, limits.history_hours)
    record_events(cur, events)
    return results


def report_in(cur, scope: str, device_id: str, patch: dict[str, Any], sent_at: dt.datetime | None,
              received_at: dt.datetime, *, limits: Limits, prefix: str = "/reported") -> Written:
    """One report (HTTP): `reports_in` with a batch of one; the APIError that refused it is raised."""
    result = reports_in(cur, scope, [(device_id, patch, sent_at)], received_at, limits=limits, prefix=prefix)[0]
    if isinstance(result, APIError):
        raise result
    return result


def _milliseconds(value: dt.datetime) -> dt.datetime:
    """Timestamps are kept (and compared) at the precision the API shows them."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def set_desired(db: Database, messaging: Messaging | None, scope: str, device_id: str, patch: dict[str, Any], *,
                expected: str | frozenset[int] | None, client_id: str | None, limits: Limits,
                prefix: str = "", bare: bool = False) -> dict[str, Any]:
    """Change desired (REST PATCH, property PUT, MCP) and, after commit, publish it to the device."""
    written = db.transaction(lambda cur: desired_in(
        cur, scope, device_id, patch, expected=expected, client_id=client_id, limits=limits, prefix=prefix,
        bare=bare))
    if written.changed and messaging is not None:
        publish_desired(messaging, device_id, written.state)
    return written.state


def publish_desired(messaging: Messaging, device_id: str, state: dict[str, Any]) -> bool:
    """Best effort: a device that missed it asks with `.state.get` (e.g. after a reconnect)."""
    try:
        messaging.publish(subjects.state_desired_subject(device_id), desired_message(state), wait=False)
        return True
    except MessagingUnavailable:
        log.info("desired state not published: NATS unavailable", extra={"device_id": device_id})
        return False


NOTIFY_CHUNK = 1000  # device ids per notice (~30 KB at most, well under NATS's payload limit)


def notify_reported(messaging: Messaging, device_ids: list[str]) -> None:
    """Wake property observers in every API worker (best effort: they also poll). One notice per batch,
    `{"device_ids": [...]}`, not one per device: at thousands of reports a second, a message per device would
    make every API worker handle thousands of messages a second."""
    for start in range(0, len(device_ids), NOTIFY_CHUNK):
        try:
            messaging.publish(subjects.STATE_CHANGED_SUBJECT, {"device_ids": device_ids[start:start + NOTIFY_CHUNK]},
                              wait=False)
        except MessagingUnavailable:
            return


def report(db: Database, scope: str, device_id: str, patch: dict[str, Any], sent_at: dt.datetime | None, *,
           limits: Limits, prefix: str = "/reported") -> Written:
    received = dt.datetime.now(dt.UTC)
    return db.transaction(lambda cur: report_in(cur, scope, device_id, patch, sent_at, received, limits=limits,
                                                prefix=prefix))
