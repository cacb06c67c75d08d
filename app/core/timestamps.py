"""Timestamps as the hub writes them everywhere (API bodies, NATS envelopes, events): RFC 3339, UTC, a `Z`."""

from __future__ import annotations

import datetime as dt


def timestamp(value: dt.datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, millisecond precision."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def timestamp_from_postgres_text(text: str) -> str | None:
    """`timestamp()` of a timestamptz, computed from PostgreSQL's text for it, or None when the text is not in the
    one shape this handles: what a session with `timezone=UTC` and the ISO DateStyle (psycopg2 insists on it)
    prints for years 1–9999, `2026-11-26 18:24:20.933123+00`, with 0–6 fraction digits.

    Lists of many rows read their timestamps this way (app/infra/db.py `read(api_timestamps=True)`): slicing the
    server's text costs a fraction of building a datetime and formatting it again. Truncating to milliseconds,
    as `isoformat(timespec="milliseconds")` does."""
    if len(text) < 22 or text[10] != " " or text[-3:] != "+00" or text[19] not in ".+" or text[4] != "-":
        return None
    fraction = text[19:-3] or "."  # "" or ".9" … ".123456"
    return f"{text[:10]}T{text[11:19]}{fraction.ljust(4, '0')[:4]}Z"
