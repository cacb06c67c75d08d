"""Event stream figures (docs/events.md): commit → event at SSE clients, REST latency while every stream slot is
taken, memory per open stream, and exact resumption across forced reconnects.

    python -m bench.events [--quick] [--only latency,memory,rest,resumption]
                                         # prints JSON; part of `scripts/bench --only events`

One gunicorn, 2 workers × SERVER_THREADS=32 with UAIP_MAX_STREAMS=25 per worker (so 50 streams fill every slot and
7 threads per worker stay for ordinary requests) and UAIP_MAX_STREAMS_PER_CLIENT=50 (all streams use one token).
Events are written by the bench process itself (8 threads on one open-loop schedule), each in its own
transaction through the hub's `record_event` (type `device.updated`, `data: {"n": <sequence>}`, for one bench
device), so "commit" is the moment that transaction's COMMIT returned. Streams are raw HTTP/1.0 sockets
filtered on that device. The hub runs with the default UAIP_EVENT_COALESCE_MS unless the bench's own environment
sets it (to compare settings on one build).

1. latency: 50 streams open, a writer commits 200 events/s (open loop); 5 of the streams parse every event and
   take receive time − commit time (the other 45 read and discard, so the bench's own parsing does not become
   the bottleneck). Goals p50 ≤ 20 ms, p99 ≤ 100 ms.
2. REST while every slot is taken: `hey -q` at a fixed rate on GET /devices/{id}, alternating rounds (5 of 8 s
   each side) with the 50 streams open and with none, the 200 events/s writer running in both. Goal: p99 within +10 %.
3. memory: the workers' RSS with no stream (after a warm-up) and with the 50 streams open; delta / 50.
4. resumption: 4 writers commit events with random pauses while a reader reads a few events, drops the
   connection and reconnects with `Last-Event-ID`, 100 times (fewer with --quick); after the writers stop it
   reads to the end. Received positions are compared with the outbox: 0 gaps and 0 duplicates expected.
"""

from __future__ import annotations

import os
import random
import re
import selectors
import socket
import statistics
import threading
import time
from urllib.parse import urlsplit

import requests

from app.infra.db import Database
from app.services.events import record_event
from bench.commands import percentile
from bench.harness import BenchDatabase, Gunicorn, hey, hub_env, median, standalone
from bench.registry import fetch_token

STREAMS = 50
THREADS = 32
MAX_STREAMS_PER_WORKER = 25
RATE = 200
REST_P99_GOAL = 1.10
P50_GOAL_MS, P99_GOAL_MS = 20, 100

_N = re.compile(rb'"data":\{"n":(\d+)\}')
_ID = re.compile(rb"^id: (\S+)$", re.MULTILINE)


