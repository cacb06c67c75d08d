"""Submitting a command: idempotency, the typed check, the queue rules, the insert, then publish and mark sent.

Durability (docs/decisions.md, "Durability"): a command is inserted (`queued`) and committed before it is published on
`uaip.devices.{id}.commands`; only after a successful publish is it marked `sent`. If NATS is down the command
stays `queued` with `next_attempt_at` = now, and the relay publishes it when NATS is back. Once the insert has
committed the submitter gets 202, whatever fails afterwards (publish, the `sent` mark, reading it under
`?wait`): an error would invite a retry, and a retry a second actuation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import Any

from psycopg2.extras import Json

from app.core.errors import APIError
from app.infra import subjects
from app.infra.db import Database, execute_prepared
from app.infra.messaging import Messaging, MessagingUnavailable
from app.services import device_types
from app.services.audit import record_audit
from app.services.commands.messages import MESSAGE_COLUMNS, accepted_view, count, envelope, log
from app.services.events import command_status_insert
from app.services.registry import EFFECTIVE_STATUS, device_not_found
from app.telemetry import tracing

IDEMPOTENCY_WINDOW = "24 hours"


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
    # Validation runs here, before the transaction locks the device row (the relay's heartbeat batch needs it).
    prechecked = device_types.precheck_command(db, db.url, spec.device_id, spec.command, spec.params,
                                               spec.pointer_prefix)

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
            f"SELECT {EFFECTIVE_STATUS} AS status, d.device_id, d.device_type, {device_types.DEVICE_TYPE_COLUMNS} "
            f"FROM devices d {device_types.DEVICE_TYPE_JOIN} WHERE d.device_id = %(id)s::text FOR UPDATE OF d",
            {"id": spec.device_id, "timeout": heartbeat_timeout},
        )
        device = cur.fetchone()
        if device is None:
            raise device_not_found(spec.device_id)
        type_version = device_types.check_command(cur, db.url, device, spec.command, spec.params, spec.pointer_prefix,
                                                  prechecked)
        if spec.qos == 0 and device["status"] not in ("online", "error"):
            raise APIError(
                503, "DEVICE_OFFLINE",
                f"Device '{spec.device_id}' is {device['status']}; a qos 0 command cannot wait for it.",
                {"device_id": spec.device_id, "device_status": device["status"]},
            )
        # The device row lock above serialises submits per device, so the count of its open commands cannot be
        # raced past the cap; counting and inserting in one statement saves a round trip (it starts after the
        # lock was granted, so its snapshot sees every command committed by the lock's previous holders). The
        # `queued` event is written by the same statement.
        execute_prepared(
            cur,
            "WITH c AS (INSERT INTO commands (message_id, device_id, command, params, qos, priority, request_id, "
            "client_id, source, traceparent, device_type, type_version, expires_at, next_attempt_at) SELECT "
            "%(id)s::uuid, %(device)s::text, %(command)s::text, %(params)s::jsonb, %(qos)s::smallint, "
            "%(priority)s::smallint, %(request_id)s::text, %(client)s::text, %(source)s::text, "
            "%(traceparent)s::text, %(type)s::text, %(type_version)s::integer, "
            "now() + make_interval(secs => %(ttl)s::float8), "
            # The relay leaves a fresh command to this request (it publishes next); if this process dies before
            # publishing, the relay picks the command up once the retry delay has passed.
            "now() + make_interval(secs => %(retry)s::float8) "
            "WHERE (SELECT count(*) FROM commands WHERE device_id = %(device)s::text AND status IN ('queued', 'sent') "
            "AND expires_at > now()) < %(max_pending)s::bigint "
            f"RETURNING {MESSAGE_COLUMNS}, traceparent), "
            f"e AS ({command_status_insert('c')}) SELECT * FROM c",
            {
                "id": str(message_id), "device": spec.device_id, "command": spec.command, "params": Json(spec.params),
                "qos": spec.qos, "priority": spec.priority, "request_id": request_id, "client": client_id,
                "source": spec.source, "traceparent": traceparent, "ttl": spec.ttl_ms / 1000.0,
                "retry": retry_seconds, "max_pending": max_pending, "type": device["device_type"],
                "type_version": type_version,
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
        record_audit(cur, "command.submit", f"command:{message_id}",
                     {"device_id": spec.device_id, "command": spec.command, "source": spec.source})
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
        "WHERE message_id = ANY(%(published)s::uuid[]) AND status = 'queued' "
        "RETURNING message_id, device_id, command, status, result, error)",
        f"sent_events AS ({command_status_insert('sent')})",
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
