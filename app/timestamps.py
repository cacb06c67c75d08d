"""Timestamps as the hub writes them everywhere (API bodies, NATS envelopes, events): RFC 3339, UTC, a `Z`."""

from __future__ import annotations

import datetime as dt


def timestamp(value: dt.datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, millisecond precision."""
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
