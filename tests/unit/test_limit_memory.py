"""The in-process rate-limit stores (app/ratelimit/storage.py): memory under threads, bounded memory, and the switch to
memory and back when Redis fails (Redis replaced by a fake here; tests/integration/test_rate_limits.py kills a real
one)."""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import redis

from app.ratelimit.rule import MICROSECONDS, Rules, State
from app.ratelimit.storage import FallbackLimitStore, MemoryLimitStore
from tests.support.asserting import nonempty


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self):
        return self.now


def test_concurrent_threads_admit_exactly_one_burst():
    store = MemoryLimitStore(Rules(per_minute=1000, burst=20))
    start_together = threading.Barrier(50)  # the pool's 50 threads take their first request at the same moment

    def hit(i):
        if i < 50:
            start_together.wait()
        return store.hit("client:many")[0]

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(hit, range(200)))
    assert results.count(True) == 20


def test_states_that_no_longer_matter_are_swept_out():
    clock = Clock(1_700_000_000 * MICROSECONDS)
    store = MemoryLimitStore(Rules(per_minute=60, burst=10), clock_us=clock)
    for i in range(store.MIN_SWEEP_SIZE):
        assert store.hit(f"ip:10.0.{i // 256}.{i % 256}")[0]
    assert len(store) == store.MIN_SWEEP_SIZE
    clock.now += 12 * MICROSECONDS  # every window closed, every bucket (one request, 1 s to drain) empty
    store.hit("ip:192.0.2.1")  # the table outgrew its sweep mark: the stale states go
    assert len(store) == 1


def test_memory_is_bounded_even_when_every_state_is_live(monkeypatch):
    monkeypatch.setattr(MemoryLimitStore, "MAX_CLIENTS", 1500)
    store = MemoryLimitStore(Rules(per_minute=60, burst=10), clock_us=Clock(1_700_000_000 * MICROSECONDS))
    for i in range(5000):
        store.hit(f"ip:2001:db8::{i:x}")
    assert len(store) <= 2 * 1500
    assert store.hit("ip:2001:db8::1387")[0]  # recent clients are kept ... (the last 1500 admitted)
    _, state, _ = store.hit("ip:2001:db8::1387")
    assert state.window_count == 3


class FlakyRedis:
    """Stands in for RedisLimitStore: fails while `down`, counts the calls it got."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def hit(self, key, read=()):
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return True, State(window_count=1, level=1.0), [b"read"] * len(read)

    def close(self):
        pass


def test_an_outage_moves_counting_to_memory_and_back_with_back_off(caplog):
    primary, clock = FlakyRedis(), Clock(100.0)
    store = FallbackLimitStore(primary, MemoryLimitStore(Rules(per_minute=100, burst=3)), clock=clock)
    caplog.set_level(logging.INFO, logger="app.ratelimit.storage")

    assert store.hit("client:a")[0] and primary.calls == 1 and not store.on_memory
    primary.down = True
    results = [store.hit("client:a")[0] for _ in range(5)]
    assert results == [True, True, True, False, False]  # the same limits, counted in memory
    assert store.on_memory and primary.calls == 2  # only the first call went to Redis
    assert store.hit("client:z", ["k"])[2] is None  # memory reads no Redis key: the caller reads them itself
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "falling back" in warnings[0].getMessage()

    # Redis is tried again 1 s after the failure, then 2 s, 4 s ... later, by one request each time.
    attempts = []
    for _ in range(6):
        before = primary.calls
        clock.now += 0.5
        store.hit("client:b")
        attempts.append(primary.calls - before)
    assert attempts == [0, 1, 0, 0, 0, 1]  # at +1 s, then 2 s later
    clock.now += 3.9
    store.hit("client:b")
    assert primary.calls == 4  # the next try waits 4 s: not yet
    clock.now += 0.1
    store.hit("client:b")
    assert primary.calls == 5

    primary.down = False
    clock.now += 8
    # answered by Redis again, with what it read in the same round trip
    assert store.hit("client:c", ["k"]) == (True, State(window_count=1, level=1.0), [b"read"])
    assert not store.on_memory
    assert store.hit("client:c")[0] and primary.calls == 7
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "rate-limit storage recovered: counting in Redis again"]


def test_the_back_off_stops_growing_at_32_seconds():
    primary, clock = FlakyRedis(), Clock(0.0)
    store = FallbackLimitStore(primary, MemoryLimitStore(Rules(per_minute=100, burst=3)), clock=clock)
    primary.down = True
    store.hit("k")
    tried_at = []
    for second in range(1, 200):
        clock.now = float(second)
        before = primary.calls
        store.hit("k")
        if primary.calls > before:
            tried_at.append(second)
    assert tried_at[:7] == [1, 3, 7, 15, 31, 63, 95]
    assert all(b - a == 32 for a, b in nonempty(itertools.pairwise(tried_at[5:])))
