"""`uaip-hub relay`: the worker between NATS and PostgreSQL (docs/architecture.md, "The path of a command").

It consumes device acks and heartbeats in a NATS queue group (several relays share the stream; one subscription
per possible token count of a device id, app.infra.subjects.relay_subscriptions), applies them
in batches (one transaction per batch), and every UAIP_RELAY_SWEEP_SECONDS, on a thread of its own so that no
batch waits behind it, it expires commands past their TTL,
marks silent devices offline (publishing `offline` once per transition), deletes events older than
EVENT_RETENTION_HOURS (a batched delete by time), and publishes commands that are due:
never sent (NATS was down at submit time), or unfinished (`sent`, or `acknowledged` with its outcome not yet
reported; qos ≥ 1) after their back-off. On start
and on every NATS (re)connect it re-sends all open commands, since acks published while no relay listened were
lost. All SQL is in app/services; this module is the loop.

NATS messages are handed from the NATS thread to the main thread through a bounded inbox queued per device and
taken in turns (app/cli/relay_inbox.py), so one device's flood delays another device's ack by one batch at most.
Every body is size- and depth-checked before it is parsed (app/cli/relay_input.py); a bad one is dropped alone,
counted in uaip_nats_messages_dropped_total and logged (at most LOG_DROPS_PER_SECOND lines a second), and no
message, however malformed, ends the loop. PostgreSQL outages are
retried with back-off (the batch in hand is kept); NATS outages are handled by the client's reconnects, and while
NATS is away every publish fails at once, so a sweep never stalls on it (its events are dropped, commands wait).
SIGTERM/SIGINT: stop taking messages (drain the subscriptions), apply what was received, exit 0.

Device state reports (`.state.reported`) arrive through the same inbox and are applied per batch by
app/cli/relay_state.py, which also answers `.state.get` on a thread of its own; the sweep keeps the state
history's partitions (docs/state.md).

With tracing on (docs/tracing.md), a batch of acks is applied in the trace of the command(s) it answers: the
`traceparent` a device put on its ack, else the one stored with the command.

With NATS_AUTH_CALLOUT=true the relay also answers the NATS server's auth callout (app/cli/relay_callout.py),
admitting devices with their own credentials (docs/nats-security.md).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import app.cli.relay_input as relay_input
from app.cli import relay_state
from app.cli.relay_callout import CalloutResponder
from app.cli.relay_inbox import FairInbox
from app.cli.relay_metrics import MetricsPortTaken, serve_metrics
from app.core.config import Settings
from app.infra.db import Database, DatabaseUnavailable
from app.infra.messaging import Messaging
from app.infra.nats_callout import CALLOUT_SUBJECT, CalloutError
from app.infra.subjects import ack_subject, device_id_from_subject, relay_subscriptions
from app.services import audit, clients, event_log, registry, state, state_history
from app.services.commands import acks as ack_service
from app.services.commands import messages, sweeps
from app.services.events import publish_device_event
from app.telemetry import metrics, tracing

log = logging.getLogger("app.cli.relay")
T = TypeVar("T")
Message = tuple[str, bytes, dict | None]  # subject, body, NATS headers (kept only with tracing on)

BATCH_MAX = 500
BATCH_MAX_BYTES = 1024 * 1024  # with bodies up to MAX_MESSAGE_SIZE_BYTES, a batch still parses in milliseconds
INBOX_MAX = 100_000
DEVICE_INBOX_MAX = 2_000  # queued messages of one device (a device acks a full queue of 100 commands twice)
PER_TURN = 16  # messages of one device per turn when the batch is filled round-robin
DEVICE_RATE = 500  # messages a second one device may queue on average (bursts of DEVICE_INBOX_MAX)
DRAIN_SECONDS = 10.0
DB_RETRY_MAX_SECONDS = 5.0
# A batch whose acks are all `acknowledged` waits this long for an outcome ack (see Relay._take).
OUTCOME_LINGER_SECONDS = 0.002
# Log lines about dropped or refused device messages: a flood is counted in full, but logged only this much.
LOG_DROPS_PER_SECOND = 10
LOG_DROPS_BURST = 20
HEARTBEAT_LOCK_TIMEOUT_MS = 200
CALLOUT_WORKERS = 2  # scrypt checks of device secrets run here, off the NATS thread
CALLOUT_WAITING_MAX = 64
PARTITION_CHECK_SECONDS = 600.0  # how often the relay looks after the state history's partitions
# Retention (audit entries older than AUDIT_RETENTION_DAYS, revoked-token rows of expired tokens) runs this often.
RETENTION_SWEEP_SECONDS = 60.0
# The main loop waits at most this long for a message, so it notices a re-send request or a stop promptly.
LOOP_WAIT_SECONDS = 0.5
# The sweep marks itself done (uaip_relay_last_sweep_timestamp_seconds) only while the main loop has turned within
# this many seconds (or the sweep interval, if longer): a loop stuck on one batch stops the gauge, as it always did.
LOOP_ALIVE_SECONDS = 10.0


_MALFORMED = frozenset({relay_input.TOO_LARGE, relay_input.TOO_DEEP, relay_input.INVALID_JSON, relay_input.INVALID})


def subject_kind(subject: str) -> str:
    """`acks` or `heartbeat`: the last token of a device subject the relay consumes."""
    return subject.rpartition(".")[2]


class _LogBudget:
    """A token bucket for log lines about bad device messages (any thread): `allow()` says whether this one may be
    written and, when it may, how many were not written since the last one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._stamp, self._suppressed = float(burst), time.monotonic(), 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens < 1:
                self._suppressed += 1
                return False, 0
            self._tokens -= 1
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed


