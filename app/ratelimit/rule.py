"""The rate-limit rule itself, as pure functions: no clock, no I/O (docs/rate-limits.md explains it for users).

Each client has a small fixed state, whatever the configured numbers:

- a **burst window**: a 12 s window that opens at the first request admitted after the previous one closed, and
  the number admitted in it (at most RATE_LIMIT_BURST);
- a **per-minute bucket**: a level that every admitted request raises by one and that drains continuously at
  RATE_LIMIT_PER_MINUTE per 60 s; a request is admitted only if it fits (level + 1 <= capacity). The capacity is
  min(RATE_LIMIT_BURST, RATE_LIMIT_PER_MINUTE). This is GCRA (the "leaky bucket as a meter") written as a level.

A request is admitted when both allow it, and then counts in both; a refused request changes nothing. So:

- within one burst window at most RATE_LIMIT_BURST are admitted, however many arrive at once;
- in any interval of length L at most capacity + L x RATE_LIMIT_PER_MINUTE / 60 s are admitted (the bucket starts
  at most full, and drains no faster than that): over any minute at most RATE_LIMIT_PER_MINUTE + capacity, i.e.
  the per-minute figure exceeded by at most one burst;
- the state after a request depends only on the state before it and the time, so the Redis script
  (app/ratelimit/storage.py) applies the same rule atomically, one call per request, and a test checks that both give
  the same answers.

Times are integer microseconds. The level is a float; the script does the same double-precision arithmetic in the
same order (integer microseconds stay exact below 2**53), so both sides agree to the bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MICROSECONDS = 1_000_000
MINUTE_US = 60 * MICROSECONDS
BURST_WINDOW_SECONDS = 12
# A billionth of a request: differences below it are floating-point residue, not requests (an empty bucket is
# empty, a request that exactly fits fits).
RESIDUE = 1e-9


@dataclass(frozen=True)
class Rules:
    """The configured limits of every client (RATE_LIMIT_PER_MINUTE, RATE_LIMIT_BURST)."""

    per_minute: int
    burst: int
    burst_window_us: int = BURST_WINDOW_SECONDS * MICROSECONDS

    @property
    def capacity(self) -> int:
        """How many requests the per-minute bucket holds: one burst, never more than the per-minute figure."""
        return min(self.burst, self.per_minute)

    @property
    def burst_description(self) -> str:
        return f"{self.burst} per {self.burst_window_us // MICROSECONDS} second"

    @property
    def rate_description(self) -> str:
        return f"{self.per_minute} per 1 minute"


@dataclass(frozen=True)
class State:
    """One client's state: the burst window and the per-minute bucket (all a store keeps per client)."""

    window_start: int = 0  # µs: when the current burst window opened
    window_count: int = 0  # requests admitted in it
    level: float = 0.0  # the per-minute bucket's level at `updated`
    updated: int = 0  # µs


def drained(level: float, since: int, now: int, per_minute: int) -> float:
    """The bucket's level at `now`, `since` being when it was `level` (below RESIDUE: empty)."""
    level = level - max(0, now - since) * per_minute / MINUTE_US
    return level if level >= RESIDUE else 0.0


def step(state: State | None, now: int, rules: Rules) -> tuple[bool, State]:
    """Apply one request arriving at `now` (µs). Returns whether it is admitted and the state as of `now` with
    it counted if admitted. Only an admitted request's state is stored: a refused one leaves the stored state as it
    was (so a burst window always opens on an admitted request)."""
    state = state or State()
    window_start, window_count = state.window_start, state.window_count
    if window_count == 0 or now >= window_start + rules.burst_window_us:
        window_start, window_count = now, 0
    level = drained(state.level, state.updated, now, rules.per_minute)
    admitted = window_count < rules.burst and level + 1 <= rules.capacity + RESIDUE
    if admitted:
        window_count += 1
        level += 1
    return admitted, State(window_start, window_count, level, now)


def expires_after_us(state: State, rules: Rules) -> int:
    """How long a stored state still matters (µs after `state.updated`): after that it equals no state at all,
    the burst window being closed and the bucket empty. Stores drop it then, so idle clients cost nothing."""
    window_left = state.window_start + rules.burst_window_us - state.updated
    bucket_left = state.level * MINUTE_US / rules.per_minute
    return max(0, math.ceil(max(window_left, bucket_left)))


@dataclass(frozen=True)
class Decision:
    """What the client is told: admitted or not, and the headers of the limit that binds it."""

    admitted: bool
    limit: int  # X-RateLimit-Limit
    remaining: int  # X-RateLimit-Remaining
    reset_at: int  # X-RateLimit-Reset, Unix seconds
    retry_after: int | None  # Retry-After seconds, only when refused
    description: str  # the binding limit in words ("20 per 12 second"), for the 429 body


def decide(admitted: bool, state: State, rules: Rules) -> Decision:
    """The headers for a request that `step` answered with (admitted, state); `state.updated` is its time.

    Remaining is how many more requests would be admitted if sent at once; the binding limit is the one with fewer
    remaining (the burst on a tie). Reset is when the binding limit is whole again: the end of the burst window,
    or the moment the per-minute bucket is empty. A refused request is bound by the limit it must wait longer for,
    and Retry-After is that wait, rounded up to whole seconds (at least 1).
    """
    now = state.updated
    window_open = state.window_count > 0
    burst_remaining = max(0, rules.burst - state.window_count)
    burst_reset = state.window_start + rules.burst_window_us if window_open else now
    rate_remaining = max(0, math.floor(rules.capacity - state.level + RESIDUE))
    rate_reset = now + state.level * MINUTE_US / rules.per_minute

    if admitted:
        by_burst = burst_remaining <= rate_remaining
        retry_after = None
    else:
        burst_wait = burst_reset - now if state.window_count >= rules.burst else 0
        # Less the residue `step` tolerates, so floating-point dust never adds a whole second to the wait.
        rate_wait = max(0.0, state.level + 1 - rules.capacity - RESIDUE) * MINUTE_US / rules.per_minute
        by_burst = burst_wait >= rate_wait
        retry_after = max(1, math.ceil(max(burst_wait, rate_wait) / MICROSECONDS))
    if by_burst:
        return Decision(admitted, rules.burst, burst_remaining, _seconds_up(burst_reset), retry_after,
                        rules.burst_description)
    return Decision(admitted, rules.per_minute, rate_remaining, _seconds_up(rate_reset), retry_after,
                    rules.rate_description)


def _seconds_up(microseconds: float) -> int:
    return math.ceil(microseconds / MICROSECONDS)
