"""The relay's periodic work on commands: redelivery with back-off, expiry, cancellation, idempotency-key purge."""

from __future__ import annotations

from typing import Any

from app.infra.db import Database
from app.infra.messaging import Messaging
from app.services import events
from app.services.commands.acks import notify_final
from app.services.commands.messages import MESSAGE_COLUMNS, count
from app.services.commands.retype import recheck_rows
from app.services.commands.submit import IDEMPOTENCY_WINDOW, _publish
from app.services.events import publish_device_event
from app.services.registry import delete_device_in, device_not_found, record_deleted
from app.telemetry import metrics

MAX_RETRY_SECONDS = 300.0


SWEEP_BATCH = 500


def retry_delay(attempts: int, base: float) -> float:
    """Seconds until a command published `attempts` times may be re-sent: base, 2×base, 4×base, … ≤ 300 s."""
    return min(base * 2 ** min(max(attempts - 1, 0), 16), max(base, MAX_RETRY_SECONDS))


def cancel_device_commands(cur, device_id: str, device_type: str | None = None) -> list[dict[str, Any]]:
    """Inside the device-delete transaction: every unfinished command of the device becomes `cancelled`, each
    with its `command.status` event (`device_type`: the deleted device's, which the row no longer tells).

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
        "RETURNING message_id, command, status, result, error",
        (locked,),
    )
    rows = sorted(cur.fetchall(), key=lambda row: str(row["message_id"]))
    events.record_events(cur, [(events.COMMAND_STATUS, device_id, events.command_status_data(row), device_type)
                               for row in rows])
    return [{"message_id": str(row["message_id"]), "status": row["status"]} for row in rows]


def delete_device(db: Database, device_id: str, timeout: int) -> list[dict[str, Any]]:
    """Delete the device and, in the same transaction, cancel its unfinished commands (their history stays).
    Returns the cancelled messages (`message_id`, `status`). It lives with the commands because cancelling them
    is the part with rules; the registry only removes the row. Events: the cancellations, then `device.deleted`
    with the device's last state (`timeout`: HEARTBEAT_TIMEOUT_SECONDS, for the status it read as)."""

    def delete(cur):
        device = delete_device_in(cur, device_id, timeout)
        if device is None:
            return None
        cancelled = cancel_device_commands(cur, device_id, device["device_type"])
        record_deleted(cur, device)
        return cancelled

    cancelled = db.transaction(delete)
    if cancelled is None:
        raise device_not_found(device_id)
    count("cancelled", len(cancelled))
    return cancelled


def _redeliver(db: Database, messaging: Messaging, where: str, params: dict[str, Any], retry_seconds: float,
               reason: str) -> int:
    """Publish the open commands matching `where` (rows locked with SKIP LOCKED, so several relays share the
    work), then record the attempt. Stops at the first NATS failure; the rest wait for the next pass.
    Commands never published before count as `sent`; the others as redeliveries for `reason`. Commands checked
    against an older version of their device type are checked again first (app/services/commands/retype.py):
    those that no longer fit are cancelled instead of delivered."""

    def work(cur):
        cur.execute(
            f"SELECT {MESSAGE_COLUMNS}, attempts, traceparent FROM commands WHERE {where} "
            "AND expires_at > now() AND (qos >= 1 OR status = 'queued') "
            f"ORDER BY priority DESC, created_at LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED",
            params,
        )
        deliverable, cancelled = recheck_rows(cur, db.url, cur.fetchall())
        published = []
        for row in deliverable:
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
        events.record_events(cur, [(events.COMMAND_STATUS, row["device_id"], events.command_status_data(row, "sent"),
                                    None) for row in published if row["status"] == "queued"])
        return sum(1 for row in published if row["status"] == "queued"), len(published), cancelled

    if not messaging.is_connected():
        return 0
    newly_sent, published, cancelled = db.transaction(work)
    count("cancelled", len(cancelled))
    notify_final(messaging, cancelled)
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
            "RETURNING message_id, device_id, command, status, result, error, request_id",
        )
        rows = sorted(cur.fetchall(), key=lambda row: str(row["message_id"]))
        events.record_events(cur, [(events.COMMAND_STATUS, row["device_id"], events.command_status_data(row), None)
                                   for row in rows])
        return [{"message_id": str(row["message_id"]), "device_id": row["device_id"], "status": row["status"],
                 "request_id": row["request_id"]} for row in rows]

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
