"""Waiting for a command's outcome (`?wait=N`): bounded waiter slots woken by the relay's final notices."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2

from app.core.statuses import FINAL_STATUSES
from app.infra import subjects
from app.infra.db import Database, DatabaseUnavailable
from app.infra.messaging import Messaging
from app.services.commands.messages import get_message, log


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
    def slot(self, client_id: str) -> Iterator[bool]:
        """Take a waiter slot for `client_id` if both bounds allow; yields whether one was taken. Every long poll of
        the API waits in these slots: event long polls (app/services/event_stream.py) and property observers
        (docs/state.md)."""
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
        with self.slot(client_id) as admitted:
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
