"""The API's timestamp format, and the shortcut that reads it off PostgreSQL's text (app/core/timestamps.py)."""

import datetime as dt

import pytest

from app.core.timestamps import timestamp, timestamp_from_postgres_text

UTC = dt.UTC


@pytest.mark.parametrize("microsecond", [0, 1, 999, 1_000, 9_999, 10_000, 100_000, 120_000, 123_456, 999_999])
@pytest.mark.parametrize("moment", [dt.datetime(2026, 11, 26, 18, 24, 20), dt.datetime(1, 1, 1),
                                    dt.datetime(9999, 12, 31, 23, 59, 59)])
def test_postgres_text_gives_what_timestamp_gives(moment, microsecond):
    value = moment.replace(microsecond=microsecond, tzinfo=UTC)
    # PostgreSQL prints the fraction without trailing zeros, and none at all for whole seconds.
    fraction = f".{microsecond:06d}".rstrip("0") if microsecond else ""
    text = f"{moment.isoformat(sep=' ')}{fraction}+00"
    assert timestamp_from_postgres_text(text) == timestamp(value)


@pytest.mark.parametrize("text", [
    "infinity", "-infinity", "0001-01-01 00:00:00+00 BC", "12026-01-01 00:00:00+00", "2026-01-01 00:00:00+02",
    "2026-01-01 00:00:00.5-01:30", "2026-01-01T00:00:00+00", "01/02/2026 00:00:00 UTC", "",
])
def test_other_shapes_are_left_to_the_datetime_path(text):
    assert timestamp_from_postgres_text(text) is None
