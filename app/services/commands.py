"""Commands to devices: every SQL statement about commands (API and relay) lives here.

Durability (docs/decisions.md, "Durability"): a command is inserted (`queued`) and committed before it is published on
`uaip.devices.{id}.commands`; only after a successful publish is it marked `sent`. If NATS is down the command
stays `queued` with `next_attempt_at` = now, and the relay publishes it when NATS is back. Once the insert has
committed the submitter gets 202, whatever fails afterwards (publish, the `sent` mark, reading it under
`?wait`): an error would invite a retry, and a retry a second actuation.

Status only moves forward: queued → sent → acknowledged → completed | failed; expired and cancelled are final
as well. Every transition is a conditional UPDATE (or a row lock then UPDATE), so two relays, a REST ack and
the expiry sweep can race without a status ever going backwards or a metric being counted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg2
from psycopg2.extras import Json

from app import messaging as subjects
from app import metrics, tracing
from app.db import Database, DatabaseUnavailable, execute_prepared
from app.errors import APIError
from app.messaging import Messaging, MessagingUnavailable
from app.metrics import commands_total
from app.services import device_types
from app.services.command_statuses import ACK_STATUSES, FINAL_STATUSES, RANK, UNFINISHED_STATUSES
from app.services.events import publish_device_event
from app.services.registry import EFFECTIVE_STATUS, delete_device_in, device_not_found
from app.timestamps import timestamp

log = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = "24 hours"
MAX_RETRY_SECONDS = 300.0
SWEEP_BATCH = 500

MESSAGE_COLUMNS = (
    "message_id, device_id, command, params, qos, priority, status, result, error, created_at, sent_at, "
    "acknowledged_at, completed_at, expires_at, request_id"
)


# --- views ---------------------------------------------------------------------------------------------


def message_view(row: dict[str, Any]) -> dict[str, Any]:
    """A message exactly as docs/api.md ("The message object") lists its fields."""
    return {
        "message_id": str(row["message_id"]),
        "device_id": row["device_id"],
        "command": row["command"],
        "params": row["params"],
        "qos": row["qos"],
        "priority": row["priority"],
        "status": row["status"],
        "result": row["result"],
        "error": row["error"],
        "created_at": timestamp(row["created_at"]),
        "sent_at": timestamp(row["sent_at"]),
        "acknowledged_at": timestamp(row["acknowledged_at"]),
        "completed_at": timestamp(row["completed_at"]),
        "expires_at": timestamp(row["expires_at"]),
        "request_id": row["request_id"],
    }


def accepted_view(row: dict[str, Any]) -> dict[str, Any]:
    """The 202 body of a submit."""
    return {
        "message_id": str(row["message_id"]),
        "device_id": row["device_id"],
        "status": row["status"],
        "created_at": timestamp(row["created_at"]),
        "expires_at": timestamp(row["expires_at"]),
    }


ENVELOPE_FIELDS = ("message_id", "device_id", "command", "params", "qos", "priority", "created_at", "expires_at",
                   "request_id")


def envelope(row: dict[str, Any]) -> dict[str, Any]:
    """The body published on `uaip.devices.{id}.commands`."""
    view = message_view(row)
    return {field: view[field] for field in ENVELOPE_FIELDS}


def message_not_found(message_id: str) -> APIError:
    return APIError(404, "MESSAGE_NOT_FOUND", f"Message '{message_id}' was not found.", {"message_id": message_id})


def parse_message_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def retry_delay(attempts: int, base: float) -> float:
    """Seconds until a command published `attempts` times may be re-sent: base, 2×base, 4×base, … ≤ 300 s."""
    return min(base * 2 ** min(max(attempts - 1, 0), 16), max(base, MAX_RETRY_SECONDS))


def count(status: str, n: int = 1) -> None:
    if n:
        commands_total.labels(status=status).inc(n)


# --- submit --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CommandSpec:
    device_id: str
    command: str
    params: Any
    qos: int
    priority: int
    ttl_ms: int
    source: str | None = None
    # Where the params sit in the request body, for the JSON Pointers of INVALID_PARAMS errors: `/params` for
    # POST /devices/{id}/command and MCP, `/payload/params` for POST /messages, "" for the action route.
    pointer_prefix: str = "/params"


@dataclasses.dataclass(frozen=True)
class Idempotency:
    client_id: str
    key: str
    request_hash: str


def request_hash(route: str, body: Any) -> str:
    """What "the same body" means for Idempotency-Key: the route plus the canonical JSON of the body."""
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclasses.dataclass
class Submitted:
    body: dict[str, Any]  # the 202 body
    message_id: str
    replayed: bool = False


def submit_command(
    db: Database, messaging: Messaging, spec: CommandSpec, *, client_id: str | None, request_id: str | None,
    idempotency: Idempotency | None, max_pending: int, heartbeat_timeout: int, retry_seconds: float,
) -> Submitted:
    """Store, publish and mark sent. Errors, in this order: 404 DEVICE_NOT_FOUND, 422 UNKNOWN_COMMAND /
    INVALID_PARAMS (the device's type, read with the device, app/services/device_types.py), 503 DEVICE_OFFLINE
    (qos 0), 429 DEVICE_QUEUE_FULL; and 409 IDEMPOTENCY_KEY_REUSED. A refusal rolls everything back, the
    Idempotency-Key included. A NATS failure is not an error: the command stays queued."""
    message_id = uuid.uuid4()
    traceparent = tracing.current_traceparent()  # kept with the command: its redeliveries join this trace

    def store(cur):
        if idempotency is not None:
            # Waits for a concurrent request with the same key to commit or roll back, then sees its row.
            cur.execute(
                "INSERT INTO idempotency_keys (client_id, key, request_hash) VALUES (%(client)s, %(key)s, %(hash)s) "
                "ON CONFLICT (client_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, message_id = NULL, "
                "  response_body = NULL, created_at = now() "
                f"WHERE idempotency_keys.created_at < now() - interval '{IDEMPOTENCY_WINDOW}' "
                "RETURNING key",
                {"client": idempotency.client_id, "key": idempotency.key, "hash": idempotency.request_hash},
            )
            if cur.fetchone() is None:
                cur.execute(
                    "SELECT request_hash, message_id, response_body FROM idempotency_keys "
                    "WHERE client_id = %s AND key = %s",
                    (idempotency.client_id, idempotency.key),
                )
                previous = cur.fetchone()
                if previous["request_hash"] != idempotency.request_hash:
                    raise APIError(
                        409, "IDEMPOTENCY_KEY_REUSED",
                        "This Idempotency-Key was already used with a different request.",
                        {"idempotency_key": idempotency.key, "message_id": str(previous["message_id"])},
                    )
                return previous, True

        # The submit's two statements are prepared: planning them cost PostgreSQL more than running them.
        execute_prepared(
            cur,
            f"SELECT {EFFECTIVE_STATUS} AS status, d.device_type, {device_types.DEVICE_TYPE_COLUMNS} "
            f"FROM devices d {device_types.DEVICE_TYPE_JOIN} WHERE d.device_id = %(id)s::text FOR UPDATE OF d",
            {"id": spec.device_id, "timeout": heartbeat_timeout},
        )
        device = cur.fetchone()
        if device is None:
            raise device_not_found(spec.device_id)
        device_types.check_command(cur, db.url, device, spec.command, spec.params, spec.pointer_prefix)
        if spec.qos == 0 and device["status"] not in ("online", "error"):
            raise APIError(
                503, "DEVICE_OFFLINE",
                f"Device '{spec.device_id}' is {device['status']}; a qos 0 command cannot wait for it.",
                {"device_id": spec.device_id, "device_status": device["status"]},
            )
        # The device row lock above serialises submits per device, so the count of its open commands cannot be
        # raced past the cap; counting and inserting in one statement saves a round trip (it starts after the
        # lock was granted, so its snapshot sees every command committed by the lock's previous holders).
        execute_prepared(
            cur,
            "INSERT INTO commands (message_id, device_id, command, params, qos, priority, request_id, client_id, "
            "source, traceparent, expires_at, next_attempt_at) SELECT %(id)s::uuid, %(device)s::text, "
            "%(command)s::text, %(params)s::jsonb, %(qos)s::smallint, %(priority)s::smallint, %(request_id)s::text, "
            "%(client)s::text, %(source)s::text, %(traceparent)s::text, "
            "now() + make_interval(secs => %(ttl)s::float8), "
            # The relay leaves a fresh command to this request (it publishes next); if this process dies before
            # publishing, the relay picks the command up once the retry delay has passed.
            "now() + make_interval(secs => %(retry)s::float8) "
            "WHERE (SELECT count(*) FROM commands WHERE device_id = %(device)s::text AND status IN ('queued', 'sent') "
            "AND expires_at > now()) < %(max_pending)s::bigint "
            f"RETURNING {MESSAGE_COLUMNS}, traceparent",
            {
                "id": str(message_id), "device": spec.device_id, "command": spec.command, "params": Json(spec.params),
                "qos": spec.qos, "priority": spec.priority, "request_id": request_id, "client": client_id,
                "source": spec.source, "traceparent": traceparent, "ttl": spec.ttl_ms / 1000.0,
                "retry": retry_seconds, "max_pending": max_pending,
            },
        )
        row = cur.fetchone()
        if row is None:
            raise APIError(
                429, "DEVICE_QUEUE_FULL",
                f"Device '{spec.device_id}' already has {max_pending} open commands; retry when it catches up.",
                {"device_id": spec.device_id, "max_pending_commands": max_pending},
                headers={"Retry-After": "5"},
            )
        if idempotency is not None:
            cur.execute(
                "UPDATE idempotency_keys SET message_id = %s, response_body = %s WHERE client_id = %s AND key = %s",
                (str(message_id), Json(accepted_view(row)), idempotency.client_id, idempotency.key),
            )
        return row, False

    row, replayed = db.transaction(store)
    if replayed:
        return Submitted(body=row["response_body"], message_id=str(row["message_id"]), replayed=True)
    count("queued")
    # From here on the command is stored (and may reach the device any moment): whatever fails now, the client
    # gets 202 with its message_id, never an error that invites a retry and so a second actuation.
    try:
        if publish_and_mark_sent(db, messaging, [row], retry_seconds, idempotency=idempotency):
            row = {**row, "status": "sent"}
    except Exception as exc:  # noqa: BLE001 - the relay delivers a command left `queued` (after the retry delay)
        log.error(
            "command stored, but publishing or marking it sent failed; answering 202 with its stored status",
            extra={"message_id": str(message_id), "device_id": spec.device_id, "request_id": request_id,
                   "error": str(exc).strip() or exc.__class__.__name__},
        )
    return Submitted(body=accepted_view(row), message_id=str(message_id))


def _publish(messaging: Messaging, row: dict[str, Any]) -> bool:
    """Hand a stored command's envelope to NATS; with tracing on, in the trace of the request that created it (a
    redelivery by the relay too), and its NATS headers carry that trace's `traceparent` on to the device. Not
    waited for: a command that does not reach its device stays unacknowledged and is re-sent by the relay.
    False when NATS is not connected."""
    try:
        with tracing.continue_trace(row.get("traceparent")):
            messaging.publish(
                subjects.command_subject(row["device_id"]), envelope(row),
                headers={"Nats-Msg-Id": str(row["message_id"])}, wait=False,
            )
        return True
    except MessagingUnavailable:
        return False


def publish_and_mark_sent(
    db: Database, messaging: Messaging, rows: list[dict[str, Any]], retry_seconds: float,
    idempotency: Idempotency | None = None,
) -> bool:
    """Publish freshly stored commands and mark them sent. Those NATS would not take stay queued and become due
    for the relay at once. Returns whether everything was published."""
    published, failed = [], []
    for row in rows:
        (published if _publish(messaging, row) else failed).append(str(row["message_id"]))

    # One statement in autocommit: one round trip, one transaction. Losing this write in a crash is harmless (the
    # command is durable as queued; the relay re-sends it), so its commit does not wait for the WAL flush
    # (set_config(..., true) is SET LOCAL). Repeating it is harmless too: every update is conditional.
    updates = [
        "no_flush AS (SELECT set_config('synchronous_commit', 'off', true))",
        "sent AS (UPDATE commands SET status = 'sent', sent_at = COALESCE(sent_at, now()), attempts = attempts + 1, "
        "updated_at = now(), next_attempt_at = now() + make_interval(secs => %(retry)s) "
        "WHERE message_id = ANY(%(published)s::uuid[]) AND status = 'queued' RETURNING 1)",
    ]
    if failed:
        updates.append("due AS (UPDATE commands SET next_attempt_at = now() "
                       "WHERE message_id = ANY(%(failed)s::uuid[]) AND status = 'queued')")
    if idempotency is not None:
        updates.append("receipt AS (UPDATE idempotency_keys SET response_body = jsonb_set(response_body, '{status}', "
                       "'\"sent\"') WHERE client_id = %(client)s AND key = %(key)s "
                       "AND response_body->>'status' = 'queued' AND EXISTS (SELECT 1 FROM sent))")
    statement = f"WITH {', '.join(updates)} SELECT (SELECT count(*) FROM sent) AS n FROM no_flush"
    params = {"retry": retry_seconds, "published": published, "failed": failed,
              "client": idempotency.client_id if idempotency else None, "key": idempotency.key if idempotency else None}

    def mark(cur) -> int:
        cur.execute(statement, params)
        return cur.fetchone()["n"]

    count("sent", db.autocommit(mark, retry=True))
    return not failed


# --- read ----------------------------------------------------------------------------------------------


def get_message(db: Database, message_id: str) -> dict[str, Any]:
    parsed = parse_message_id(message_id)
    if parsed is None:
        raise message_not_found(message_id[:64])

    def query(cur):
        cur.execute(f"SELECT {MESSAGE_COLUMNS} FROM commands WHERE message_id = %s", (str(parsed),))
        return cur.fetchone()

    row = db.read(query)  # one round trip: polling clients and ?wait=N waiters read this often
    if row is None:
        raise message_not_found(message_id)
    return message_view(row)


def list_device_commands(
    db: Database, device_id: str, *, status: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A device's commands, newest first. History outlives the device; an unknown device with none is 404."""
    where = "device_id = %(device)s" + (" AND status = %(status)s" if status else "")
    params = {"device": device_id, "status": status, "limit": limit, "offset": offset}

    def query(cur):
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS}, count(*) OVER () AS total FROM commands WHERE {where} "
            "ORDER BY created_at DESC, message_id DESC LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        rows = cur.fetchall()
        total = rows[0]["total"] if rows else None
        if total is None and offset:
            cur.execute(f"SELECT count(*) AS total FROM commands WHERE {where}", params)
            total = cur.fetchone()["total"]
        exists = True
        if not total:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE device_id = %(device)s) "
                "OR EXISTS (SELECT 1 FROM commands WHERE device_id = %(device)s) AS known",
                params,
            )
            exists = cur.fetchone()["known"]
        return rows, total or 0, exists

    rows, total, exists = db.transaction(query)
    if not exists:
        raise device_not_found(device_id)
    return [message_view(row) for row in rows], total


