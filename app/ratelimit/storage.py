"""Where the rate-limit states live: one small Redis hash per client, or this process's memory.

- `RedisLimitStore`: one Lua script per request (EVALSHA: one round trip) applies app/ratelimit/rule.py's `step`
  atomically to the client's hash — four fields, whatever the limits — and returns the state, from which the
  headers are computed without asking again. Redis's own clock (TIME) times every request, so every worker of
  every pod judges by one clock. The key expires when its state no longer matters.
- `MemoryLimitStore`: the same rule over a dict under a lock, for REDIS_URL unset and for outages.
- `FallbackLimitStore`: Redis, and this process's memory while Redis fails; it tries Redis again after 1 s,
  2 s, 4 s ... 32 s (one request at a time tries, the others stay in memory) and goes back by itself.

Every store's `hit(key, read)` returns `(admitted, state, values)`: the state as of the request's time
(`state.updated`), and the values of the Redis keys `read` read in the same round trip (None from memory).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import redis

from app.infra.redis_client import Cache
from app.ratelimit.rule import Rules, State, expires_after_us, step

log = logging.getLogger(__name__)


class LimitStore(Protocol):
    def hit(self, client_key: str, read: Sequence[str] = ()) -> tuple[bool, State, list | None]:
        """Apply one request of this client now: (admitted, its state as of the request's time, the values of the
        Redis keys `read` read in the same round trip — None when they could not be read with it)."""

    def close(self) -> None:
        """Release this process's connections, if any."""

# step() in Lua, statement for statement (same arithmetic, same order: the results agree to the bit).
# KEYS[1]: the client's hash; KEYS[2..]: keys to read in the same round trip (the revocation check's, see
# app/auth/revocation.py), returned as they are. ARGV: burst, burst window (µs), per-minute, capacity, and optionally
# the time (µs) for tests; without it Redis's clock is used. Fields: ws/wc the burst window's start and count, lv/up
# the bucket's level and when it was that. Returns {admitted, ws, wc, lv, up, {values of KEYS[2..]}}; numbers that
# may exceed what a Redis integer reply or Lua's default formatting keeps exactly travel as strings.
STEP_SCRIPT = """
local key = KEYS[1]
local burst = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local per_minute = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
local now
if ARGV[5] then
    now = tonumber(ARGV[5])
else
    local clock = redis.call('TIME')
    now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end

local stored = redis.call('HMGET', key, 'ws', 'wc', 'lv', 'up')
local window_start = tonumber(stored[1]) or 0
local window_count = tonumber(stored[2]) or 0
local level = tonumber(stored[3]) or 0
local updated = tonumber(stored[4]) or 0

if window_count == 0 or now >= window_start + window then
    window_start = now
    window_count = 0
end
level = level - math.max(0, now - updated) * per_minute / 60000000
if level < 1e-9 then  -- 1e-9: limit_rules.RESIDUE
    level = 0
end
local admitted = 0
if window_count < burst and level + 1 <= capacity + 1e-9 then
    admitted = 1
    window_count = window_count + 1
    level = level + 1
end

local ws, lv, up = string.format('%d', window_start), string.format('%.17g', level), string.format('%d', now)
if admitted == 1 then
    redis.call('HSET', key, 'ws', ws, 'wc', window_count, 'lv', lv, 'up', up)
    local expires = math.max(window_start + window - now, level * 60000000 / per_minute)
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(expires / 1000) + 1))
end
local read = {}
if #KEYS > 1 then
    read = redis.call('MGET', unpack(KEYS, 2, #KEYS))
end
return {admitted, ws, window_count, lv, up, read}
"""


class RedisLimitStore:
    """Client states in Redis under `<key_prefix>:<client key>`, one script call per request, on the process's one
    Redis client (app/infra/redis_client.py)."""

    def __init__(self, cache: Cache, key_prefix: str, rules: Rules) -> None:
        self.cache = cache
        self.key_prefix = key_prefix
        self.rules = rules
        self._args = (rules.burst, rules.burst_window_us, rules.per_minute, rules.capacity)
        self._script = None
        self._client = None
        self._lock = threading.Lock()

    def _connect(self):
        """The script bound to this process's client (re-registered when the client is new, e.g. after a fork)."""
        client = self.cache.client
        if self._client is not client:
            with self._lock:
                if self._client is not client:
                    self._script = client.register_script(STEP_SCRIPT)
                    self._client = client
        return self._script

    def key(self, client_key: str) -> str:
        return f"{self.key_prefix}:{client_key}"

    def hit(self, client_key: str, read: Sequence[str] = (), now_us: int | None = None) -> tuple[bool, State, list]:
        """Apply one request (`now_us` only for tests: Redis's clock otherwise). Raises redis.RedisError."""
        args = self._args if now_us is None else (*self._args, now_us)
        admitted, ws, wc, lv, up, values = self._connect()(keys=[self.key(client_key), *read], args=args)
        return bool(admitted), State(int(ws), int(wc), float(lv), int(up)), values

    def close(self) -> None:
        """The client is the process's shared one (closed by the worker hooks); forget the script bound to it."""
        self._client, self._script = None, None