class Relay:
    def __init__(self, db: Database, messaging: Messaging, settings: Settings,
                 callout: CalloutResponder | None = None) -> None:
        self.db = db
        self.messaging = messaging
        self.settings = settings
        self.callout = callout
        self.inbox: FairInbox[Message] = FairInbox(INBOX_MAX, DEVICE_INBOX_MAX, PER_TURN, DEVICE_RATE)
        self.stopping = threading.Event()
        self.stop_deadline = float("inf")
        self.resend_all = threading.Event()
        self.log_budget = _LogBudget(LOG_DROPS_PER_SECOND, LOG_DROPS_BURST)
        limits = state.Limits(settings.max_state_bytes, settings.heartbeat_timeout_seconds,
                              settings.state_history_hours)
        self.state_reports = relay_state.StateReports(db, messaging, limits, settings.database_url,
                                                      settings.max_message_size_bytes, settings.command_retry_seconds)
        self.state_requests = relay_state.StateRequests(db, messaging, settings.relay_queue_group)
        self.next_partition_check = 0.0
        self.next_retention = 0.0
        self.loop_turned_at = time.monotonic()  # the main loop's last turn (read by the sweep thread)
        self.sweeper = threading.Thread(target=self._sweep_loop, name="relay-sweep", daemon=True)
        self._drop_counters: dict[tuple[str, str], object] = {}

    # -- NATS thread ----------------------------------------------------------------------------------

    def _receive(self, subject: str, data: bytes, headers: dict | None = None) -> None:
        """Queue one message for its device: a few microseconds, never raising, whatever the message."""
        kind = subject_kind(subject)
        device_id = device_id_from_subject(subject)
        if device_id is None:
            self.drop(kind, relay_input.INVALID, None, "The subject names no device.")
            return
        # Refused before it takes room in the inbox (a state report is checked, and counted, by its own parser).
        if len(data) > self.settings.max_message_size_bytes and not relay_state.is_report(subject):
            self.drop(kind, relay_input.TOO_LARGE, device_id,
                      f"The body is larger than {self.settings.max_message_size_bytes} bytes.")
            return
        refused = self.inbox.put(device_id, (subject, data, headers if tracing.active else None), len(data))
        if refused is not None:
            # Recovered by redelivery: the device acks a re-sent command again.
            self.drop(kind, refused, device_id, "The relay's inbox is full for this device or overall.")

    async def _on_connected(self) -> None:
        self.resend_all.set()

    def drop(self, kind: str, reason: str, device_id: str | None, detail: str) -> None:
        """Count a device message that is not applied, and log it within the log budget (any thread)."""
        counter = self._drop_counters.get((kind, reason))
        if counter is None:  # labels() takes a lock and builds a key: done once per pair, not per dropped message
            counter = self._drop_counters[(kind, reason)] = metrics.nats_messages_dropped_total.labels(
                subject_kind=kind, reason=reason)
        counter.inc()
        if kind == "acks" and reason in _MALFORMED:
            metrics.acks_total.labels(source="relay", outcome="malformed").inc()
        elif kind == "acks" and reason == relay_input.UNKNOWN_MESSAGE:
            metrics.acks_total.labels(source="relay", outcome="not_found").inc()
        elif kind == "reported":  # a state report refused before it reached relay_state (too large, inbox full)
            metrics.state_reports_total.labels(outcome="rejected").inc()
        allowed, suppressed = self.log_budget.allow()
        if allowed:
            noun = {"acks": "ack", "heartbeat": "heartbeat", "reported": "state report"}.get(kind, "NATS message")
            extra = {"device_id": device_id, "subject_kind": kind, "reason": reason, "detail": detail}
            if suppressed:
                extra["not_logged_before"] = suppressed
            log.warning("malformed %s dropped" if reason in _MALFORMED else "%s dropped", noun, extra=extra)

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
        for subject in relay_state.report_subscriptions():
            self.messaging.subscribe(subject, self._receive, queue=group)
        self.state_requests.start()
        if self.callout is not None:
            self.messaging.serve(CALLOUT_SUBJECT, self.callout.answer, queue=group, workers=CALLOUT_WORKERS,
                                 max_waiting=CALLOUT_WAITING_MAX, on_busy=self.callout.busy)
        log.info("relay started", extra={"queue_group": group, "sweep_seconds": self.settings.relay_sweep_seconds,
                                         "auth_callout": self.callout is not None})
        self.sweeper.start()
        while not self.stopping.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - nothing a device sends, and no bug in one step, ends the relay
                log.exception("relay step failed; going on")
                self.stopping.wait(0.1)
        # Graceful stop: no new messages, then everything already received is applied.
        self.messaging.drain_subscriptions()
        self.state_requests.stop()
        self.sweeper.join(max(0.0, self.stop_deadline - time.monotonic()))
        while not self.inbox.empty() and time.monotonic() < self.stop_deadline:
            try:
                self._handle(self._take(0))
            except Exception:  # noqa: BLE001
                log.exception("relay step failed while stopping")
        left = self.inbox.qsize()
        if left:
            log.warning("relay stopped with unapplied messages (re-sent commands recover them)", extra={"count": left})
        self.messaging.close()
        log.info("relay stopped")
        return 0

    def _step(self) -> None:
        """One turn of the main loop: re-send after a reconnect, apply one batch. The sweep runs on a thread of its
        own (`_sweep_loop`), so a batch never waits behind it: a report arriving during a sweep is applied in the
        next batch, not tens of milliseconds later (docs/state.md)."""
        self.loop_turned_at = time.monotonic()
        if self.resend_all.is_set() and self.messaging.is_connected():
            self.resend_all.clear()
            resent = self._db("re-send open commands", lambda: sweeps.redeliver_all(
                self.db, self.messaging, self.settings.command_retry_seconds))
            if resent:
                log.info("re-sent open commands", extra={"count": resent})
        batch = self._take(LOOP_WAIT_SECONDS)
        if batch:
            self._handle(batch)

    def _take(self, timeout: float) -> list[Message]:
        """The next batch: what arrived so far (devices served in turns), waiting up to `timeout` for the first
        message.

        A device acks `acknowledged` and then its outcome, usually a fraction of a millisecond apart. Applied as
        they come, the outcome (what waiting clients want) queues behind the first ack's transaction; so a
        batch that holds an `acknowledged` ack and no outcome waits up to OUTCOME_LINGER_SECONDS for more, and
        both apply in one transaction. Only the timing of `acknowledged` changes, by 2 ms at most."""
        batch = self.inbox.take(BATCH_MAX, BATCH_MAX_BYTES, timeout)
        if not batch:
            return []
        linger_until = time.monotonic() + OUTCOME_LINGER_SECONDS
        waiting = any(_ack_kind(message) == "acknowledged" for message in batch) and \
            not any(_ack_kind(message) == "outcome" for message in batch)
        while waiting and len(batch) < BATCH_MAX and (left := linger_until - time.monotonic()) > 0:
            more = self.inbox.take(BATCH_MAX - len(batch), BATCH_MAX_BYTES, left)
            if not more:
                break
            batch.extend(more)
            waiting = not any(_ack_kind(message) == "outcome" for message in more)
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

    def _handle(self, batch: list[Message]) -> None:
        acks: list[ack_service.Ack] = []
        ack_headers: list[dict | None] = []
        heartbeats: dict[str, str] = {}
        max_bytes = self.settings.max_message_size_bytes
        reports = [(subject, data) for subject, data, _ in batch if relay_state.is_report(subject)]
        if reports:
            try:
                self._apply_state_reports(reports)
            except Exception:  # noqa: BLE001 - the batch's acks and heartbeats still apply
                log.exception("state reports could not be handled", extra={"count": len(reports)})
            batch = [message for message in batch if not relay_state.is_report(message[0])]
        for subject, data, headers in batch:
            kind, device_id = subject_kind(subject), device_id_from_subject(subject)
            try:
                if device_id is None:
                    raise relay_input.Dropped(relay_input.INVALID, "The subject names no device.")
                if kind == "acks":
                    acks.append(relay_input.parse_ack(device_id, data, max_bytes))
                    ack_headers.append(headers)
                elif kind == "heartbeat":
                    heartbeats[device_id] = relay_input.parse_heartbeat(data, max_bytes)
            except relay_input.Dropped as exc:
                # Dropped alone: the rest of the batch applies (the device re-acks a re-sent command).
                self.drop(kind, exc.reason, device_id, exc.message)
            except Exception:  # noqa: BLE001 - a bug met by one message loses that message, not the relay
                log.exception("device message could not be handled", extra={"device_id": device_id})
                self.drop(kind, "error", device_id, "The relay failed handling it (logged).")
        if acks:
            with tracing.processing(ack_subject("*"), "*", self._trace_carriers(acks, ack_headers), {
                "messaging.batch.message_count": len(acks),
                "messaging.consumer.group.name": self.settings.relay_queue_group,
            }):
                self._apply_acks(acks)
        if heartbeats:
            self._apply_heartbeats(heartbeats)

    def _apply_acks(self, acks: list[ack_service.Ack]) -> None:
        outcomes = self._db("apply acks", lambda: ack_service.apply_acks(self.db, acks, source="relay"))
        if outcomes is None and len(acks) > 1 and not self.stopping.is_set():
            # Not an outage (that is retried above): apply one by one so one bad ack cannot sink the batch.
            outcomes = [o for ack in acks for o in (self._db(
                "apply ack", lambda a=ack: ack_service.apply_acks(self.db, [a], source="relay")) or [])]
        # Waiting clients first, then the log lines.
        ack_service.notify_final(self.messaging, [o.message for o in outcomes or [] if o.final])
        for outcome in outcomes or []:
            ack = outcome.ack
            extra = {"request_id": outcome.request_id, "message_id": ack.message_id, "device_id": ack.device_id,
                     "ack_status": ack.status}
            if outcome.code is None and outcome.changed:
                log.info("command %s", outcome.message["status"], extra=extra)
            elif outcome.code is not None:
                # Refused acks come from devices too: a flood of them is counted (uaip_acks_total) in full but
                # logged within the same budget as dropped messages.
                allowed, suppressed = self.log_budget.allow()
                if allowed:
                    log.warning("ack refused: %s", outcome.code,
                                extra={**extra, "current_status": (outcome.message or {}).get("status"),
                                       **({"not_logged_before": suppressed} if suppressed else {})})

    def _trace_carriers(self, acks: list[ack_service.Ack], headers: list[dict | None]) -> list[dict | None]:
        """The trace context each ack continues: the `traceparent` in its NATS headers, else the one stored with
        its command (one read, only for acks that carry none). Nothing when tracing is off."""
        if not tracing.active:
            return []
        carriers = [h if h and h.get(tracing.TRACEPARENT) else None for h in headers]
        missing = [ack.message_id for ack, carrier in zip(acks, carriers, strict=True) if carrier is None]
        if missing:
            stored = self._db("read trace contexts",
                              lambda: ack_service.stored_traceparents(self.db, missing)) or {}
            for index, ack in enumerate(acks):
                parsed = messages.parse_message_id(ack.message_id)
                if carriers[index] is None and parsed is not None and str(parsed) in stored:
                    carriers[index] = {tracing.TRACEPARENT: stored[str(parsed)]}
        return carriers

    def _apply_heartbeats(self, heartbeats: dict[str, str]) -> None:
        """Each device's latest heartbeat in the batch; a device row held locked elsewhere is skipped after a short
        wait (counted as dropped, `locked`: its next heartbeat applies), the others apply."""
        result = self._db("apply heartbeats", lambda: registry.apply_heartbeats(
            self.db, heartbeats, self.settings.heartbeat_timeout_seconds, HEARTBEAT_LOCK_TIMEOUT_MS))
        rows, locked = result or ([], [])
        for device_id in locked:
            self.drop("heartbeat", "locked", device_id, "The device's row stayed locked; the next heartbeat applies.")
        came_online = [(row["device_id"], row["previous_status"]) for row in rows
                       if row["status"] == "online" and row["previous_status"] != "online"]
        if came_online:
            self._db("device online", lambda: sweeps.devices_came_online(
                self.db, self.messaging, came_online, self.settings.command_retry_seconds))

    # -- periodic sweep -------------------------------------------------------------------------------

    def _apply_state_reports(self, messages: list[tuple[str, bytes]]) -> None:
        reports = self.state_reports.parse(messages)
        if reports:
            self._db("apply state reports", lambda: self.state_reports.apply(reports))

    def _maintain_state_history(self) -> None:
        """Every PARTITION_CHECK_SECONDS: the next days' history partitions, and retention (docs/state.md)."""
        if time.monotonic() < self.next_partition_check:
            return
        self.next_partition_check = time.monotonic() + PARTITION_CHECK_SECONDS
        self._db("maintain state history partitions", lambda: state_history.maintain_partitions(
            self.db, self.settings.state_history_hours))

    def _sweep_loop(self) -> None:
        """The sweep thread: a sweep at start, then one every UAIP_RELAY_SWEEP_SECONDS after the last one ended, until
        the relay stops. Its work touches other rows than a batch's, or the same rows in the same order as the API
        and the other relays of the queue group do, so it needs no coordination with the main loop."""
        while not self.stopping.is_set():
            try:
                self._sweep()
            except Exception:  # noqa: BLE001 - a bug in one sweep must not end the sweeps
                log.exception("relay sweep failed; going on")
            self.stopping.wait(self.settings.relay_sweep_seconds)

    def _sweep(self) -> None:
        self._maintain_state_history()
        for expired in self._db("expire commands", lambda: sweeps.expire_due(self.db)) or []:
            log.info("command expired", extra={"request_id": expired["request_id"], "message_id": expired["message_id"],
                                               "device_id": expired["device_id"]})
            ack_service.notify_final(self.messaging, [expired])
        stale = self._db("mark devices offline", lambda: registry.mark_stale_devices_offline(
            self.db, self.settings.heartbeat_timeout_seconds)) or []
        for device in stale:
            publish_device_event(self.messaging, "offline", device["device_id"], last_seen=device["last_seen"])
        self._db("redeliver commands", lambda: sweeps.redeliver_due(
            self.db, self.messaging, self.settings.command_retry_seconds))
        self._db("purge idempotency keys", lambda: sweeps.purge_idempotency_keys(self.db))
        # Numbering events here too keeps the unnumbered backlog small when no API worker follows events (only
        # numbered events are ever purged).
        self._db("number events", lambda: event_log.sequence(self.db))
        self._db("purge old events", lambda: event_log.purge_expired(self.db, self.settings.event_retention_hours))
        if time.monotonic() >= self.next_retention:
            self.next_retention = time.monotonic() + RETENTION_SWEEP_SECONDS
            self._db("purge the audit log", lambda: audit.purge_audit(self.db, self.settings.audit_retention_days))
            self._db("purge revoked tokens", lambda: clients.purge_expired_revocations(self.db))
        # The relay's heartbeat for alerting: it stops moving when the main loop hangs (no turn for
        # LOOP_ALIVE_SECONDS) or PostgreSQL is out of reach, while the metrics thread would still answer.
        alive = max(LOOP_ALIVE_SECONDS, 2 * self.settings.relay_sweep_seconds)
        if time.monotonic() - self.loop_turned_at <= alive:
            metrics.relay_last_sweep_timestamp_seconds.labels(
                queue_group=self.settings.relay_queue_group).set_to_current_time()