# --- acknowledgements ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ack:
    device_id: str  # who sent it (Basic auth user, or the device id in the NATS subject)
    message_id: str
    status: str
    result: Any = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class AckOutcome:
    """What an ack did. `code` is None when it applied (or repeated the current status), else the error code."""

    ack: Ack
    code: str | None
    message: dict[str, Any] | None = None
    previous_status: str | None = None
    changed: bool = False
    request_id: str | None = None
    completion_seconds: float | None = None  # created → completed/failed, when this ack finished the command

    @property
    def final(self) -> bool:
        return self.changed and self.message is not None and self.message["status"] in FINAL_STATUSES


def transition_error(current: str, new: str, expired_by_time: bool) -> str | None:
    """None if `current` → `new` is allowed (or is a repeat of `current`), else the error code."""
    if current == new:
        return None
    if current == "expired" or (expired_by_time and current in UNFINISHED_STATUSES):
        return "MESSAGE_EXPIRED"
    if current in FINAL_STATUSES or RANK[new] <= RANK[current]:
        return "INVALID_TRANSITION"
    return None


def statuses_reached(previous: str, new: str) -> list[str]:
    """The statuses a command reached by moving from `previous` to `new`. An ack may skip steps (a fast device
    acks before the submitting worker recorded `sent`; a device may report `completed` without `acknowledged`);
    the row then gets those steps' timestamps, and uaip_commands_total counts them, once, here."""
    if new not in ACK_STATUSES:
        return [new]
    implied = [step for step in ("sent", "acknowledged") if RANK[previous] < RANK[step] < RANK[new]]
    return [*implied, new]