class MemoryLimitStore:
    """Client states in this process's memory. Expired states are swept out as the table grows; beyond
    MAX_CLIENTS live states the least recently admitted are dropped (a client spraying addresses cannot grow
    memory without bound; a dropped client starts afresh in this process)."""

    MAX_CLIENTS = 100_000
    MIN_SWEEP_SIZE = 1_024

    def __init__(self, rules: Rules, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.rules = rules
        self.clock_us = clock_us
        self._states: dict[str, State] = {}
        self._sweep_at = self.MIN_SWEEP_SIZE
        self._lock = threading.Lock()

    def hit(self, client_key: str, read: Sequence[str] = ()) -> tuple[bool, State, None]:
        """`read` is not read: this store has no Redis."""
        with self._lock:
            now = self.clock_us()
            admitted, state = step(self._states.get(client_key), now, self.rules)
            if admitted:
                self._states.pop(client_key, None)  # re-inserted last: the dict is ordered by last admission
                self._states[client_key] = state
                if len(self._states) > self._sweep_at:
                    self._sweep(now)
        return admitted, state, None

    def _sweep(self, now: int) -> None:
        self._states = {
            key: state for key, state in self._states.items()
            if now < state.updated + expires_after_us(state, self.rules)
        }
        for key in list(self._states)[: max(0, len(self._states) - self.MAX_CLIENTS)]:
            del self._states[key]
        self._sweep_at = max(self.MIN_SWEEP_SIZE, 2 * len(self._states))

    def __len__(self) -> int:
        return len(self._states)

    def close(self) -> None:
        """Nothing to close: the states go with the process."""


class FallbackLimitStore:
    """Redis first; while Redis fails, this process's memory (same rule, per process)."""

    FIRST_RETRY_SECONDS = 1.0
    MAX_RETRY_SECONDS = 32.0

    def __init__(self, primary: RedisLimitStore, memory: MemoryLimitStore,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.memory = memory
        self.clock = clock
        self._on_memory = False
        self._retry_at = 0.0
        self._retry_in = self.FIRST_RETRY_SECONDS
        self._lock = threading.Lock()

    @property
    def on_memory(self) -> bool:
        return self._on_memory

    def hit(self, client_key: str, read: Sequence[str] = ()) -> tuple[bool, State, list | None]:
        trying_again = self._on_memory and self._claim_retry()
        if self._on_memory and not trying_again:
            return self.memory.hit(client_key)
        try:
            result = self.primary.hit(client_key, read)
        except redis.ResponseError as exc:
            # Redis answered, about this one key (e.g. WRONGTYPE: something else wrote it): that client is counted
            # in memory for this request; every other client stays on Redis.
            log.warning("rate-limit state unusable for one client; counted in memory for this request",
                        extra={"client_key": client_key, "error": f"{exc.__class__.__name__}: {exc}"})
            return self.memory.hit(client_key)
        except redis.RedisError as exc:
            self._fall_back(exc)
            return self.memory.hit(client_key)
        if trying_again:
            self._recover()
        return result

    def _claim_retry(self) -> bool:
        """True for the one request that tries Redis again now; the back-off doubles each time."""
        with self._lock:
            now = self.clock()
            if now < self._retry_at:
                return False
            self._retry_at = now + self._retry_in
            self._retry_in = min(self._retry_in * 2, self.MAX_RETRY_SECONDS)
            return True

    def _fall_back(self, exc: Exception) -> None:
        with self._lock:
            if self._on_memory:
                return
            self._on_memory = True
            self._retry_at = self.clock() + self.FIRST_RETRY_SECONDS
            self._retry_in = 2 * self.FIRST_RETRY_SECONDS
        log.warning("rate-limit storage unreachable: falling back to per-process memory until Redis answers",
                    extra={"error": f"{exc.__class__.__name__}: {exc}"})

    def _recover(self) -> None:
        with self._lock:
            if not self._on_memory:
                return
            self._on_memory = False
        log.info("rate-limit storage recovered: counting in Redis again")

    def close(self) -> None:
        self.primary.close()
