"""Device lifecycle events on `uaip.events.devices` (docs/api.md, "NATS subjects"), published best effort.

`{"event": "registered"|"updated"|"deleted"|"online"|"offline", "device_id", "at", ...}`. The API publishes
registered, updated, deleted and online (REST heartbeat); the relay publishes online (NATS heartbeat) and
offline (its sweeper). An event is never a reason to fail a request: when NATS is down it is dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from app.core.timestamps import timestamp
from app.infra.messaging import DEVICE_EVENTS_SUBJECT, Messaging, MessagingUnavailable

log = logging.getLogger(__name__)


def device_event(event: str, device_id: str, **extra: Any) -> dict[str, Any]:
    return {"event": event, "device_id": device_id, "at": timestamp(dt.datetime.now(dt.UTC)), **extra}


def publish_device_event(messaging: Messaging, event: str, device_id: str, **extra: Any) -> bool:
    """Publish one event; False (and a debug line) when NATS is not connected."""
    try:
        messaging.publish(DEVICE_EVENTS_SUBJECT, device_event(event, device_id, **extra))
        return True
    except MessagingUnavailable:
        log.debug("device event dropped: NATS unavailable", extra={"event": event, "device_id": device_id})
        return False


def record_event(cur, event_type: str, device_id: str, data: dict, device_type: str | None = None) -> None:
    """Record a device event inside the caller's transaction (the event outbox). A stub until the outbox
    exists: state changes already call it in the transaction that makes them."""
