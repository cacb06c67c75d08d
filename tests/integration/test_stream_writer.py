"""The stream writer (app/services/stream_writer.py) on real PostgreSQL and real sockets: one thread writes the live
events of caught-up streams to their clients' sockets while the streams' own threads sleep.

Each stream here is served the way gunicorn's gthread worker serves it: its thread writes the response head, then
each frame the stream yields with gunicorn's own `util.write` (a chunk on HTTP/1.1), the end of the body, and
closes. The client side is parsed by h11, a standard HTTP/1.1 parser, so a byte out of place in the writer's chunks
fails the test. Faults: a slow client (socket buffers full), a client gone, the worker stopping, the listener's
PostgreSQL connection killed, the token revoked.
"""

from __future__ import annotations

import socket
import threading
import uuid

import h11
import pytest
from gunicorn import util as gunicorn_util

from app.services import event_stream
from app.services.event_feed import EventFeed
from app.services.event_log import Filters, read_page
from app.services.event_ring import EventRing
from app.services.events import record_event
from app.services.stream_writer import StreamWriter, Target
from tests.support.polling import wait_until


def _device() -> str:
    return f"push-{uuid.uuid4().hex[:10]}"


def _write(db, device_id: str, *numbers: int, pad: int = 0) -> None:
    """One transaction recording an event per number (`pad` characters of filler in each)."""
    def record(cur) -> None:
        for n in numbers:
            record_event(cur, "device.updated", device_id, {"n": n, "pad": "x" * pad} if pad else {"n": n})

    db.transaction(record)


class Client:
    """The client end of a stream: bytes parsed by h11 into the response and its body, then into SSE frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.http = h11.Connection(h11.CLIENT)
        self.http.send(h11.Request(method="GET", target="/events", headers=[("Host", "hub")]))
        self.http.send(h11.EndOfMessage())
        self.body = ""
        self.ended = False

    def read(self, timeout: float) -> None:
        """Read what arrives within `timeout` (less when the response ends) into `body`."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        self.http.receive_data(data)
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Data):
                self.body += bytes(event.data).decode()
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
                return
            else:
                assert isinstance(event, h11.Response) and event.status_code == 200, event

    def frames(self) -> list[str]:
        """The complete frames so far (the text after the last blank line is still arriving)."""
        return self.body.split("\n\n")[:-1]

    def numbers(self) -> list[int]:
        return [int(frame.split('"n":')[1].split(",")[0].split("}")[0]) for frame in self.frames()
                if frame.startswith("id: ")]

    def read_until(self, condition, timeout: float, what: str) -> None:
        wait_until(lambda: self.read(0.05) or condition(), timeout, what)


class Served:
    """One stream on a socket pair, served like gunicorn serves it (see the module's docstring)."""

    def __init__(self, db, feed: EventFeed, writer: StreamWriter, device_id: str, *, chunked: bool = True,
                 max_seconds: float = 60, token_valid=lambda: True, stopping=lambda: False) -> None:
        self.server, client = socket.socketpair()
        self.client = Client(client)
        self.released = threading.Event()
        self.yielded = 0  # frames the stream's own thread wrote
        self.write_failed = False
        filters = Filters(device_ids=(device_id,))
        first = read_page(db, None, filters, event_stream.STREAM_BATCH, 24)
        attach = event_stream.writer_attach(writer, Target(self.server, chunked), filters, event_stream.SSE, 24)
        self.frames = event_stream.stream(db, feed, first, filters, retention_hours=24, max_seconds=max_seconds,
                                          stopping=stopping, token_valid=token_valid, release=self.released.set,
                                          attach=attach)
        self.chunked = chunked
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                if self.chunked else b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        try:
            self.server.sendall(head)
            for frame in self.frames:
                self.yielded += 1
                gunicorn_util.write(self.server, frame.encode(), self.chunked)
            if self.chunked:
                self.server.sendall(b"0\r\n\r\n")
        except OSError:
            self.write_failed = True
        finally:
            self.frames.close()
            self.server.close()

    def close(self) -> None:
        self.client.sock.close()
        self.thread.join(5)


@pytest.fixture()
def feed(db):
    feed = EventFeed(db, poll_seconds=0.2)
    yield feed
    feed.close()


@pytest.fixture()
def stopping():
    return threading.Event()


@pytest.fixture()
def writer(feed, stopping):
    writer = StreamWriter(feed, stopping.is_set)
    yield writer
    writer.close()


def _held(writer: StreamWriter, n: int = 1) -> None:
    wait_until(lambda: writer.held() == n, 10, f"the writer holding {n} stream(s)")


@pytest.mark.parametrize("chunked", [True, False], ids=["http1.1-chunked", "http1.0"])
def test_the_writer_sends_live_events_as_the_server_would(db, feed, writer, chunked):
    """Single events and a burst larger than a page (one transaction of 250) arrive once, in order, in bytes a
    standard HTTP parser accepts, while the stream's own thread wrote nothing after its opening."""
    device_id = _device()
    served = Served(db, feed, writer, device_id, chunked=chunked)
    try:
        _held(writer)
        written_by_thread = served.yielded
        for n in range(20):
            _write(db, device_id, n)
        _write(db, device_id, *range(20, 270))
        served.client.read_until(lambda: len(served.client.numbers()) >= 270, 15, "every event at the client")
        assert served.client.numbers() == list(range(270))
        assert served.yielded == written_by_thread, "the stream's own thread wrote the live events"
        assert writer.held() == 1
    finally:
        served.close()


