"""Device state over NATS, for the relay (docs/state.md, "NATS"): reports in batches, and `.state.get` replies.

Reports (`uaip.devices.{id}.state.reported`, body `{"reported": {...}, "timestamp"?}`) arrive through the relay's
inbox with acks and heartbeats; a batch of them is applied in one transaction by `state.reports_in`, sorted by
device id (arrival order kept per device): a handful of set-based statements for the whole batch (devices and
state rows locked in id order, so two relays never deadlock), each report merged and checked in Python on top of
the ones before it, so one bad report is refused alone and cannot sink the others. A report that breaks the
rules (size, depth, JSON, shape, the type's declarations) is dropped whole, logged and counted in
uaip_state_reports_total{outcome="rejected"}. Its size and nesting are checked on the raw bytes before it is
parsed.

`.state.get` requests are answered by a small thread of their own (a database read each), so they never wait
behind a batch of acks and the relay's loop never waits for them. A request for a device this hub does not have
gets no answer (several hubs may share one NATS server; the one that has the device answers).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from typing import Any

from app.core.errors import APIError
from app.core.json_input import InvalidJSON, decode_json
from app.infra.db import Database, DatabaseUnavailable
from app.infra.messaging import Messaging, MessagingUnavailable
from app.infra.subjects import device_id_for, device_subject_patterns
from app.services import state
from app.services.commands import sweeps
from app.services.state_model import MAX_STATE_DEPTH, parse_timestamp
from app.telemetry import metrics

log = logging.getLogger("app.cli.relay")

REPORTED = "state.reported"
GET = "state.get"
# The report's own object is one level more than its `reported` side.
MAX_REPORT_DEPTH = MAX_STATE_DEPTH + 1
GET_QUEUE_MAX = 10_000


def is_report(subject: str) -> bool:
    return subject.endswith("." + REPORTED)


def report_subscriptions() -> list[str]:
    return device_subject_patterns(REPORTED)


def raw_depth_exceeds(data: bytes, limit: int) -> bool:
    """Whether JSON text nests deeper than `limit`, judged on the bytes (brackets outside strings) before any
    parser builds the structure."""
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return False


class Rejected(ValueError):
    """A report dropped whole; `reason` says why (logged)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_report(data: bytes, max_bytes: int) -> tuple[dict[str, Any], dt.datetime | None]:
    """(reported members, the device's timestamp or None) of a NATS report; Rejected when it breaks the rules.
    `max_bytes` bounds the raw message (MAX_MESSAGE_SIZE_BYTES, as for an HTTP body); the merged side's own
    limit (MAX_STATE_BYTES) is checked when the report is applied."""
    if len(data) > max_bytes:
        raise Rejected(f"the report is {len(data)} bytes; at most {max_bytes} are accepted")
    if raw_depth_exceeds(data, MAX_REPORT_DEPTH):
        raise Rejected(f"the report nests deeper than {MAX_STATE_DEPTH} levels")
    try:
        body = decode_json(data)
    except InvalidJSON as exc:
        raise Rejected(exc.message) from None
    if not isinstance(body, dict) or not isinstance(body.get("reported"), dict):
        raise Rejected('the body must be {"reported": {...}, "timestamp"?}')
    unknown = set(body) - {"reported", "timestamp"}
    if unknown:
        raise Rejected(f"unknown field(s): {', '.join(sorted(unknown)[:5])}")
    sent_at = None
    if body.get("timestamp") is not None:
        try:
            sent_at = parse_timestamp(body["timestamp"]) if isinstance(body["timestamp"], str) else None
        except ValueError:
            sent_at = None
        if sent_at is None:
            raise Rejected("timestamp must be an RFC 3339 date-time with an offset")
    return body["reported"], sent_at


Report = state.Report


