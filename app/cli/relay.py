"""`uaip-hub relay`: the worker between NATS and PostgreSQL (docs/architecture.md, "The path of a command").

It consumes device acks and heartbeats in a NATS queue group (several relays share the stream; one subscription
per possible token count of a device id, app.infra.messaging.relay_subscriptions), applies them
in batches (one transaction per batch), and every UAIP_RELAY_SWEEP_SECONDS it expires commands past their TTL,
marks silent devices offline (publishing `offline` once per transition), and publishes commands that are due:
never sent (NATS was down at submit time), or unfinished (`sent`, or `acknowledged` with its outcome not yet
reported; qos ≥ 1) after their back-off. On start
and on every NATS (re)connect it re-sends all open commands, since acks published while no relay listened were
lost. All SQL is in app/services; this module is the loop.

NATS messages are handed from the NATS thread to the main thread through a bounded queue. PostgreSQL outages are
retried with back-off (the batch in hand is kept); NATS outages are handled by the client's reconnects, and while
NATS is away every publish fails at once, so a sweep never stalls on it (its events are dropped, commands wait).
SIGTERM/SIGINT: stop taking messages (drain the subscriptions), apply what was received, exit 0.

With tracing on (docs/tracing.md), a batch of acks is applied in the trace of the command(s) it answers: the
`traceparent` a device put on its ack, else the one stored with the command.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pydantic

from app.api.models import AckBody
from app.core.config import Settings
from app.core.json_input import InvalidJSON, decode_json
from app.infra.db import Database, DatabaseUnavailable
from app.infra.messaging import Messaging, ack_subject, device_id_from_subject, relay_subscriptions
from app.services import audit, clients, registry
from app.services.commands import acks, messages, sweeps
from app.services.events import publish_device_event
from app.telemetry import metrics, tracing
from app.web.parsing import validation_details

log = logging.getLogger("app.cli.relay")
T = TypeVar("T")

BATCH_MAX = 500
INBOX_MAX = 100_000
DRAIN_SECONDS = 10.0
DB_RETRY_MAX_SECONDS = 5.0
# A batch whose acks are all `acknowledged` waits this long for an outcome ack (see Relay._take).
OUTCOME_LINGER_SECONDS = 0.002
# Retention (audit entries older than AUDIT_RETENTION_DAYS, revoked-token rows of expired tokens) runs this often.
RETENTION_SWEEP_SECONDS = 60.0


class Relay:
    def __init__(self, db: Database, messaging: Messaging, settings: Settings) -> None:
        self.db = db
        self.messaging = messaging
        self.settings = settings
        self.inbox: queue.Queue[tuple[str, bytes, dict | None]] = queue.Queue(INBOX_MAX)
        self.stopping = threading.Event()
        self.stop_deadline = float("inf")
        self.resend_all = threading.Event()
        self.dropped = 0
        self.next_retention = 0.0

    # -- NATS thread ----------------------------------------------------------------------------------

    def _receive(self, subject: str, data: bytes, headers: dict | None = None) -> None:
        try:
            self.inbox.put_nowait((subject, data, headers if tracing.active else None))
        except queue.Full:
            self.dropped += 1  # recovered by redelivery: the device re-acks a re-sent command
            if self.dropped % 1000 == 1:
                log.warning("relay inbox full; dropping NATS messages", extra={"dropped": self.dropped})

    async def _on_connected(self) -> None:
        self.resend_all.set()

    # -- main thread ----------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if not self.stopping.is_set():
            self.stop_deadline = time.monotonic() + DRAIN_SECONDS
            self.stopping.set()
            log.info("relay stopping", extra={"signal": signum})

    def run(self) -> int:
        group = self.settings.relay_queue_group
        self.messaging.on_reconnect.append(self._on_connected)
        self.messaging.start()
        for subject in relay_subscriptions():  # one per token count: device ids may contain dots
            self.messaging.subscribe(subject, self._receive, queue=group, with_headers=subject.endswith(".acks"))
        log.info("relay started", extra={"queue_group": group, "sweep_seconds": self.settings.relay_sweep_seconds})
        next_sweep = 0.0
        while not self.stopping.is_set():
            if self.resend_all.is_set() and self.messaging.is_connected():
                self.resend_all.clear()
                resent = self._db("re-send open commands", lambda: sweeps.redeliver_all(
                    self.db, self.messaging, self.settings.command_retry_seconds))
                if resent:
                    log.info("re-sent open commands", extra={"count": resent})
            batch = self._take(max(0.0, next_sweep - time.monotonic()))
            if batch:
                self._handle(batch)
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self.settings.relay_sweep_seconds
        # Graceful stop: no new messages, then everything already received is applied.
        self.messaging.drain_subscriptions()
        while not self.inbox.empty() and time.monotonic() < self.stop_deadline:
            self._handle(self._take(0))
        left = self.inbox.qsize()
        if left:
            log.warning("relay stopped with unapplied messages (re-sent commands recover them)", extra={"count": left})
        self.messaging.close()
        log.info("relay stopped")
        return 0

    def _take(self, timeout: float) -> list[tuple[str, bytes, dict | None]]:
        """The next batch: what arrived so far, waiting up to `timeout` for the first message.

        A device acks `acknowledged` and then its outcome, usually a fraction of a millisecond apart. Applied as
        they come, the outcome (what waiting clients want) queues behind the first ack's transaction; so a
        batch that holds an `acknowledged` ack and no outcome waits up to OUTCOME_LINGER_SECONDS for more, and
        both apply in one transaction. Only the timing of `acknowledged` changes, by 2 ms at most."""
        try:
            batch = [self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()]
        except queue.Empty:
            return []
        while len(batch) < BATCH_MAX:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        linger_until = time.monotonic() + OUTCOME_LINGER_SECONDS
        waiting = any(_ack_kind(message) == "acknowledged" for message in batch) and \
            not any(_ack_kind(message) == "outcome" for message in batch)
        while waiting and len(batch) < BATCH_MAX and (left := linger_until - time.monotonic()) > 0:
            try:
                message = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            batch.append(message)
            waiting = _ack_kind(message) != "outcome"
        return batch

    def _db(self, what: str, work: Callable[[], T]) -> T | None:
        """Run `work`, retrying while PostgreSQL is unavailable (until the stop deadline once stopping)."""
        delay = 0.2
        while True:
            try:
                return work()
            except DatabaseUnavailable as exc:
                if self.stopping.is_set() and time.monotonic() >= self.stop_deadline:
                    log.error("database unavailable; giving up", extra={"work": what, "error": str(exc)})
                    return None
                log.warning("database unavailable; retrying", extra={"work": what, "error": str(exc)})
                time.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)
            except Exception:  # noqa: BLE001 - a bug or bad data must not stop the relay
                log.exception("relay work failed", extra={"work": what})
                return None

    # -- acks and heartbeats --------------------------------------------------------------------------

    def _handle(self, batch: list[tuple[str, bytes]]) -> None:
        acks: list[acks.Ack] = []
        ack_headers: list[dict | None] = []
        heartbeats: dict[str, str] = {}
        for subject, data, headers in batch:
            device_id = device_id_from_subject(subject)
            if device_id is None:
                continue
            if subject.endswith(".acks"):
                try:
                    acks.append(ack_from_nats(device_id, data))
                    ack_headers.append(headers)
                except InvalidJSON as exc:
                    # Dropped alone: the rest of the batch applies (the device re-acks a re-sent command).
                    metrics.acks_total.labels(source="relay", outcome="malformed").inc()
                    log.warning("malformed ack dropped", extra={"device_id": device_id, "reason": exc.message})
            elif subject.endswith(".heartbeat"):
                heartbeats[device_id] = _heartbeat_status(data)
        if acks:
            with tracing.processing(ack_subject("*"), "*", self._trace_carriers(acks, ack_headers), {
                "messaging.batch.message_count": len(acks),
                "messaging.consumer.group.name": self.settings.relay_queue_group,
            }):
                self._apply_acks(acks)
        if heartbeats:
            self._apply_heartbeats(heartbeats)

    def _apply_acks(self, acks: list[acks.Ack]) -> None:
        outcomes = self._db("apply acks", lambda: acks.apply_acks(self.db, acks, source="relay"))
        if outcomes is None and len(acks) > 1 and not self.stopping.is_set():
            # Not an outage (that is retried above): apply one by one so one bad ack cannot sink the batch.
            outcomes = [o for ack in acks for o in (self._db(
                "apply ack", lambda a=ack: acks.apply_acks(self.db, [a], source="relay")) or [])]
        # Waiting clients first, then the log lines.
        acks.notify_final(self.messaging, [o.message for o in outcomes or [] if o.final])
        for outcome in outcomes or []:
            ack = outcome.ack
            extra = {"request_id": outcome.request_id, "message_id": ack.message_id, "device_id": ack.device_id,
                     "ack_status": ack.status}
            if outcome.code is None and outcome.changed:
                log.info("command %s", outcome.message["status"], extra=extra)
            elif outcome.code is not None:
                log.warning("ack refused: %s", outcome.code,
                            extra={**extra, "current_status": (outcome.message or {}).get("status")})

    def _trace_carriers(self, acks: list[acks.Ack], headers: list[dict | None]) -> list[dict | None]:
        """The trace context each ack continues: the `traceparent` in its NATS headers, else the one stored with
        its command (one read, only for acks that carry none). Nothing when tracing is off."""
        if not tracing.active:
            return []
        carriers = [h if h and h.get(tracing.TRACEPARENT) else None for h in headers]
        missing = [ack.message_id for ack, carrier in zip(acks, carriers, strict=True) if carrier is None]
        if missing:
            stored = self._db("read trace contexts", lambda: acks.stored_traceparents(self.db, missing)) or {}
            for index, ack in enumerate(acks):
                parsed = messages.parse_message_id(ack.message_id)
                if carriers[index] is None and parsed is not None and str(parsed) in stored:
                    carriers[index] = {tracing.TRACEPARENT: stored[str(parsed)]}
        return carriers

    def _apply_heartbeats(self, heartbeats: dict[str, str]) -> None:
        timeout = self.settings.heartbeat_timeout_seconds

        def work():
            def each(cur):
                return [(device_id, registry.heartbeat_in(cur, device_id, status, timeout))
                        for device_id, status in sorted(heartbeats.items())]
            return self.db.transaction(each)

        rows = self._db("apply heartbeats", work) or []
        came_online = [(device_id, row["previous_status"]) for device_id, row in rows
                       if row is not None and row["status"] == "online" and row["previous_status"] != "online"]
        if came_online:
            self._db("device online", lambda: sweeps.devices_came_online(
                self.db, self.messaging, came_online, self.settings.command_retry_seconds))

    # -- periodic sweep -------------------------------------------------------------------------------

    def _sweep(self) -> None:
        for expired in self._db("expire commands", lambda: sweeps.expire_due(self.db)) or []:
            log.info("command expired", extra={"request_id": expired["request_id"], "message_id": expired["message_id"],
                                               "device_id": expired["device_id"]})
            acks.notify_final(self.messaging, [expired])
        stale = self._db("mark devices offline", lambda: registry.mark_stale_devices_offline(
            self.db, self.settings.heartbeat_timeout_seconds)) or []
        for device in stale:
            publish_device_event(self.messaging, "offline", device["device_id"], last_seen=device["last_seen"])
        self._db("redeliver commands", lambda: sweeps.redeliver_due(
            self.db, self.messaging, self.settings.command_retry_seconds))
        self._db("purge idempotency keys", lambda: sweeps.purge_idempotency_keys(self.db))
        if time.monotonic() >= self.next_retention:
            self.next_retention = time.monotonic() + RETENTION_SWEEP_SECONDS
            self._db("purge the audit log", lambda: audit.purge_audit(self.db, self.settings.audit_retention_days))
            self._db("purge revoked tokens", lambda: clients.purge_expired_revocations(self.db))
        # The relay's heartbeat for alerting: it stops moving when the loop hangs or PostgreSQL is out of reach,
        # while the metrics thread would still answer.
        metrics.relay_last_sweep_timestamp_seconds.labels(queue_group=self.settings.relay_queue_group).set_to_current_time()


def _ack_kind(message: tuple[str, bytes, dict | None]) -> str | None:
    """"acknowledged", "outcome" (completed or failed) or None, judged from the raw bytes (a hint for batching,
    not a parse: an ack that would be misjudged is only batched differently)."""
    subject, data = message[0], message[1]
    if not subject.endswith(".acks"):
        return None
    if b'"completed"' in data or b'"failed"' in data:
        return "outcome"
    return "acknowledged" if b'"acknowledged"' in data else None


def _heartbeat_status(data: bytes) -> str:
    """`{"status": "online"|"error", ...}` or an empty body (online)."""
    try:
        body = json.loads(data) if data.strip() else {}
    except ValueError:
        return "online"
    return "error" if isinstance(body, dict) and body.get("status") == "error" else "online"


def serve_metrics(port: int) -> None:
    """The relay's own /metrics: what this process applies and sees (uaip_commands_total, uaip_acks_total{source=
    "relay"}, uaip_command_completion_seconds, uaip_command_redeliveries_total, uaip_nats_connected,
    uaip_relay_last_sweep_timestamp_seconds, process metrics; docs/observability.md), served by
    prometheus_client's HTTP server on a daemon thread. Port 0 turns it off.

    Several relays may run on one host (one queue group); the metrics are auxiliary to the relay's job, so a
    port already taken costs a warning, not the relay."""
    if not port:
        return
    from prometheus_client import disable_created_metrics, start_http_server

    disable_created_metrics()  # no *_created series: the API's multiprocess /metrics has none either

    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("relay metrics not served: port %d is unavailable (%s); set UAIP_RELAY_METRICS_PORT", port, exc)
        return
    log.info("relay metrics on :%d/metrics", port)


def run_relay(db: Database, messaging: Messaging, settings: Settings) -> int:
    serve_metrics(settings.relay_metrics_port)
    tracing.start(tracing.RELAY_SERVICE)
    relay = Relay(db, messaging, settings)
    signal.signal(signal.SIGTERM, relay.request_stop)
    signal.signal(signal.SIGINT, relay.request_stop)
    try:
        return relay.run()
    finally:
        tracing.shutdown()  # export the spans still queued (bounded: an unreachable collector cannot hold the exit)


def ack_from_nats(device_id: str, data: bytes) -> acks.Ack:
    """An ack published on `uaip.devices.{id}.acks`, decoded and validated like the REST body (unknown fields
    ignored). Raises InvalidJSON saying what is wrong, so the relay can drop this one message and log why."""
    raw = decode_json(data)
    if not isinstance(raw, dict) or not isinstance(raw.get("message_id"), str):
        raise InvalidJSON("An ack must be a JSON object with a string message_id.")
    try:
        body = AckBody.model_validate({key: raw[key] for key in ("status", "result", "error") if key in raw})
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{field}: {text}" for field, text in validation_details(exc).items())
        raise InvalidJSON(f"The ack is invalid ({problems}).") from None
    return acks.Ack(device_id, raw["message_id"], body.status, body.result, body.error)