class Stream:
    """One SSE connection (HTTP/1.0: no chunked encoding, the server closes when the stream ends)."""

    def __init__(self, base_url: str, token: str, device_id: str, last_event_id: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
        self.sock.sendall((f"GET /api/v1/events?device_id={device_id} HTTP/1.0\r\nHost: {parts.netloc}\r\n"
                           f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n{resume}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            head += chunk
        status_line = head.split(b"\r\n", 1)[0]
        self.status = int(status_line.split()[1]) if status_line else 0
        self.buffer = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""

    def frames(self, timeout: float) -> list[bytes]:
        """Complete frames received within `timeout` (at least one recv)."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(262144)
        except TimeoutError:
            chunk = b""
        else:
            if not chunk:
                raise ConnectionError("stream closed")
        self.buffer += chunk
        *frames, self.buffer = self.buffer.split(b"\n\n")
        return frames

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def open_streams(base_url: str, token: str, device_id: str, count: int, deadline_seconds: float = 30) -> list[Stream]:
    """`count` streams; a 503 STREAMS_FULL (this connection reached a worker whose slots are taken) is retried."""
    streams: list[Stream] = []
    deadline = time.monotonic() + deadline_seconds
    while len(streams) < count:
        stream = Stream(base_url, token, device_id)
        if stream.status == 200:
            streams.append(stream)
            continue
        stream.close()
        if time.monotonic() > deadline:
            for opened in streams:
                opened.close()
            raise RuntimeError(f"only {len(streams)} of {count} streams opened (last status {stream.status})")
        time.sleep(0.05)
    return streams


class Counter:
    """A thread-safe itertools.count (the event sequence numbers shared by every writer)."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def __next__(self) -> int:
        with self._lock:
            self._n += 1
            return self._n


class Writer:
    """Commits one `device.updated` event per transaction, `rate`/s in all (open loop: event k is due at k / rate),
    from `threads` threads so that one slow commit does not hold the rest back; remembers each event's commit time
    by its `n`."""

    def __init__(self, db: Database, device_id: str, rate: float, counter: Counter, threads: int = 8) -> None:
        self.db, self.device_id, self.rate, self.counter = db, device_id, rate, counter
        self.committed: dict[int, float] = {}
        self.stop = threading.Event()
        self._due = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.achieved = 0.0

    def start(self) -> None:
        self._started = time.perf_counter()
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self.achieved = len(self.committed) / (time.perf_counter() - self._started)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                due = self._started + self._due / self.rate
                self._due += 1
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            n = next(self.counter)
            self.db.transaction(lambda cur, n=n: record_event(cur, "device.updated", self.device_id, {"n": n}))
            self.committed[n] = time.perf_counter()


def _measure(stream: Stream, received: dict, stop: threading.Event) -> None:
    """Read one stream, noting when each event `n` arrived."""
    while not stop.is_set():
        try:
            frames = stream.frames(0.05)
        except (ConnectionError, OSError):
            return
        now = time.perf_counter()
        for frame in frames:
            match = _N.search(frame)
            if match:  # keyed by (stream, n): every measuring stream counts
                received[(id(stream), int(match.group(1)))] = now


def _discard(streams: list[Stream], stop: threading.Event) -> None:
    """Read and drop whatever arrives on `streams` (one thread, select), so the server never blocks on them."""
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            stream.sock.setblocking(False)
            selector.register(stream.sock, selectors.EVENT_READ)
        while not stop.is_set() and selector.get_map():
            for key, _ in selector.select(0.1):
                try:
                    if not key.fileobj.recv(262144):
                        selector.unregister(key.fileobj)
                except BlockingIOError:
                    pass
                except OSError:
                    selector.unregister(key.fileobj)


def latency(hub: Gunicorn, token: str, db: Database, device_id: str, seconds: float, counter: Counter) -> dict:
    """Also the workers' RSS while the streams are open and events flow (`rss_streams_mb`)."""
    streams = open_streams(hub.url, token, device_id, STREAMS)
    probes, others = streams[:5], streams[5:]
    received: dict = {}
    stop = threading.Event()
    readers = [threading.Thread(target=_measure, args=(s, received, stop), daemon=True) for s in probes]
    readers.append(threading.Thread(target=_discard, args=(others, stop), daemon=True))
    for reader in readers:
        reader.start()
    writer = Writer(db, device_id, RATE, counter)
    writer.start()
    time.sleep(seconds / 2)
    rss = hub.worker_rss_mb()
    time.sleep(seconds / 2)
    writer.stop.set()
    writer.join(10)
    time.sleep(1.0)  # the last events arrive
    stop.set()
    for reader in readers:
        reader.join(5)
    for stream in streams:
        stream.close()
    samples = [(at - writer.committed[n]) * 1000 for (_, n), at in received.items() if n in writer.committed]
    expected = len(writer.committed) * len(probes)
    return {"streams": STREAMS, "measuring_streams": len(probes), "offered_per_s": RATE,
            "achieved_per_s": round(writer.achieved, 1), "events": len(writer.committed),
            "received_of_expected": f"{len(samples)}/{expected}",
            "p50_ms": statistics.median(samples), "p99_ms": percentile(samples, 99), "max_ms": max(samples),
            "rss_streams_mb": rss}


def rest_with_streams(hub: Gunicorn, token: str, db: Database, event_device: str, rest_device: str, rounds: int,
                      seconds: int, counter, qps_per_client: int = 25, clients: int = 4) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{hub.url}/api/v1/devices/{rest_device}"
    hey(url, requests=200, concurrency=clients, headers=headers)
    writer = Writer(db, event_device, RATE, counter)
    writer.start()
    samples: dict[str, list[float]] = {"streams": [], "none": []}
    achieved: dict[str, list[float]] = {"streams": [], "none": []}
    try:
        for _ in range(rounds):
            for side in ("streams", "none"):
                streams = open_streams(hub.url, token, event_device, STREAMS) if side == "streams" else []
                stop = threading.Event()
                drains = [threading.Thread(target=_discard, args=(streams, stop), daemon=True)] if streams else []
                for drain in drains:
                    drain.start()
                if streams:
                    time.sleep(0.5)
                result = hey(url, duration=f"{seconds}s", concurrency=clients, qps=qps_per_client, headers=headers)
                stop.set()
                for drain in drains:
                    drain.join(5)
                for stream in streams:
                    stream.close()
                assert set(result.statuses) == {200}, result.statuses
                samples[side].append(result.latencies_ms["99%"])
                achieved[side].append(round(result.requests_per_second, 1))
                time.sleep(0.5)  # the slots are released
    finally:
        writer.stop.set()
        writer.join(10)
    ratios = [s / n for s, n in zip(samples["streams"], samples["none"], strict=True)]
    return {"offered_rest_per_s": qps_per_client * clients, "achieved_rest_per_s": achieved,
            "events_per_s": RATE, "p99_streams_ms": samples["streams"],
            "p99_none_ms": samples["none"], "p99_streams_median_ms": median(samples["streams"]),
            "p99_none_median_ms": median(samples["none"]), "ratio": median(ratios), "round_ratios": ratios}


def resumption(base_url: str, token: str, db: Database, device_id: str, reconnects: int, counter) -> dict:
    start = requests.get(f"{base_url}/api/v1/events", params={"device_id": device_id},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["next"]
    start_pos = int(start.split("-")[0])
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random()
        while not stop.is_set():
            n = next(counter)
            db.transaction(lambda cur, n=n: (record_event(cur, "device.updated", device_id, {"n": n}),
                                             time.sleep(rng.random() * 0.004)))
            time.sleep(rng.random() * 0.006)

    writers = [threading.Thread(target=writer, daemon=True) for _ in range(4)]
    for thread in writers:
        thread.start()
    received: list[str] = []
    last = start
    rng = random.Random(7)
    try:
        for _ in range(reconnects):
            stream = Stream(base_url, token, device_id, last)
            assert stream.status == 200, stream.status
            wanted = rng.randint(1, 15)
            got = 0
            deadline = time.monotonic() + 2
            while got < wanted and time.monotonic() < deadline:
                for frame in stream.frames(0.2):
                    match = _ID.search(frame)
                    if match:
                        last = match.group(1).decode()
                        received.append(last)
                        got += 1
            stream.close()
    finally:
        stop.set()
        for thread in writers:
            thread.join(10)
    end = db.read(lambda cur: (cur.execute("SELECT event_outbox_sequence() AS head"), cur.fetchone()["head"])[1])
    expected = db.read(lambda cur: (cur.execute(
        "SELECT pos FROM event_outbox WHERE device_id = %s AND pos > %s AND pos <= %s ORDER BY pos",
        (device_id, start_pos, end)), [row["pos"] for row in cur.fetchall()])[1])
    stream = Stream(base_url, token, device_id, last)
    deadline = time.monotonic() + 30
    while (not received or int(received[-1].split("-")[0]) < expected[-1]) and time.monotonic() < deadline:
        for frame in stream.frames(0.2):
            match = _ID.search(frame)
            if match:
                received.append(match.group(1).decode())
    stream.close()
    positions = [int(value.split("-")[0]) for value in received]
    seen = set(positions)
    return {"reconnects": reconnects, "writers": 4, "events": len(expected), "received": len(positions),
            "gaps": len(set(expected) - seen), "duplicates": len(positions) - len(seen),
            "unexpected": len(seen - set(expected))}


def _warm_rss(hub: Gunicorn, token: str, db: Database) -> list[float]:
    """The workers' RSS once each has served requests and a stream (its event feed's LISTEN connection and thread
    exist), with no stream open: the baseline of the memory per stream."""
    hey(f"{hub.url}/api/v1/devices/bench-2", requests=200, concurrency=4, headers={"Authorization": f"Bearer {token}"})
    for stream in open_streams(hub.url, token, "bench-1", 4):
        stream.close()
    # A stream notices its closed connection when it next writes: an event makes them write and give back their slots.
    db.transaction(lambda cur: record_event(cur, "device.updated", "bench-1", {"n": 0}))
    time.sleep(1.0)
    return hub.worker_rss_mb()


PHASES = ("latency", "memory", "rest", "resumption")


def run(db: BenchDatabase, quick: bool = False, phases: tuple[str, ...] = PHASES) -> dict:
    """Every phase by default; `phases` names some (memory needs latency's reading: it runs latency too)."""
    only = phases
    env = hub_env(db.url, UAIP_MAX_STREAMS=str(MAX_STREAMS_PER_WORKER), UAIP_MAX_STREAMS_PER_CLIENT=str(STREAMS),
                  **{name: os.environ[name] for name in ("UAIP_EVENT_COALESCE_MS",) if name in os.environ})
    client_id, secret = db.create_client()
    database = Database(db.url, maxconn=12)
    counter = Counter()
    try:
        with Gunicorn(env, threads=THREADS) as hub:
            token = fetch_token(hub.url, client_id, secret)
            rss_none = _warm_rss(hub, token, database)
            figures: dict = {"server": f"gunicorn 2 workers × {THREADS} threads, UAIP_MAX_STREAMS="
                                       f"{MAX_STREAMS_PER_WORKER} per worker"}
            if "latency" in only or "memory" in only:
                figures["latency"] = latency(hub, token, database, "bench-1", 3 if quick else 10, counter)
            if "memory" in only:
                rss_streams = figures["latency"]["rss_streams_mb"]
                figures["memory"] = {"rss_none_mb": rss_none, "rss_streams_mb": rss_streams,
                                     "per_stream_kb": (sum(rss_streams) - sum(rss_none)) * 1024 / STREAMS}
            if "rest" in only:
                figures["rest"] = rest_with_streams(hub, token, database, "bench-1", "bench-2",
                                                    rounds=1 if quick else 5, seconds=3 if quick else 8,
                                                    counter=counter)
            if "resumption" in only:
                figures["resumption"] = resumption(hub.url, token, database, "bench-3", 20 if quick else 100,
                                                   counter)
        return figures
    finally:
        database.close()


if __name__ == "__main__":
    standalone(run, __doc__.split("\n")[0], devices=1000, phases=PHASES)