def test_a_slow_client_gets_every_event_once_its_socket_drains(db, feed, writer):
    """With small socket buffers and a client that does not read, the writer cannot send everything at once: it
    keeps the rest and sends it when the socket drains, and the stream's thread is not woken for it."""
    device_id = _device()
    served = Served(db, feed, writer, device_id)
    served.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    served.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        _held(writer)
        written_by_thread = served.yielded
        for n in range(60):
            _write(db, device_id, n, pad=4000)  # ~240 KB in all, far beyond both buffers
        wait_until(lambda: any(stream.pending for stream in list(writer._streams)), 10,
                   "the writer holding bytes the socket did not take")
        served.client.read_until(lambda: len(served.client.numbers()) >= 60, 20, "every event at the client")
        assert served.client.numbers() == list(range(60))
        assert served.yielded == written_by_thread
    finally:
        served.close()


def test_a_client_gone_ends_the_stream_and_gives_its_slot_back(db, feed, writer):
    device_id = _device()
    served = Served(db, feed, writer, device_id)
    _held(writer)
    served.client.sock.close()
    for n in range(5):  # the first write after the close may still succeed; a later one fails
        _write(db, device_id, n)
    assert served.released.wait(10), "the stream's slot was not given back"
    served.thread.join(5)
    assert not served.thread.is_alive()
    assert writer.held() == 0


def test_a_stopping_worker_ends_held_streams_at_once(db, feed, writer, stopping):
    device_id = _device()
    served = Served(db, feed, writer, device_id, stopping=stopping.is_set)
    try:
        _held(writer)
        stopping.set()
        served.thread.join(3)
        assert not served.thread.is_alive(), "a held stream outlived the worker's stop by 3 s"
        assert served.released.is_set() and writer.held() == 0
        served.client.read_until(lambda: served.client.ended, 5, "the response's end")
    finally:
        served.close()


def test_events_keep_flowing_while_the_listener_is_cut_off_and_the_writer_takes_the_stream_again(db, feed, writer):
    """The listener's connection is killed: the writer hands the stream back, whose thread polls PostgreSQL
    meanwhile; once the listener is back the writer holds the stream again. No event is lost or repeated."""
    device_id = _device()
    served = Served(db, feed, writer, device_id)
    try:
        _held(writer)
        _write(db, device_id, 0)
        served.client.read_until(lambda: served.client.numbers() == [0], 10, "the first event")
        backend = feed._conn.get_backend_pid()
        db.transaction(lambda cur: cur.execute("SELECT pg_terminate_backend(%s)", (backend,)))
        wait_until(lambda: writer.held() == 0, 10, "the writer handing the stream back")
        for n in range(1, 11):
            _write(db, device_id, n)
        served.client.read_until(lambda: len(served.client.numbers()) >= 11, 15, "the events of the outage")
        _held(writer)
        assert feed._conn is not None and feed._conn.get_backend_pid() != backend
        for n in range(11, 21):
            _write(db, device_id, n)
        served.client.read_until(lambda: len(served.client.numbers()) >= 21, 15, "the events after it")
        assert served.client.numbers() == list(range(21))
    finally:
        served.close()


def test_a_revoked_token_ends_a_held_stream_at_its_next_check(db, feed, writer, monkeypatch):
    monkeypatch.setattr(event_stream, "TOKEN_CHECK_SECONDS", 0.3)
    valid = threading.Event()
    valid.set()
    served = Served(db, feed, writer, _device(), token_valid=valid.is_set)
    try:
        _held(writer)
        valid.clear()
        assert served.released.wait(3), "a held stream outlived its token's revocation"
        served.thread.join(3)
        assert writer.held() == 0
    finally:
        served.close()


def test_a_held_stream_gets_keepalives_and_ends_by_age_with_a_retry_line(db, feed, writer, monkeypatch):
    monkeypatch.setattr(event_stream, "KEEPALIVE_SECONDS", 0.3)
    served = Served(db, feed, writer, _device(), max_seconds=2)
    try:
        _held(writer)
        served.client.read_until(lambda: served.client.ended, 10, "the stream's end by age")
        frames = served.client.frames()
        assert frames[0] == ": connected"
        assert frames.count(": keep-alive") >= 3, frames
        assert frames[-1].startswith("retry: ")
        assert set(frames[1:-1]) == {": keep-alive"}, frames
        assert served.yielded == 2, "keep-alives came from the stream's own thread, not the writer"
    finally:
        served.close()


def test_a_quiet_held_stream_keeps_up_with_the_ring_and_needs_no_query(db, feed, stopping):
    """Other devices' events move through a small ring without waking the stream; its periodic read moves its
    cursor along, so its own event, when it comes, is still served from the ring by the writer (a stream whose
    cursor fell behind the ring would be handed back, and its thread would read PostgreSQL and write the event)."""
    feed.ring = EventRing(max_events=100)  # before the listener starts (the first subscription)
    writer = StreamWriter(feed, stopping.is_set, idle_read_seconds=0.1)
    mine, other = _device(), _device()
    served = Served(db, feed, writer, mine)
    try:
        _held(writer)
        written_by_thread = served.yielded
        (held,) = list(writer._streams)
        for batch in range(6):  # 300 events in all, three times what the ring holds
            _write(db, other, *range(batch * 50, batch * 50 + 50))
            wait_until(lambda: held.cursor.pos >= feed.ring.head > 0, 10, "the quiet stream's cursor at the head")
        _write(db, mine, 7)
        served.client.read_until(lambda: served.client.numbers() == [7], 10, "the stream's own event")
        assert served.yielded == written_by_thread, "the stream was handed back to read PostgreSQL"
        assert writer.held() == 1
    finally:
        served.close()
        writer.close()