def _apply_ack(row: dict[str, Any] | None, ack: Ack, now) -> AckOutcome:
    """Decide one ack against the locked row (updated in place when it applies)."""
    if row is None:
        return AckOutcome(ack, "MESSAGE_NOT_FOUND")
    if row["device_id"] != ack.device_id:
        return AckOutcome(ack, "FORBIDDEN")
    current = row["status"]
    code = transition_error(current, ack.status, row["expires_at"] <= now)
    if code == "MESSAGE_EXPIRED" and current != "expired":
        # The TTL passed before the sweeper got to it: record the expiry now, then refuse the ack.
        row["status"] = "expired"
        return AckOutcome(ack, code, message_view(row), current, True, row["request_id"])
    if code is not None or current == ack.status:
        return AckOutcome(ack, code, message_view(row), current, False, row["request_id"])
    row["status"] = ack.status
    row["sent_at"] = row["sent_at"] or now
    row["acknowledged_at"] = row["acknowledged_at"] or now
    completion_seconds = None
    if ack.status in ("completed", "failed"):
        row["completed_at"] = now
        completion_seconds = max((now - row["created_at"]).total_seconds(), 0.0)
    if ack.result is not None:
        row["result"] = ack.result
    if ack.error is not None:
        row["error"] = ack.error
    return AckOutcome(ack, None, message_view(row), current, True, row["request_id"], completion_seconds)


