"""The worker's ring of recent events (app/services/event_ring.py): what it answers, what it sends to PostgreSQL
(None), and its bounds. Pure logic: the listener that fills it is covered by tests/integration/test_event_resume.py."""

from __future__ import annotations

import time

from app.services.event_log import Cursor, Filters
from app.services.event_ring import Entry, EventRing, RingEvent
from app.services.event_stream import sse_event

NOW_MS = int(time.time() * 1000)


def entry(pos: int, device_id: str = "d1", type_: str = "device.updated", device_type: str | None = "lamp",
          size: int = 10) -> Entry:
    view = RingEvent(id=f"{pos}-{NOW_MS}", type=type_, device_id=device_id, at="2026-01-01T00:00:00Z", data={"n": pos})
    return Entry(pos, type_, device_id, device_type, size, view)


def filled(*positions: int, start: int = 0, **bounds) -> EventRing:
    ring = EventRing(**bounds)
    ring.restart(start, 0)
    ring.extend([entry(pos) for pos in positions], max(positions, default=start), 0)
    return ring


def positions(page) -> list[int]:
    return [int(event["id"].split("-")[0]) for event in page.events]


def test_an_unfilled_ring_and_a_cursor_before_it_send_the_reader_to_postgresql():
    assert EventRing().page(Cursor(0, NOW_MS), Filters(), 10, 24) is None
    ring = filled(6, 7, start=5)
    assert ring.page(Cursor(4, NOW_MS), Filters(), 10, 24) is None
    assert positions(ring.page(Cursor(5, NOW_MS), Filters(), 10, 24)) == [6, 7]


def test_pages_follow_positions_and_a_full_page_ends_at_its_last_event():
    ring = filled(1, 2, 3, 4, 5)
    page = ring.page(Cursor(1, NOW_MS), Filters(), 2, 24)
    assert positions(page) == [2, 3] and page.next == Cursor(3, NOW_MS)
    page = ring.page(page.next, Filters(), 10, 24)
    assert positions(page) == [4, 5] and page.next.pos == 5 and not page.reset
    empty = ring.page(page.next, Filters(), 10, 24)
    assert empty.events == [] and empty.next.pos == 5


def test_a_cursor_ahead_of_the_ring_waits_there_without_moving_back():
    ring = filled(1, 2)
    page = ring.page(Cursor(9, NOW_MS), Filters(), 10, 24)
    assert page.events == [] and page.next.pos == 9


def test_filters_match_like_the_sql_ones_including_the_device_type_at_event_time():
    ring = EventRing()
    ring.restart(0, 0)
    ring.extend([entry(1, "a", device_type="lamp"), entry(2, "b", "command.status", device_type=None),
                 entry(3, "a", "device.online", device_type="sensor")], 3, 0)
    start = Cursor(0, NOW_MS)
    assert positions(ring.page(start, Filters(device_ids=("a",)), 10, 24)) == [1, 3]
    assert positions(ring.page(start, Filters(types=("device.updated", "device.online")), 10, 24)) == [1, 3]
    assert positions(ring.page(start, Filters(device_types=("sensor",)), 10, 24)) == [3]
    assert positions(ring.page(start, Filters(device_types=("lamp", "sensor"), device_ids=("a", "b")), 10, 24)) \
        == [1, 3]  # an event without a device type matches no device type list
    assert positions(ring.page(start, Filters(types=("device.updated",), device_ids=("b",)), 10, 24)) == []


def test_the_ring_drops_its_oldest_events_beyond_its_bounds():
    by_count = filled(*range(1, 11), max_events=4)
    assert by_count.start == 6 and by_count.page(Cursor(5, NOW_MS), Filters(), 10, 24) is None
    assert positions(by_count.page(Cursor(6, NOW_MS), Filters(), 10, 24)) == [7, 8, 9, 10]
    by_bytes = filled(*range(1, 11), max_bytes=35)  # 10 bytes an event: the last 3 fit
    assert by_bytes.start == 7
    assert positions(by_bytes.page(Cursor(7, NOW_MS), Filters(), 10, 24)) == [8, 9, 10]


def test_purged_events_leave_the_ring_and_old_cursors_read_as_expired():
    ring = filled(1, 2, 3, 4)
    ring.extend([], 4, purged=2)
    assert ring.start == 2 and ring.page(Cursor(1, NOW_MS), Filters(), 10, 24) is None
    assert positions(ring.page(Cursor(2, NOW_MS), Filters(), 10, 24)) == [3, 4]
    aged = ring.page(Cursor(3, NOW_MS - 2 * 3_600_000), Filters(), 10, retention_hours=1)
    assert aged.reset and aged.events == [] and aged.next.pos == 4


def test_an_events_sse_frame_is_encoded_once_and_equals_a_plain_dicts():
    event = entry(1).view
    plain = dict(event)
    frame = sse_event(event)
    assert frame == sse_event(plain) and event.sse is frame and sse_event(event) is frame
    assert "sse" not in event  # the JSON form (long polls) is unchanged
