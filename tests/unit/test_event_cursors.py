"""Event cursors, filters and stream slots: the pure parts of the event log (docs/events.md)."""

from __future__ import annotations

import pytest

from app.core.errors import APIError
from app.services.event_feed import StreamsFull, StreamSlots
from app.services.event_log import Cursor, Filters, Page, expired, now_ms, parse_cursor
from app.services.event_stream import sse_event


def test_a_cursor_reads_back_what_it_wrote():
    cursor = Cursor(1842, 1796650523411)
    assert parse_cursor(str(cursor)) == cursor
    assert parse_cursor(None) is None and parse_cursor("") is None


@pytest.mark.parametrize("value", ["x", "12", "1-", "-1-2", "1-2-3", "1.5-2", "१२-३", "1" * 19 + "-1", " 1-2x"])
def test_malformed_cursors_are_invalid_cursor(value):
    with pytest.raises(APIError) as caught:
        parse_cursor(value)
    assert caught.value.status == 400 and caught.value.code == "INVALID_CURSOR"


def test_expiry_by_age_and_by_purge():
    fresh = Cursor(10, now_ms())
    assert not expired(fresh, purged=10, retention_hours=24)
    assert expired(fresh, purged=11, retention_hours=24)  # events after it were deleted
    assert expired(Cursor(10, now_ms() - 2 * 3_600_000), purged=0, retention_hours=1.5)
    assert not expired(Cursor(10, now_ms() - 3_600_000), purged=0, retention_hours=1.5)


def test_filters_become_parameters_never_sql_text():
    where, params = Filters(types=("device.online",), device_ids=("a'; DROP TABLE x; --",)).sql()
    assert "DROP" not in where and params["devices"] == ["a'; DROP TABLE x; --"]
    assert Filters().sql() == ("", {})


def test_page_body_carries_reset_only_when_set():
    assert Page([], Cursor(1, 2)).body() == {"events": [], "next": "1-2"}
    assert Page([], Cursor(1, 2), reset=True).body() == {"events": [], "next": "1-2", "reset": True}


def test_sse_frame_id_is_the_event_id_and_data_is_one_line():
    frame = sse_event({"id": "5-6", "type": "device.updated", "device_id": "d", "at": "t",
                       "data": {"name": "two\nlines\r\u2028"}})
    lines = frame.split("\n")
    assert lines[:2] == ["id: 5-6", "event: device.updated"]
    assert lines[2].startswith("data: {") and frame.endswith("\n\n") and len(lines) == 5


def test_stream_slots_bound_the_process_and_each_client():
    slots = StreamSlots(max_streams=2, max_per_client=1)
    slots.acquire("a")
    with pytest.raises(StreamsFull):
        slots.acquire("a")
    slots.acquire("b")
    with pytest.raises(StreamsFull):
        slots.acquire("c")
    slots.release("a")
    slots.acquire("c")
    assert slots.open() == 2