class StateReports:
    """Parses and applies the state reports of one relay batch."""

    def __init__(self, db: Database, messaging: Messaging, limits: state.Limits, scope: str,
                 max_message_bytes: int, retry_seconds: float) -> None:
        self.db, self.messaging, self.limits, self.scope = db, messaging, limits, scope
        self.max_message_bytes, self.retry_seconds = max_message_bytes, retry_seconds

    def parse(self, messages: list[tuple[str, bytes]]) -> list[Report]:
        """The reports that parse; the others are dropped (logged, counted)."""
        reports = []
        for subject, data in messages:
            device_id = device_id_for(subject, REPORTED)
            if device_id is None:
                continue
            try:
                reports.append((device_id, *parse_report(data, self.max_message_bytes)))
            except Rejected as exc:
                rejected(device_id, exc.reason)
        return reports

    def apply(self, reports: list[Report]) -> None:
        """One transaction for the batch, applied set-based (`state.reports_in`: a few statements whatever the
        batch's size); then wake observers and re-send commands to devices the reports brought back online."""
        received = dt.datetime.now(dt.UTC)
        ordered = sorted(reports, key=lambda report: report[0])  # stable: a device's reports keep their order
        results = self.db.transaction(lambda cur: state.reports_in(cur, self.scope, ordered, received,
                                                                    limits=self.limits))
        changed, came_online = set(), {}
        for (device_id, _patch, _sent), result in zip(ordered, results, strict=True):
            if isinstance(result, APIError):
                rejected(device_id, f"{result.code}: {result.message}")
                continue
            metrics.state_reports_total.labels(outcome=result.outcome).inc()
            if result.changed:
                changed.add(device_id)
            if result.status == "online" and result.previous_status != "online":
                came_online.setdefault(device_id, result.previous_status)
        if changed:
            state.notify_reported(self.messaging, sorted(changed))
        if came_online:
            sweeps.devices_came_online(self.db, self.messaging, sorted(came_online.items()), self.retry_seconds)


def rejected(device_id: str, reason: str) -> None:
    metrics.state_reports_total.labels(outcome="rejected").inc()
    log.warning("state report dropped", extra={"device_id": device_id, "reason": reason})


class StateRequests:
    """Answers `uaip.devices.{id}.state.get` with `{"version", "desired", "delta"}` on a thread of its own."""

    def __init__(self, db: Database, messaging: Messaging, queue_group: str) -> None:
        self.db, self.messaging, self.queue_group = db, messaging, queue_group
        self.requests: queue.Queue[tuple[str, str]] = queue.Queue(GET_QUEUE_MAX)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="state-get", daemon=True)

    def start(self) -> None:
        self.thread.start()
        for subject in device_subject_patterns(GET):
            self.messaging.subscribe(subject, self._receive, queue=self.queue_group, with_reply=True)

    def stop(self) -> None:
        self.stopping.set()

    def _receive(self, subject: str, _data: bytes, _headers: dict | None, reply: str | None) -> None:
        """On the NATS thread: hand over (the body is ignored)."""
        device_id = device_id_for(subject, GET)
        if not reply or device_id is None:
            return
        try:
            self.requests.put_nowait((device_id, reply))
        except queue.Full:
            log.warning("state request dropped: too many waiting", extra={"device_id": device_id})

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                device_id, reply = self.requests.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                answer = state.desired_message(state.get_state(self.db, device_id))
            except APIError:
                # Not a device of this hub: no answer, so a hub that shares the NATS server and has the device
                # answers alone (the requester gets no reply, not another hub's "not found").
                log.debug("state request for an unknown device not answered", extra={"device_id": device_id})
                continue
            except DatabaseUnavailable:
                log.warning("state request not answered: database unavailable", extra={"device_id": device_id})
                continue
            except Exception:  # noqa: BLE001 - one bad request must not stop the thread
                log.exception("state request failed", extra={"device_id": device_id})
                continue
            try:
                self.messaging.publish(reply, answer, wait=False)
            except MessagingUnavailable:
                pass
