"""One thread per worker process that writes the live events of every open stream to its client's socket.

Why: a stream used to wait for events in the gthread thread that serves it, so each batch of events woke one
thread per open stream (25 per worker in the measured sizing), and every request thread of the worker then waited
for the GIL behind those wake-ups: with every slot in use, REST p99 was 1.4–1.6× its value without streams. Now a
stream that has caught up (its cursor inside the process's ring of recent events, the feed's listener connected)
is handed to this writer, which the feed wakes once per batch: it takes each woken stream's events from the ring,
renders them and sends them without blocking. The stream's own thread sleeps until the stream must end (its age,
its token's expiry, the periodic token check) or the writer hands the stream back, which it does whenever work
needs that thread: a page only PostgreSQL can answer (the ring no longer reaches the cursor, a reset), the
listener's connection lost, the client gone, the worker stopping, the writer closing.

The writer writes exactly the bytes the WSGI server would: on HTTP/1.1 each write is one chunk of the chunked
encoding, on HTTP/1.0 the bytes go as they are (`Target.chunked`). Which sockets it may write to is decided by the
web layer (app/web/event_follow.py): anything else keeps the stream in its own thread, as before.

A slow client: what a non-blocking send could not take is kept and sent when the socket is writable again, and the
stream takes no new events meanwhile (they wait in the ring, or in PostgreSQL once the ring has moved past them).
Keep-alive comments are the writer's while it holds a stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from app.services.event_feed import EventFeed, Subscription
from app.services.event_log import Cursor, Filters
from app.telemetry import metrics

log = logging.getLogger(__name__)

# How often the writer looks at the worker's stop flag (a stopping worker's streams are handed back within this).
STOP_CHECK_SECONDS = 0.2
# Pages of one stream written per wake-up before the other woken streams get their turn.
PAGES_PER_TURN = 10
# A held stream nobody woke for this long reads the ring anyway, which moves its cursor past other streams'
# events: otherwise a quiet stream's cursor would fall behind the ring, and its next event cost a PostgreSQL read.
IDLE_READ_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a stream's bytes go: the client's socket (blocking, not TLS), and whether each write is an HTTP/1.1
    chunk."""

    sock: socket.socket
    chunked: bool


@dataclasses.dataclass
class TakenBack:
    """What the stream's own thread continues from once the writer no longer holds the stream."""

    cursor: Cursor
    next_keepalive: float
    gone: bool  # a write failed: the client went away, the stream just ends


class PushedStream:
    """A stream while the writer holds it. Its thread sleeps in `wait`; `take_back` ends the hold (from either
    side) and returns where the stream stands. Every field is guarded by `lock`; the socket is written only by the
    holder of `lock` while `held` is true, so the two threads never write at once."""

    def __init__(self, writer: StreamWriter, target: Target, subscription: Subscription, filters: Filters,
                 render: Callable[[list[dict[str, Any]]], list[str]], cursor: Cursor, next_keepalive: float,
                 retention_hours: float, page_size: int, keepalive_frame: bytes, keepalive_seconds: float) -> None:
        self.lock = threading.Lock()
        self.held = True
        self.returned = threading.Event()
        self.writer = writer
        self.target = target
        self.subscription = subscription
        self.filters = filters
        self.render = render
        self.cursor = cursor
        self.next_keepalive = next_keepalive
        self.retention_hours = retention_hours
        self.page_size = page_size
        self.keepalive_frame = keepalive_frame
        self.keepalive_seconds = keepalive_seconds
        self.pending = b""  # bytes of a write the socket has not taken yet (the rest of a chunk)
        self.last_read = 0.0  # when the writer last read the ring for this stream (its clock)
        self.gone = False

    def wait(self, timeout: float) -> bool:
        """Sleep until the writer hands the stream back (True) or `timeout` passes (False)."""
        return self.returned.wait(max(0.0, timeout))

    def take_back(self) -> TakenBack:
        """End the writer's hold (if it still has it) and return the stream's state. What the socket had not taken
        of the last write is sent here, blocking, as the WSGI server's own writes do: the next bytes written must
        follow a complete chunk."""
        with self.lock:
            if self.held:
                self.writer._release(self)
            pending, self.pending = self.pending, b""
            state = TakenBack(self.cursor, self.next_keepalive, self.gone)
        if pending and not state.gone:
            try:
                self.target.sock.sendall(pending)
            except OSError:
                state.gone = True
        return state