def _apply_ack_batch(cur, acks: list[Ack], durable: bool = True) -> list[AckOutcome]:
    """Lock every row the batch touches (one SELECT, in message-id order, so relays with overlapping batches
    cannot deadlock), decide each ack in arrival order, then write each changed row once (one statement).
    `durable=False`: the commit does not wait for the WAL flush (see `apply_acks`)."""
    ids = sorted({str(parsed) for ack in acks if (parsed := parse_message_id(ack.message_id)) is not None})
    rows: dict[str, dict[str, Any]] = {}
    now = None
    if ids:
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS}, now() AS db_now FROM commands WHERE message_id = ANY(%s::uuid[]) "
            "ORDER BY message_id FOR UPDATE",
            (ids,),
        )
        for row in cur.fetchall():
            now = row.pop("db_now")
            rows[str(row["message_id"])] = dict(row)
    outcomes, changed = [], {}
    for ack in acks:
        parsed = parse_message_id(ack.message_id)
        row = rows.get(str(parsed)) if parsed is not None else None
        outcome = _apply_ack(row, ack, now)
        if outcome.changed:
            changed[str(parsed)] = row
        outcomes.append(outcome)
    if changed:
        # The values travel as array parameters, not written into the SQL text (as psycopg2's execute_values
        # does): the text is what a trace records as the statement, and device results do not belong there.
        columns = zip(*[(message_id, row["status"], row["sent_at"], row["acknowledged_at"], row["completed_at"],
                         Json(row["result"]) if row["result"] is not None else None, row["error"])
                        for message_id, row in changed.items()], strict=True)
        cur.execute(
            "UPDATE commands AS c SET status = v.status, sent_at = v.sent_at, acknowledged_at = v.acknowledged_at, "
            "completed_at = v.completed_at, result = v.result, error = v.error, updated_at = now() "
            "FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], "
            "%s::jsonb[], %s::text[]) AS v(message_id, status, sent_at, acknowledged_at, completed_at, result, error) "
            "WHERE c.message_id = v.message_id"
            # In the same round trip; it only matters at the commit, and a trace names the statement after UPDATE.
            + ("" if durable else "; SET LOCAL synchronous_commit = off"),
            [list(column) for column in columns],
        )
    return outcomes


