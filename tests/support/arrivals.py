"""Counting admitted requests on a simulated clock (µs), for the rate-limit tests."""

from __future__ import annotations

from app.ratelimit.rule import MINUTE_US


def per_minute_counts(admitted: list[int], start: int, minutes: int) -> list[int]:
    """Admitted requests in each whole minute from `start`."""
    counts = [0] * minutes
    for t in admitted:
        minute = (t - start) // MINUTE_US
        if 0 <= minute < minutes:
            counts[minute] += 1
    return counts


def busiest_minute(admitted: list[int]) -> int:
    """The most admitted requests in any 60 s interval (each one starting at an admitted request is enough)."""
    return max((sum(1 for t in admitted[i:] if t < start + MINUTE_US) for i, start in enumerate(admitted)), default=0)