class StreamWriter:
    """The per-process writer. `attach` hands it a caught-up stream; its thread starts on first use (in the
    worker, never inherited across fork)."""

    def __init__(self, feed: EventFeed, stopping: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                 stop_check_seconds: float = STOP_CHECK_SECONDS, idle_read_seconds: float = IDLE_READ_SECONDS) -> None:
        self.feed = feed
        self._stopping = stopping
        self._clock = clock
        self._stop_check_seconds = stop_check_seconds
        self._idle_read_seconds = idle_read_seconds
        self._lock = threading.Lock()  # guards the sets below and the wake-up signal; taken after a stream's lock
        self._streams: set[PushedStream] = set()
        self._due: set[PushedStream] = set()
        self._signalled = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None

    def held(self) -> int:
        """How many streams the writer holds now."""
        with self._lock:
            return len(self._streams)

    def attach(self, target: Target, subscription: Subscription, filters: Filters,
               render: Callable[[list[dict[str, Any]]], list[str]], cursor: Cursor, next_keepalive: float, *,
               retention_hours: float, page_size: int, keepalive_frame: bytes,
               keepalive_seconds: float) -> PushedStream | None:
        """Hold the stream from `cursor` on: its subscription's wake-ups now come here. None when the writer is
        closed or the worker is stopping (the caller keeps serving the stream itself)."""
        stream = PushedStream(self, target, subscription, filters, render, cursor, next_keepalive, retention_hours,
                              page_size, keepalive_frame, keepalive_seconds)
        with stream.lock:  # the writer's thread cannot hand the stream back before it is wholly attached
            with self._lock:
                if self._closed or self._stopping():
                    return None
                self._start()
                self._streams.add(stream)
            metrics.event_streams_pushed.inc()
            # A wake-up before this line set the subscription's own flag (harmless); one after it comes here. The
            # writer reads the ring once on attaching, so an event committed in between is not missed either way.
            subscription.on_wake = lambda: self._mark_due(stream)
        self._mark_due(stream)
        return stream

    def close(self) -> None:
        """Stop the thread; every held stream is handed back (worker exit)."""
        with self._lock:
            self._closed = True
        self._signal()
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread is not threading.current_thread():
            thread.join(timeout=2)
            if self._wake_write is not None:
                self._wake_write.close()

    # --- the writer's thread ---------------------------------------------------------------------------------

    def _start(self) -> None:
        """Start the thread in this process (under `_lock`)."""
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._pid = os.getpid()
        self._streams, self._due, self._signalled = set(), set(), False
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._thread = threading.Thread(target=self._run, args=(self._wake_read,), name="uaip-stream-writer",
                                        daemon=True)
        self._thread.start()

    def _signal(self) -> None:
        with self._lock:
            if self._signalled or self._wake_write is None:
                return
            self._signalled = True
            wake = self._wake_write
        with contextlib.suppress(OSError):  # full: the thread is woken anyway
            wake.send(b"\0")

    def _mark_due(self, stream: PushedStream) -> None:
        with self._lock:
            if stream not in self._streams:
                return
            self._due.add(stream)
        self._signal()

    def _release(self, stream: PushedStream) -> None:
        """End the hold on `stream` (its lock held): wake-ups go to its own thread again, which is woken."""
        stream.held = False
        stream.subscription.on_wake = None
        with self._lock:
            self._streams.discard(stream)
            self._due.discard(stream)
        metrics.event_streams_pushed.dec()
        stream.returned.set()

    def _run(self, wake_read: socket.socket) -> None:
        try:
            while True:
                woken = self._sleep(wake_read)
                with self._lock:
                    self._signalled = False
                    due, self._due = self._due, set()
                    streams = list(self._streams)
                    closed = self._closed
                if closed or self._stopping():
                    for stream in streams:
                        self._hand_back(stream)
                    if closed:
                        return
                    continue
                for stream in due | woken:
                    self._serve(stream)
                now = self._clock()
                for stream in streams:
                    if now - stream.last_read >= self._idle_read_seconds:
                        self._serve(stream)
                    if now >= stream.next_keepalive:
                        self._keep_alive(stream, now)
        except Exception:  # noqa: BLE001 - a bug here must not leave streams silent: hand every one back
            log.exception("the stream writer failed; streams continue in their own threads")
            with self._lock:
                self._closed = True
                streams = list(self._streams)
            for stream in streams:
                self._hand_back(stream)
        finally:
            with contextlib.suppress(OSError):
                wake_read.close()

    def _sleep(self, wake_read: socket.socket) -> set[PushedStream]:
        """Wait for a wake-up, a socket with pending bytes becoming writable, the next keep-alive or the stop
        check; returns the streams whose socket became writable."""
        with self._lock:
            streams = list(self._streams)
        waiting = {stream.target.sock.fileno(): stream for stream in streams if stream.pending}
        next_keepalive = min((stream.next_keepalive for stream in streams), default=float("inf"))
        timeout = max(0.0, min(self._stop_check_seconds, next_keepalive - self._clock()))
        poller = select.poll()
        poller.register(wake_read, select.POLLIN)
        for fd in waiting:
            if fd >= 0:
                poller.register(fd, select.POLLOUT)
        writable: set[PushedStream] = set()
        for fd, _ in poller.poll(timeout * 1000):
            if fd == wake_read.fileno():
                with contextlib.suppress(BlockingIOError):
                    while wake_read.recv(4096):
                        pass
            elif fd in waiting:
                writable.add(waiting[fd])
        return writable

    def _hand_back(self, stream: PushedStream) -> None:
        with stream.lock:
            if stream.held:
                self._release(stream)

    def _serve(self, stream: PushedStream) -> None:
        """Send what is pending, then the stream's new events from the ring; hand the stream back when only its
        own thread can go on."""
        with stream.lock:
            if not stream.held or not self._flush(stream):
                return
            stream.last_read = self._clock()
            for _ in range(PAGES_PER_TURN):
                page = self.feed.recent(stream.cursor, stream.filters, stream.page_size, stream.retention_hours)
                if page is None or page.reset or not self.feed.connected:
                    self._release(stream)  # PostgreSQL, a reset frame, or polling: the stream's thread does these
                    return
                stream.cursor = page.next
                frames = stream.render(page.events)
                if frames and not self._write(stream, "".join(frames).encode()):
                    return
                if len(page.events) < stream.page_size:
                    return
        self._mark_due(stream)  # a burst: the rest at the next turn

    def _keep_alive(self, stream: PushedStream, now: float) -> None:
        with stream.lock:
            if stream.held and not stream.pending:
                self._write(stream, stream.keepalive_frame)
                stream.next_keepalive = now + stream.keepalive_seconds

    def _write(self, stream: PushedStream, data: bytes) -> bool:
        """Queue `data` as one write (one chunk on HTTP/1.1) and send what the socket takes; True when all of it
        went out."""
        stream.pending = b"%X\r\n%s\r\n" % (len(data), data) if stream.target.chunked else data
        stream.next_keepalive = self._clock() + stream.keepalive_seconds
        return self._flush(stream)

    def _flush(self, stream: PushedStream) -> bool:
        """Send pending bytes without blocking; True when none are left. A failed send marks the client gone and
        hands the stream back to end it."""
        try:
            while stream.pending:
                sent = stream.target.sock.send(stream.pending, socket.MSG_DONTWAIT)
                stream.pending = stream.pending[sent:]
        except BlockingIOError:
            return False  # the rest when the socket is writable (`_sleep` watches it)
        except OSError:
            stream.pending = b""
            stream.gone = True
            self._release(stream)
            return False
        return True
