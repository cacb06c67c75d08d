"""Device events: the outbox every change writes in its own transaction, and the NATS subject `uaip.events.devices`.

The outbox (docs/events.md): `record_event(cur, ...)` inserts one event with the caller's cursor, so the event
commits or rolls back with the change it describes; a statement trigger on the table sends the `NOTIFY` that
wakes the streams of every worker and pod (PostgreSQL carries it; the payload is empty, well under 8000 bytes).
Events are numbered after commit (app/services/event_log.py), which is what makes resuming gap-free.

The NATS subject is the older, best-effort interface: `{"event": "registered"|"updated"|"deleted"|"online"|
"offline", "device_id", "at", ...}`. The API publishes registered, updated, deleted and online (REST heartbeat);
the relay publishes online (NATS heartbeat) and offline (its sweeper). When NATS is down it is dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from psycopg2.extras import Json

from app.core.statuses import EVENT_TYPES
from app.core.timestamps import timestamp
from app.infra.db import execute_prepared
from app.infra.messaging import Messaging, MessagingUnavailable
from app.infra.subjects import DEVICE_EVENTS_SUBJECT

log = logging.getLogger(__name__)

DEVICE_REGISTERED = "device.registered"
DEVICE_UPDATED = "device.updated"
DEVICE_DELETED = "device.deleted"
DEVICE_ONLINE = "device.online"
DEVICE_OFFLINE = "device.offline"
STATE_REPORTED = "state.reported"
STATE_DESIRED = "state.desired"
COMMAND_STATUS = "command.status"
assert set(EVENT_TYPES) == {DEVICE_REGISTERED, DEVICE_UPDATED, DEVICE_DELETED, DEVICE_ONLINE, DEVICE_OFFLINE,
                            STATE_REPORTED, STATE_DESIRED, COMMAND_STATUS}
# Only tokens with this scope ever receive these (they carry command results).
MESSAGE_READ_TYPES = frozenset({COMMAND_STATUS})

# The device's type when the caller does not pass it: read in the same transaction, so it is the type the device
# has at the moment of the event (NULL once the device row is gone).
_INSERT_ONE = (
    "INSERT INTO event_outbox (type, device_id, device_type, data) VALUES (%(type)s::text, %(device)s::text, "
    "COALESCE(%(device_type)s::text, (SELECT device_type FROM devices WHERE device_id = %(device)s::text)), "
    "%(data)s::jsonb)"
)
_INSERT_MANY = (
    "INSERT INTO event_outbox (type, device_id, device_type, data) "
    "SELECT e.type, e.device_id, COALESCE(e.device_type, d.device_type), e.data "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[]) WITH ORDINALITY AS e(type, device_id, device_type, "
    "data, n) LEFT JOIN devices d ON d.device_id = e.device_id ORDER BY e.n"
)


def _check_type(event_type: str) -> None:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")


def record_event(cur, event_type: str, device_id: str, data: dict, device_type: str | None = None) -> None:
    """Inside the caller's transaction: write one event to the outbox. It becomes visible to streams when (and
    only if) the transaction commits; events of one device keep the order of their writes."""
    _check_type(event_type)
    execute_prepared(cur, _INSERT_ONE, {"type": event_type, "device": device_id, "device_type": device_type,
                                        "data": Json(data)})


def record_events(cur, events: Iterable[tuple[str, str, dict, str | None]]) -> None:
    """`record_event` for a batch of (type, device_id, data, device_type) in one statement, in the given order."""
    events = list(events)
    if not events:
        return
    for event in events:
        _check_type(event[0])
    types, device_ids, data, device_types = zip(*events, strict=True)
    cur.execute(_INSERT_MANY, (list(types), list(device_ids), list(device_types), [Json(item) for item in data]))


def command_status_data(message: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The `data` of a `command.status` event, from a message row or view."""
    return {"message_id": str(message["message_id"]), "command": message.get("command"),
            "status": status or message["status"], "result": message.get("result"), "error": message.get("error")}


# SQL for a data-modifying CTE named `source` with columns message_id, device_id, command, status, result, error:
# the matching command.status events, for statements that change many commands at once.
def command_status_insert(source: str) -> str:
    return (
        "INSERT INTO event_outbox (type, device_id, device_type, data) "
        f"SELECT 'command.status', s.device_id, d.device_type, jsonb_build_object('message_id', s.message_id, "
        "'command', s.command, 'status', s.status, 'result', s.result, 'error', s.error) "
        f"FROM {source} s LEFT JOIN devices d ON d.device_id = s.device_id ORDER BY s.message_id"
    )


# --- NATS: uaip.events.devices ----------------------------------------------------------------------------


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
