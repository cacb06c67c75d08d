"""One LISTEN connection per worker process: it reads each new batch of events once and hands it to the streams
and long polls of that process.

A writer's commit sends `NOTIFY uaip_events` (a trigger on the outbox); PostgreSQL delivers it to every listening
connection, in every worker of every pod, and whatever process wrote the event (API, relay). The listener
thread then numbers the new events (`event_outbox_sequence()`), reads the ones after the last position it holds
(one query per batch, on its own connection) into the process's ring of recent events (app/services/event_ring.py)
and wakes the subscribers whose filters match an event of the batch (matched here, once per batch, not by every
subscriber): each holds a wake-up flag, a queue bounded at one entry, so a slow stream never makes the listener
wait or queue up work; a woken stream takes what matches its filters from the ring, in memory, and reads
PostgreSQL only when its cursor is older than the ring (a resume from an old id). A subscriber left asleep moves
its cursor past the batch at its next periodic wake-up.

Under a steady flow the listener gathers events: after a batch that woke someone it lets at least
UAIP_EVENT_COALESCE_MS pass before reading the next, so one wake-up (and one write per stream) carries every
event committed meanwhile. Every woken thread of a worker competes for its one GIL, and the request threads after
each of their I/O calls with them: thousands of wake-ups per second (every event × every stream) made ordinary
requests wait; a few milliseconds of gathering cut them several-fold. The first event after a quiet spell is read
at once.

When notifications are lost or the connection drops, the listener still numbers, reads and wakes on its poll
period (1 s), and reconnects with back-off; subscribers read PostgreSQL themselves every second while the
listener is down, so events keep flowing, just later. The connection and thread are created lazily in the
process that subscribes: never in a gunicorn master, never inherited across fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from app.infra.db import API_TIMESTAMPTZ, Database
from app.services.event_log import Cursor, Filters, Page, event_view
from app.services.event_ring import RING_BYTES, RING_EVENTS, Entry, EventRing, RingEvent, matches

log = logging.getLogger(__name__)

CHANNEL = "uaip_events"
POLL_SECONDS = 1.0
# Events the listener reads per query while catching up.
READ_BATCH = 1000
# The default of UAIP_EVENT_COALESCE_MS, in seconds: the least time between two batches that wake subscribers.
COALESCE_SECONDS = 0.01


class Subscription:
    """One subscriber's wake-up flag. `wait` returns True when woken (new events may exist), False on timeout."""

    def __init__(self, feed: EventFeed, filters: Filters | None = None) -> None:
        self._feed = feed
        self._flag = threading.Event()
        self.filters = filters  # None: woken by every batch
        # Set while the process's stream writer holds the stream (app/services/stream_writer.py): wake-ups go there
        # instead of to the flag its own thread would wait on.
        self.on_wake: Callable[[], None] | None = None

    def wanted(self, entries: list[Entry]) -> bool:
        """Whether a batch holds an event for this subscriber (so it is worth waking)."""
        filters = self.filters
        return filters is None or any(matches(filters, entry) for entry in entries)

    def wake(self) -> None:
        on_wake = self.on_wake
        if on_wake is not None:
            on_wake()
        else:
            self._flag.set()

    def wait(self, timeout: float) -> bool:
        woken = self._flag.wait(max(0.0, timeout))
        self._flag.clear()
        return woken

    @property
    def live(self) -> bool:
        """Whether the listener is connected; when it is not, the subscriber polls on its own."""
        return self._feed.connected

    def close(self) -> None:
        self._feed._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventFeed:
    """The per-process listener. `subscribe()` starts it on first use."""

    def __init__(self, db: Database, poll_seconds: float = POLL_SECONDS,
                 coalesce_seconds: float = COALESCE_SECONDS, ring_events: int = RING_EVENTS,
                 ring_bytes: int = RING_BYTES) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.coalesce_seconds = coalesce_seconds
        self.connected = False
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._stop = threading.Event()
        self._conn = None
        self._ring_bounds = (ring_events, ring_bytes)
        self.ring = EventRing(*self._ring_bounds)

    def subscribe(self, filters: Filters | None = None) -> Subscription:
        """A wake-up flag set by every batch with an event matching `filters` (None: by every batch), and by
        whatever every subscriber must notice (the ring restarting or expiring cursors, the listener's connection
        lost, the feed closing)."""
        subscription = Subscription(self, filters)
        with self._lock:
            self._subscribers.add(subscription)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._stop.clear()
                if self._pid != os.getpid():
                    self.ring = EventRing(*self._ring_bounds)  # a copy inherited across fork is another process's
                self._pid = os.getpid()
                self.connected = False
                self._thread = threading.Thread(target=self._run, name="uaip-event-listener", daemon=True)
                self._thread.start()
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def wake_all(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.wake()

    def _wake_wanting(self, entries: list[Entry]) -> bool:
        """Wake the subscribers with an event in `entries`; whether any was woken."""
        with self._lock:
            subscribers = list(self._subscribers)
        woken = False
        for subscription in subscribers:
            if subscription.wanted(entries):
                subscription.wake()
                woken = True
        return woken

    def _connect(self):
        conn = psycopg2.connect(self.db.url, connect_timeout=3, application_name=f"{self.db.application_name}-events",
                                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        return conn

    def reaches(self, cursor: Cursor) -> bool:
        """Whether the ring holds every event after `cursor` (so `recent` answers without PostgreSQL)."""
        start = self.ring.start
        return start is not None and cursor.pos >= start

    def recent(self, after: Cursor, filters: Filters, limit: int, retention_hours: float) -> Page | None:
        """The page after `after` from the ring of recent events, or None when the ring does not reach back that far
        (the caller reads PostgreSQL then)."""
        return self.ring.page(after, filters, limit, retention_hours)

    def _catch_up(self, conn) -> bool:
        """Number the committed events, then read the ones after the ring's head into the ring, a batch per query,
        waking the subscribers that want one of its events after each; whether anyone was woken. The first time
        (and after a gap larger than the ring) the ring starts empty at the current head: older cursors read
        PostgreSQL."""
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            psycopg2.extensions.register_type(API_TIMESTAMPTZ, cur)
            cur.execute("SELECT s.head, h.purged_pos FROM event_outbox_sequence() AS s(head), event_head h")
            row = cur.fetchone()
            head, purged = row["head"], row["purged_pos"]
            ring = self.ring
            if ring.start is None or head - ring.head > ring.max_events:
                ring.restart(head, purged)
                self.wake_all()
                return True
            woken = False
            while ring.head < head:
                cur.execute(
                    "SELECT h.purged_pos, e.pos, e.type, e.device_id, e.device_type, e.at, e.data, "
                    "(extract(epoch FROM e.at) * 1000)::bigint AS at_ms, pg_column_size(e.data) AS size "
                    "FROM event_head h LEFT JOIN LATERAL (SELECT pos, type, device_id, device_type, at, data "
                    "  FROM event_outbox WHERE pos > %(after)s AND pos <= %(head)s ORDER BY pos LIMIT %(limit)s) e "
                    "ON true ORDER BY e.pos",
                    {"after": ring.head, "head": head, "limit": READ_BATCH},
                )
                rows = cur.fetchall()
                entries = [Entry(row["pos"], row["type"], row["device_id"], row["device_type"], row["size"],
                                 RingEvent(event_view(row))) for row in rows if row["pos"] is not None]
                # A full batch ends at its last event; a shorter one reaches `head` (every position up to it is
                # committed and visible; events the retention sweep deleted meanwhile are simply absent).
                upto = entries[-1].pos if len(entries) == READ_BATCH else head
                ring.extend(entries, upto, rows[0]["purged_pos"])
                woken = self._wake_wanting(entries) or woken
            if purged > ring.purged:  # the retention sweep ran: cursors below `purged` now read as expired
                ring.extend([], ring.head, purged)
                self.wake_all()
                woken = True
            return woken

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._conn = self._connect()
                self.connected = True
                backoff = 0.1
                while not self._stop.is_set():
                    if self._catch_up(conn) and self.coalesce_seconds > 0:
                        self._stop.wait(self.coalesce_seconds)  # gather what commits meanwhile into one batch
                    readable, _, _ = select.select([conn], [], [], self.poll_seconds)
                    if readable:
                        conn.poll()
                        conn.notifies.clear()
            except (psycopg2.Error, OSError, ValueError) as exc:
                if self._stop.is_set():
                    break
                if self.connected:
                    log.warning("event listener connection lost; polling until it is back",
                                extra={"error": str(exc).strip() or exc.__class__.__name__})
                self.connected = False
                self.wake_all()  # subscribers poll on their own meanwhile
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.poll_seconds)
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                self._conn = None

    def close(self) -> None:
        """Stop the listener (worker exit); subscribers are woken so they notice the process is stopping."""
        self._stop.set()
        self.wake_all()
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread is not threading.current_thread():
            thread.join(timeout=2)
        self._thread = None


class StreamsFull(Exception):
    """No stream slot is free for this client in this process."""


class StreamSlots:
    """Open streams per process (`UAIP_MAX_STREAMS`) and per client within it (`UAIP_MAX_STREAMS_PER_CLIENT`):
    each stream holds a gthread thread for minutes, so the bound keeps threads free for probes and requests."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def open(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def acquire(self, client_id: str) -> None:
        """Take a slot or raise StreamsFull; give it back with `release`."""
        with self._lock:
            mine = self._open.get(client_id, 0)
            if sum(self._open.values()) >= self.max_streams or mine >= self.max_per_client:
                raise StreamsFull(client_id)
            self._open[client_id] = mine + 1

    def release(self, client_id: str) -> None:
        with self._lock:
            left = self._open.get(client_id, 0) - 1
            if left > 0:
                self._open[client_id] = left
            else:
                self._open.pop(client_id, None)


def wait_time(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
