"""A small, bounded HTTP load generator for process tests and benchmarks (127.0.0.1 only).

Threads with keep-alive sessions send requests on a fixed schedule (request i is due at start + i / rate), so
the offered load does not depend on how fast the server answers, up to `threads` requests in flight. It always
stops: after `max_requests`, after `max_seconds` of schedule or of wall time (whichever comes first), on `stop()`,
or — like a load balancer — as soon as its readiness watcher sees the hub not ready (`gate_path`). A connection
error or timeout counts as a failure; so does any status outside `ok_statuses`.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import requests


@dataclasses.dataclass
class LoadResult:
    statuses: collections.Counter
    errors: collections.Counter  # exception class name -> count
    sent: int
    seconds: float
    latencies_ms: list[float]
    gate_closed_at: float | None  # seconds after start when the readiness watcher stopped the load

    @property
    def failures(self) -> int:
        return sum(self.errors.values()) + sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict:
        return {
            "sent": self.sent, "seconds": round(self.seconds, 2), "rate": round(self.rate, 1),
            "failures": self.failures, "statuses": dict(self.statuses), "errors": dict(self.errors),
            "p50_ms": _round(self.percentile_ms(50)), "p99_ms": _round(self.percentile_ms(99)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class LoadGenerator:
    """`LoadGenerator(base_url, path, rate=120, max_seconds=10).start()` … `.stop()` → LoadResult."""

    def __init__(
        self,
        base_url: str,
        path: str | Callable[[int], str],
        *,
        rate: float = 120.0,
        threads: int = 8,
        max_requests: int = 5_000,
        max_seconds: float = 15.0,
        headers: dict[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (200,),
        gate_path: str | None = None,
        gate_interval: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        host = urlsplit(base_url).hostname
        if host != "127.0.0.1":
            raise ValueError("the load generator only targets 127.0.0.1")
        self.base_url = base_url.rstrip("/")
        self.path = path if callable(path) else (lambda _i, p=path: p)
        self.rate = rate
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.headers = headers or {}
        self.ok_statuses = ok_statuses
        self.gate_path = gate_path
        self.gate_interval = gate_interval
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._statuses: collections.Counter = collections.Counter()
        self._errors: collections.Counter = collections.Counter()
        self._latencies: list[float] = []
        self._sent = 0
        self._started = 0.0
        self._finished: float | None = None
        self._last_done: float | None = None
        self._gate_closed_at: float | None = None
        self._workers: list[threading.Thread] = []

    # -- control ---------------------------------------------------------------------------------------

    def start(self) -> LoadGenerator:
        self._started = time.monotonic()
        targets = [self._run] * self.threads + ([self._watch_readiness] if self.gate_path else [])
        self._workers = [threading.Thread(target=t, daemon=True, name=f"load-{i}") for i, t in enumerate(targets)]
        for thread in self._workers:
            thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        return self.wait()

    def wait(self) -> LoadResult:
        """Wait until the generator stops by itself (cap, time, gate) and return the result."""
        senders, watchers = self._workers[: self.threads], self._workers[self.threads:]
        for thread in senders:
            thread.join(self.max_seconds + self.timeout + 5)
        self._stop.set()  # ends the readiness watcher
        for thread in watchers:
            thread.join(5)
        self._finished = self._last_done or time.monotonic()
        with self._lock:
            return LoadResult(
                collections.Counter(self._statuses), collections.Counter(self._errors), self._sent,
                self._finished - self._started, list(self._latencies), self._gate_closed_at,
            )

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> tuple[int, int]:
        """(requests sent so far, failures so far)."""
        with self._lock:
            failures = sum(self._errors.values()) + sum(n for s, n in self._statuses.items() if s >= 500)
            return self._sent, failures

    # -- threads ---------------------------------------------------------------------------------------

    def _next_slot(self) -> tuple[int, float] | None:
        index = next(self._counter)
        if index >= self.max_requests:
            return None
        due = self._started + index / self.rate
        if due - self._started > self.max_seconds or time.monotonic() - self._started > self.max_seconds:
            return None  # the schedule is over, or the server is slower than the offered rate: stop on time
        return index, due

    def _run(self) -> None:
        session = requests.Session()
        try:
            while not self._stop.is_set():
                slot = self._next_slot()
                if slot is None:
                    break
                index, due = slot
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                self._one(session, index)
        finally:
            session.close()

    def _one(self, session: requests.Session, index: int) -> None:
        started = time.perf_counter()
        try:
            response = session.get(self.base_url + self.path(index), headers=self.headers, timeout=self.timeout)
            status, error = response.status_code, None
        except requests.RequestException as exc:
            status, error = None, exc.__class__.__name__
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            self._sent += 1
            self._last_done = time.monotonic()
            if error is not None:
                self._errors[error] += 1
            else:
                self._statuses[status] += 1
                self._latencies.append(elapsed)
                if status not in self.ok_statuses and status < 500:
                    self._errors[f"unexpected {status}"] += 1

    def _watch_readiness(self) -> None:
        """Stop sending the moment readiness is not 200 (503 or no answer), as a load balancer would."""
        session = requests.Session()
        try:
            while not self._stop.is_set():
                try:
                    ready = session.get(self.base_url + self.gate_path, timeout=1).status_code == 200
                except requests.RequestException:
                    ready = False
                if not ready:
                    self._gate_closed_at = time.monotonic() - self._started
                    self._stop.set()
                    break
                self._stop.wait(self.gate_interval)
        finally:
            session.close()