def apply_acks(db: Database, acks: list[Ack], source: str = "rest") -> list[AckOutcome]:
    """Apply acks (a relay batch, or one REST ack) in one transaction; a message's acks apply in order.
    Metrics are counted after the commit, so a rolled-back or retried batch is never counted; `source` is the
    path the acks came by (`relay` or `rest`).

    A relay's batch commits without waiting for the WAL flush (synchronous_commit off: ~0.1 ms here, more on
    slower disks, on every command's way to `completed`). Acks on NATS are at most once already; the ones a
    PostgreSQL crash would take back are recovered like acks lost in transit (the relay re-sends the unfinished
    command and the device reports its outcome again). A REST ack, answered 200, is flushed first."""
    outcomes = db.transaction(lambda cur: _apply_ack_batch(cur, acks, durable=source != "relay"))
    for outcome in outcomes:
        metrics.acks_total.labels(source=source, outcome=metrics.ack_outcome(outcome.code, outcome.changed)).inc()
        if outcome.changed:
            for status in statuses_reached(outcome.previous_status, outcome.message["status"]):
                count(status)
        if outcome.completion_seconds is not None:
            metrics.command_completion_seconds.labels(status=outcome.message["status"]).observe(outcome.completion_seconds)
    return outcomes


def stored_traceparents(db: Database, message_ids: Iterable[str]) -> dict[str, str]:
    """message_id → the traceparent stored with the command (the relay continues that trace for an ack whose
    NATS headers carry none). Ids that are not UUIDs, unknown ids and untraced commands are left out."""
    ids = sorted({str(parsed) for value in message_ids if (parsed := parse_message_id(value)) is not None})
    if not ids:
        return {}

    def query(cur):
        cur.execute(
            "SELECT message_id, traceparent FROM commands "
            "WHERE message_id = ANY(%s::uuid[]) AND traceparent IS NOT NULL",
            (ids,),
        )
        return {str(row["message_id"]): row["traceparent"] for row in cur.fetchall()}

    return db.transaction(query)