def _ack_kind(message: tuple[str, bytes, dict | None]) -> str | None:
    """"acknowledged", "outcome" (completed or failed) or None, judged from the raw bytes (a hint for batching,
    not a parse: an ack that would be misjudged is only batched differently)."""
    subject, data = message[0], message[1]
    if not subject.endswith(".acks"):
        return None
    if b'"completed"' in data or b'"failed"' in data:
        return "outcome"
    return "acknowledged" if b'"acknowledged"' in data else None


def run_relay(db: Database, messaging: Messaging, settings: Settings) -> int:
    try:
        callout = CalloutResponder(db, settings) if settings.nats_auth_callout else None
    except CalloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        serve_metrics(settings.relay_metrics_port, settings.relay_metrics_port_explicit)
    except MetricsPortTaken as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if callout is not None:
        for outcome in ("allowed", "refused", "invalid", "busy"):
            metrics.nats_auth_callouts_total.labels(outcome=outcome)
    tracing.start(tracing.RELAY_SERVICE)
    relay = Relay(db, messaging, settings, callout)
    signal.signal(signal.SIGTERM, relay.request_stop)
    signal.signal(signal.SIGINT, relay.request_stop)
    try:
        return relay.run()
    finally:
        tracing.shutdown()  # export the spans still queued (bounded: an unreachable collector cannot hold the exit)
