"""Acknowledgements from devices (REST and, through the relay, NATS): status only moves forward.

queued → sent → acknowledged → completed | failed; expired and cancelled are final as well. Every transition is a
conditional UPDATE (or a row lock then UPDATE), so two relays, a REST ack and the expiry sweep can race without a
status ever going backwards or a metric being counted twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from psycopg2.extras import Json

from app.core.errors import APIError
from app.core.statuses import ACK_STATUSES, FINAL_STATUSES, RANK, UNFINISHED_STATUSES
from app.infra import subjects
from app.infra.db import Database
from app.infra.messaging import Messaging, MessagingUnavailable
from app.services import events
from app.services.commands.messages import MESSAGE_COLUMNS, count, message_view, parse_message_id
from app.telemetry import metrics


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
        events.record_events(cur, status_events(outcomes))
    return outcomes


def status_events(outcomes: list[AckOutcome]) -> list[tuple[str, str, dict, None]]:
    """A `command.status` event for every status the acks made a command reach, in arrival order, implied steps
    included (an ack that skips `sent` or `acknowledged` reaches them too)."""
    found = []
    for outcome in outcomes:
        if not outcome.changed:
            continue
        message = outcome.message
        for status in statuses_reached(outcome.previous_status, message["status"]):
            found.append((events.COMMAND_STATUS, message["device_id"], events.command_status_data(message, status),
                          None))
    return found


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