ACK_ERRORS = {
    "MESSAGE_NOT_FOUND": (404, "The message was not found."),
    "FORBIDDEN": (403, "A device may only acknowledge its own messages."),
    "MESSAGE_EXPIRED": (409, "The message expired before this acknowledgement arrived."),
    "INVALID_TRANSITION": (409, "A message's status never moves backwards."),
}


def acknowledge(db: Database, messaging: Messaging, ack: Ack) -> dict[str, Any]:
    """The REST ack: apply one ack, tell waiters, answer with the message or raise the matching APIError."""
    outcome = apply_acks(db, [ack])[0]
    notify_final(messaging, [outcome.message] if outcome.final else [])
    if outcome.code is None:
        return outcome.message
    status, text = ACK_ERRORS[outcome.code]
    details = {"message_id": ack.message_id, "requested_status": ack.status}
    if outcome.message is not None and outcome.code != "FORBIDDEN":
        details["current_status"] = outcome.message["status"]
    raise APIError(status, outcome.code, text, details)


# --- final-status notifications and ?wait=N ------------------------------------------------------------


def notify_final(messaging: Messaging, messages: Iterable[dict[str, Any]]) -> None:
    """Tell every API worker that these messages reached a final status (best effort, not waited for: waiters
    also poll)."""
    for message in messages:
        try:
            messaging.publish(
                subjects.MESSAGE_FINAL_SUBJECT, {"message_id": message["message_id"], "status": message["status"]},
                wait=False,
            )
        except MessagingUnavailable:
            return


