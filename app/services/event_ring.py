"""The recent events of one worker process, in memory: what its streams and long polls read once they are live.

The process's listener (app/services/event_feed.py) reads every new batch of numbered events from PostgreSQL once
and appends it here; each woken stream or long poll then takes what matches its filters from this ring instead of
querying PostgreSQL itself, so the database cost of following events no longer grows with the number of open
streams. The ring holds every event with a position in (`start`, `head`], in position order, exactly as the
outbox has them (positions are given after commit and never change, so a copy cannot go stale); a reader whose
cursor lies before `start` (a resume from an older id, or a ring that dropped its oldest events) reads PostgreSQL
instead (`page` answers None).

Bounded by count and by the events' stored size, so a burst of large events costs a bounded amount of memory.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from typing import Any

from app.services.event_log import Cursor, Filters, Page, expired, now_ms, parse_cursor

# The defaults of UAIP_EVENT_RING_EVENTS and UAIP_EVENT_RING_MB.
RING_EVENTS = 4096
RING_BYTES = 8 * 1024 * 1024


class RingEvent(dict):
    """An event as the API shows it (a plain dict to JSON), which also keeps its SSE frame once a stream rendered
    it: every stream of the process that carries the event writes the same text, so it is encoded once."""

    __slots__ = ("sse",)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One event and what filters look at (`device_type` as it was when the event was written)."""

    pos: int
    type: str
    device_id: str
    device_type: str | None
    size: int
    view: RingEvent


def matches(filters: Filters, entry: Entry) -> bool:
    """The same rule as `Filters.sql()`: every given filter must hold; a missing device type matches no list."""
    return ((filters.types is None or entry.type in filters.types)
            and (filters.device_ids is None or entry.device_id in filters.device_ids)
            and (filters.device_types is None or entry.device_type in filters.device_types))


class EventRing:
    """Recent events in position order; one writer (the listener thread), any number of readers."""

    def __init__(self, max_events: int = RING_EVENTS, max_bytes: int = RING_BYTES) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._positions: list[int] = []
        self._entries: list[Entry] = []
        self._bytes = 0
        self.start: int | None = None  # None: not filled yet, every read goes to PostgreSQL
        self.head = 0
        self.purged = 0

    def restart(self, head: int, purged: int) -> None:
        """Hold nothing, from position `head` on (the first fill, or a gap too large to read into memory)."""
        with self._lock:
            self._positions, self._entries, self._bytes = [], [], 0
            self.start = self.head = head
            self.purged = purged

    def extend(self, entries: list[Entry], head: int, purged: int) -> None:
        """Append the events after the current head up to `head` (all of them, in order), then drop the oldest
        beyond the bounds and any the retention sweep deleted (at or below `purged`)."""
        with self._lock:
            for entry in entries:
                if entry.pos > self.head:
                    self._positions.append(entry.pos)
                    self._entries.append(entry)
                    self._bytes += entry.size
                    self.head = entry.pos
            self.head = max(self.head, head)
            self.purged = max(self.purged, purged)
            start = self.start if self.start is not None else self.head
            drop = bisect.bisect_right(self._positions, self.purged)
            kept_bytes = self._bytes - sum(entry.size for entry in self._entries[:drop])
            while drop < len(self._entries) and (len(self._entries) - drop > self.max_events
                                                 or kept_bytes > self.max_bytes):
                kept_bytes -= self._entries[drop].size
                drop += 1
            if drop:
                start = max(start, self._positions[drop - 1])
                del self._positions[:drop], self._entries[:drop]
                self._bytes = kept_bytes
            self.start = max(start, self.purged)

    def page(self, after: Cursor, filters: Filters, limit: int, retention_hours: float) -> Page | None:
        """The events after `after` matching `filters` (at most `limit`) like `event_log.read_page` answers them,
        or None when the ring does not reach back to `after` (read PostgreSQL then)."""
        with self._lock:
            if self.start is None or after.pos < self.start:
                return None
            head, purged = self.head, self.purged
            events: list[dict[str, Any]] = []
            entries = self._entries
            for index in range(bisect.bisect_right(self._positions, after.pos), len(entries)):
                if matches(filters, entries[index]):
                    events.append(entries[index].view)
                    if len(events) == limit:
                        break
        if expired(after, purged, retention_hours):
            return Page([], Cursor(max(head, after.pos), now_ms()), reset=True)
        if len(events) == limit:
            return Page(events, parse_cursor(events[-1]["id"]))
        return Page(events, Cursor(max(head, after.pos), now_ms()))
