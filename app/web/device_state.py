"""What every entry point that reads or writes device state (REST routes, property routes, MCP tools) takes from
the app: the limits from the settings, the cache scope, and the desired write with its publish."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import current_app

from app.infra import subjects
from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.services import state
from app.services.state_model import json_equal
from app.web.delivery import waiters

log = logging.getLogger(__name__)


def _settings():
    return current_app.config["SETTINGS"]


def limits() -> state.Limits:
    settings = _settings()
    return state.Limits(settings.max_state_bytes, settings.heartbeat_timeout_seconds, settings.state_history_hours)


def scope() -> str:
    """Tells databases apart in the per-process cache of compiled property declarations."""
    return _settings().database_url


def set_desired(device_id: str, patch: dict[str, Any], *, expected: Any, client_id: str | None,
                prefix: str = "", bare: bool = False) -> dict[str, Any]:
    """Merge `patch` into the device's desired state (checks as in app/services/state.py), publish it on
    `.state.desired` after commit, and return the new state."""
    return state.set_desired(get_db(), get_messaging(), scope(), device_id, patch, expected=expected,
                             client_id=client_id, limits=limits(), prefix=prefix, bare=bare)


class Observers:
    """Per-process wake-ups for property observers (GET .../properties/{name}/observe), by device id.

    Whoever applies reports that change values publishes the device ids on STATE_CHANGED_SUBJECT (the API for
    HTTP reports, the relay for NATS ones, one notice per batch); each worker wakes its observers of those
    devices, which re-read the state. Observers also poll (back-off from 50 ms to 1 s), so they are correct
    without NATS, only slower."""

    def __init__(self, messaging) -> None:
        self.messaging = messaging
        self._events: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._subscribed = False

    def _on_changed(self, _subject: str, data: bytes) -> None:
        """A notice names the devices whose values changed: `{"device_ids": [...]}` (one per batch), or
        `{"device_id"}` as older hubs send it."""
        try:
            body = json.loads(data)
            device_ids = body["device_ids"] if "device_ids" in body else [body["device_id"]]
            device_ids = [device_id for device_id in device_ids if isinstance(device_id, str)]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            events = [event for device_id in device_ids for event in self._events.get(device_id, ())]
        for event in events:
            event.set()

    def _subscribe(self) -> None:
        with self._lock:
            if self._subscribed:
                return
            self._subscribed = True
        try:
            self.messaging.subscribe(subjects.STATE_CHANGED_SUBJECT, self._on_changed)
        except Exception:  # noqa: BLE001 - polling still works
            with self._lock:
                self._subscribed = False
            log.warning("could not subscribe to state-change notifications; observing by polling")

    @contextlib.contextmanager
    def watching(self, device_id: str) -> Iterator[threading.Event]:
        self._subscribe()
        event = threading.Event()
        with self._lock:
            self._events.setdefault(device_id, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._events.get(device_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._events[device_id]


def observers() -> Observers:
    extensions = current_app.extensions
    if "uaip.state_observers" not in extensions:
        extensions.setdefault("uaip.state_observers", Observers(get_messaging()))
    return extensions["uaip.state_observers"]


MISSING = object()


def reported_value(device_id: str, name: str) -> Any:
    """The reported value of `name`, or MISSING."""
    return state.get_state(get_db(), device_id)["reported"].get(name, MISSING)


def observe(device_id: str, name: str, client_id: str) -> Any:
    """The next reported value of `name` that differs from the current one (a repeated value is no change),
    within UAIP_OBSERVE_SECONDS; then the current value. MISSING when there is none. With every waiter slot of
    this process (the `?wait` bounds) taken, the current value at once."""
    with waiters().slot(client_id) as admitted, observers().watching(device_id) as event:
        first = reported_value(device_id, name)
        if not admitted:
            return first
        deadline = time.monotonic() + _settings().observe_seconds
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return reported_value(device_id, name)
            if event.wait(min(delay, remaining)):
                event.clear()
            else:
                delay = min(delay * 2, 1.0)
            current = reported_value(device_id, name)
            if _changed(first, current):
                return current


def _changed(before: Any, after: Any) -> bool:
    if before is MISSING or after is MISSING:
        return before is not after and after is not MISSING
    return not json_equal(before, after)