class Waiters:
    """Per-process registry of `?wait=N` requests, woken by MESSAGE_FINAL_SUBJECT.

    A waiting request holds its gthread thread, so waiting is bounded per process (`max_waiters`) and per API
    client within the process (`max_per_client`): probes and other clients always find a free thread. A request
    over either bound does not wait at all; it gets its 202 at once and polls (docs/decisions.md, "Bounded waiting").

    A waiter re-reads the message from PostgreSQL whenever it is woken and at least every `max_poll` seconds
    (back-off from 10 ms), so it is correct without NATS, just slower. A database error while polling ends the
    wait (the caller answers 202 with the accepted body: the command is stored, an error would invite a retry).
    """

    def __init__(self, messaging: Messaging, max_waiters: int, max_per_client: int) -> None:
        self.messaging = messaging
        self.max_waiters = max_waiters
        self.max_per_client = max_per_client
        self._events: dict[str, set[threading.Event]] = {}
        self._waiting: dict[str, int] = {}  # client id -> requests of that client waiting in this process
        self._lock = threading.Lock()
        self._subscribed = False

    def _on_final(self, _subject: str, data: bytes) -> None:
        try:
            message_id = json.loads(data)["message_id"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            events = list(self._events.get(message_id, ()))
        for event in events:
            event.set()

    def _subscribe(self) -> None:
        if self._subscribed:
            return
        with self._lock:
            if self._subscribed:
                return
            self._subscribed = True
        try:
            self.messaging.subscribe(subjects.MESSAGE_FINAL_SUBJECT, self._on_final)
        except Exception:  # noqa: BLE001 - polling still works
            self._subscribed = False
            log.warning("could not subscribe to final-status notifications; waiting by polling")

    def waiting(self) -> int:
        """How many requests wait in this process right now."""
        with self._lock:
            return sum(self._waiting.values())

    @contextlib.contextmanager
    def _slot(self, client_id: str) -> Iterator[bool]:
        """Take a waiter slot for `client_id` if both bounds allow; yields whether one was taken."""
        with self._lock:
            mine = self._waiting.get(client_id, 0)
            admitted = sum(self._waiting.values()) < self.max_waiters and mine < self.max_per_client
            if admitted:
                self._waiting[client_id] = mine + 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    left = self._waiting[client_id] - 1
                    if left:
                        self._waiting[client_id] = left
                    else:
                        del self._waiting[client_id]

    def wait(self, db: Database, message_id: str, seconds: float, client_id: str,
             max_poll: float = 1.0) -> dict[str, Any] | None:
        """The message once final; None when `seconds` pass first, at once when the waiter bounds are full, or
        when reading the message fails."""
        with self._slot(client_id) as admitted:
            if not admitted:
                log.debug("waiter bound reached; answering without waiting",
                          extra={"message_id": message_id, "client_id": client_id})
                return None
            try:
                return self._wait(db, message_id, seconds, max_poll)
            except (DatabaseUnavailable, psycopg2.Error) as exc:
                log.warning("reading the command failed while waiting for it; answering 202",
                            extra={"message_id": message_id, "error": str(exc).strip() or exc.__class__.__name__})
                return None

    def _wait(self, db: Database, message_id: str, seconds: float, max_poll: float) -> dict[str, Any] | None:
        self._subscribe()
        event = threading.Event()
        with self._lock:
            self._events.setdefault(message_id, set()).add(event)
        try:
            deadline = time.monotonic() + seconds
            delay = 0.01
            while True:
                message = get_message(db, message_id)
                if message["status"] in FINAL_STATUSES:
                    return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if event.wait(min(delay, remaining)):
                    event.clear()
                else:
                    delay = min(delay * 2, max_poll)
        finally:
            with self._lock:
                waiting = self._events.get(message_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._events[message_id]


# --- device deletion -----------------------------------------------------------------------------------


def cancel_device_commands(cur, device_id: str) -> list[dict[str, Any]]:
    """Inside the device-delete transaction: every unfinished command of the device becomes `cancelled`.

    The rows are locked first, in message-id order, like the relay's ack batches (`_apply_ack_batch`): two
    transactions that take row locks in one order cannot deadlock. A bare UPDATE would lock them in scan order."""
    cur.execute(
        "SELECT message_id FROM commands WHERE device_id = %s AND status IN ('queued', 'sent', 'acknowledged') "
        "ORDER BY message_id FOR UPDATE",
        (device_id,),
    )
    locked = [str(row["message_id"]) for row in cur.fetchall()]
    if not locked:
        return []
    cur.execute(
        "UPDATE commands SET status = 'cancelled', updated_at = now() "
        "WHERE message_id = ANY(%s::uuid[]) AND status IN ('queued', 'sent', 'acknowledged') "
        "RETURNING message_id, status",
        (locked,),
    )
    return [{"message_id": str(row["message_id"]), "status": row["status"]} for row in cur.fetchall()]


def delete_device(db: Database, device_id: str) -> list[dict[str, Any]]:
    """Delete the device and, in the same transaction, cancel its unfinished commands (their history stays).
    Returns the cancelled messages (`message_id`, `status`). It lives with the commands because cancelling them
    is the part with rules; the registry only removes the row."""

    def delete(cur):
        if not delete_device_in(cur, device_id):
            return None
        return cancel_device_commands(cur, device_id)

    cancelled = db.transaction(delete)
    if cancelled is None:
        raise device_not_found(device_id)
    count("cancelled", len(cancelled))
    return cancelled


# --- relay: redelivery, expiry, housekeeping -----------------------------------------------------------


def _redeliver(db: Database, messaging: Messaging, where: str, params: dict[str, Any], retry_seconds: float,
               reason: str) -> int:
    """Publish the open commands matching `where` (rows locked with SKIP LOCKED, so several relays share the
    work), then record the attempt. Stops at the first NATS failure; the rest wait for the next pass.
    Commands never published before count as `sent`; the others as redeliveries for `reason`."""

    def work(cur):
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS}, attempts, traceparent FROM commands WHERE {where} "
            "AND expires_at > now() AND (qos >= 1 OR status = 'queued') "
            f"ORDER BY priority DESC, created_at LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED",
            params,
        )
        published = []
        for row in cur.fetchall():
            if not _publish(messaging, row):
                break
            published.append(row)
        for row in published:
            cur.execute(
                "UPDATE commands SET status = CASE WHEN status = 'queued' THEN 'sent' ELSE status END, "
                "sent_at = COALESCE(sent_at, now()), attempts = attempts + 1, "
                "updated_at = now(), next_attempt_at = now() + make_interval(secs => %s) WHERE message_id = %s",
                (retry_delay(row["attempts"] + 1, retry_seconds), str(row["message_id"])),
            )
        return sum(1 for row in published if row["status"] == "queued"), len(published)

    if not messaging.is_connected():
        return 0
    newly_sent, published = db.transaction(work)
    count("sent", newly_sent)
    if published > newly_sent:
        metrics.command_redeliveries_total.labels(reason=reason).inc(published - newly_sent)
    return published


