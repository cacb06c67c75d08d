"""Moving-window rate-limit storage on Redis that answers flask-limiter's header query without a round trip.

flask-limiter takes an entry in each window (one Lua call per window) and then asks the storage once more for the
tightest window's state to write X-RateLimit-Remaining / -Reset: three Redis round trips per request, measured as
the largest part of the pipeline's cost. This subclass of limits' own RedisStorage takes the entry *and* reads
the window in the same atomic script, and keeps that answer for the rest of the request (per thread), so the
header query is free. Its window search is bounded by the list's length rather than by the limit, which the
stock script probes from `limit` downwards.

Everything else (keys, prefix, timeouts, the in-memory fallback, the 429 decision) stays limits' and
flask-limiter's. The class registers the URI schemes `uaip+redis://` and `uaip+rediss://` with limits' storage
registry; app/limits.py selects it.
"""

from __future__ import annotations

import threading
import time

from limits.storage import RedisStorage

ACQUIRE_AND_READ_WINDOW = """
local key = KEYS[1]
local timestamp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])

-- Take `amount` entries unless the entry `limit - amount` places back is still inside the window
-- (the same rule as limits' acquire_moving_window.lua).
local acquired = 0
if amount <= limit then
    local entry = redis.call('lindex', key, limit - amount)
    if not (entry and tonumber(entry) >= timestamp - expiry) then
        for i = 1, amount do
            redis.call('lpush', key, timestamp)
        end
        redis.call('ltrim', key, 0, limit - 1)
        redis.call('expire', key, expiry)
        acquired = 1
    end
end

-- The window as it stands now (newest entries first): the oldest entry still inside it, and how many there are.
local target = timestamp - expiry
local low, high, found = 0, math.min(redis.call('llen', key), limit) - 1, -1
while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', key, mid))
    if value and value >= target then
        found = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
if found < 0 then
    return {acquired, tostring(timestamp), 0}
end
return {acquired, redis.call('lindex', key, found), found + 1}
"""

SCHEME_PREFIX = "uaip+"


class WindowReadingRedisStorage(RedisStorage):
    """limits' RedisStorage, with acquire-and-read in one round trip (see the module docstring)."""

    STORAGE_SCHEME = [SCHEME_PREFIX + "redis", SCHEME_PREFIX + "rediss"]

    def __init__(self, uri: str, **options) -> None:
        self._windows = threading.local()
        super().__init__(uri.removeprefix(SCHEME_PREFIX), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_acquire_and_read_window = self.get_connection().register_script(ACQUIRE_AND_READ_WINDOW)

    def _read(self) -> dict:
        windows = getattr(self._windows, "by_key", None)
        if windows is None:
            windows = self._windows.by_key = {}
        return windows

    def forget_windows(self) -> None:
        """Drop what this thread learnt during its previous request (called before each request)."""
        self._windows.by_key = {}

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        prefixed = self.prefixed_key(key)
        acquired, oldest, count = self.lua_acquire_and_read_window([prefixed], [time.time(), limit, expiry, amount])
        self._read()[(prefixed, limit, expiry)] = (float(oldest), int(count))
        return bool(acquired)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        known = self._read().pop((self.prefixed_key(key), limit, expiry), None)
        return known if known is not None else super().get_moving_window(key, limit, expiry)