def redeliver_due(db: Database, messaging: Messaging, retry_seconds: float) -> int:
    """The periodic pass: never-sent commands, and unfinished qos ≥ 1 ones whose back-off has passed.

    `acknowledged` commands are included: if the device's `completed`/`failed` ack was lost (a relay died with it
    in hand, the device's own link dropped it), the re-sent envelope makes the device report its outcome again
    (devices de-duplicate by message_id). A device still working on it ignores the duplicate; the back-off
    doubles per attempt (at most MAX_RETRY_SECONDS), so a long-running command costs a few duplicates, no more."""
    return _redeliver(db, messaging, "status IN ('queued', 'sent', 'acknowledged') AND next_attempt_at <= now()", {},
                      retry_seconds, "retry")


def redeliver_all(db: Database, messaging: Messaging, retry_seconds: float) -> int:
    """On relay start and NATS reconnect: every unfinished command, whatever its back-off. Acks published while
    no relay listened were lost, including a completion report after an `acknowledged` that did arrive, so
    acknowledged qos ≥ 1 commands are re-sent too: the device answers a duplicate with its outcome."""
    started = db.transaction(lambda cur: (cur.execute("SELECT now() AS now"), cur.fetchone())[1]["now"])
    total = 0
    while True:
        published = _redeliver(
            db, messaging, "status IN ('queued', 'sent', 'acknowledged') AND updated_at < %(started)s",
            {"started": started}, retry_seconds, "restart",
        )
        total += published
        if published < SWEEP_BATCH:
            return total


def redeliver_for_devices(db: Database, messaging: Messaging, device_ids: list[str], retry_seconds: float) -> int:
    """A device came (back) online: re-send its open commands now."""
    if not device_ids:
        return 0
    return _redeliver(
        db, messaging, "device_id = ANY(%(devices)s) AND status IN ('queued', 'sent')", {"devices": device_ids},
        retry_seconds, "device_online",
    )


def expire_due(db: Database) -> list[dict[str, Any]]:
    """Unfinished commands past their TTL become `expired` (one sweeper wins each row)."""

    def work(cur):
        cur.execute(
            "UPDATE commands SET status = 'expired', updated_at = now() WHERE message_id IN ("
            "  SELECT message_id FROM commands "
            "WHERE status IN ('queued', 'sent', 'acknowledged') AND expires_at <= now()"
            f"  ORDER BY expires_at LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED) "
            "RETURNING message_id, device_id, status, request_id",
        )
        return [{**row, "message_id": str(row["message_id"])} for row in cur.fetchall()]

    expired = db.transaction(work)
    count("expired", len(expired))
    return expired


def purge_idempotency_keys(db: Database) -> int:
    def work(cur):
        cur.execute(
            "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
            f"WHERE created_at < now() - interval '{IDEMPOTENCY_WINDOW}' LIMIT 1000 FOR UPDATE SKIP LOCKED)"
        )
        return cur.rowcount

    return db.transaction(work)


def devices_came_online(
    db: Database, messaging: Messaging, came_online: list[tuple[str, str]], retry_seconds: float,
) -> None:
    """After heartbeats committed: an `online` event per device that was not online (pairs of device id and
    previous status), then its open commands are re-sent (best effort; the periodic pass catches up)."""
    for device_id, previous in came_online:
        publish_device_event(messaging, "online", device_id, previous_status=previous)
    if came_online and messaging.is_connected():
        redeliver_for_devices(db, messaging, [device_id for device_id, _ in came_online], retry_seconds)
