"""Whom the event feed wakes, and when (app/services/event_feed.py): only subscribers with an event in the batch,
and, under a steady flow, a batch per coalescing period, without losing, repeating or reordering an event."""

from __future__ import annotations

import threading
import time
import uuid

from app import create_app
from app.services import event_stream
from app.services.event_feed import EventFeed
from app.services.event_log import Cursor, Filters, now_ms, read_page
from app.services.events import record_event
from app.web import event_follow
from tests.support.polling import wait_until


def _device() -> str:
    return f"wake-{uuid.uuid4().hex[:10]}"


def _write(db, device_id: str, n: int) -> None:
    db.transaction(lambda cur: record_event(cur, "device.updated", device_id, {"n": n}))


def test_a_batch_wakes_only_the_subscribers_it_has_an_event_for(db):
    mine, other = _device(), _device()
    feed = EventFeed(db, poll_seconds=0.2)
    waiting = feed.subscribe(Filters(device_ids=(mine,)))
    elsewhere = feed.subscribe(Filters(device_ids=(other,)))
    everything = feed.subscribe()
    try:
        wait_until(lambda: feed.ring.start is not None, 10, "the listener filling its ring")
        for subscription in (waiting, elsewhere, everything):
            subscription.wait(0)  # the ring's first fill wakes everyone; start from clear flags

        _write(db, other, 1)
        assert elsewhere.wait(5), "the subscriber the event is for was not woken"
        assert everything.wait(5), "a subscriber without filters was not woken"
        assert not waiting.wait(0.5), "a batch without an event for this subscriber woke it"

        _write(db, mine, 2)
        assert waiting.wait(5)
    finally:
        for subscription in (waiting, elsewhere, everything):
            subscription.close()
        feed.close()


def test_a_stream_left_asleep_still_moves_its_cursor_and_gets_its_next_event(db):
    """Another device's events wake nobody here, yet the stream's next event of its own arrives and nothing
    else does (the stream moves its cursor past other events at its periodic wake-up)."""
    mine, other = _device(), _device()
    feed = EventFeed(db, poll_seconds=0.2)
    stop = threading.Event()
    frames: list[str] = []
    filters = Filters(device_ids=(mine,))
    first = read_page(db, None, filters, event_stream.STREAM_BATCH, 24)
    frames_of = event_stream.stream(db, feed, first, filters, retention_hours=24, max_seconds=60,
                                    stopping=stop.is_set, token_valid=lambda: True)
    reader = threading.Thread(target=lambda: frames.extend(frames_of), daemon=True)
    reader.start()
    try:
        wait_until(lambda: feed.ring.start is not None, 10, "the listener filling its ring")
        for n in range(20):
            _write(db, other, n)
        _write(db, mine, 99)
        wait_until(lambda: any('"n":99' in frame for frame in frames), 10, "the stream's own event")
    finally:
        stop.set()
        reader.join(5)
        feed.close()
    assert not reader.is_alive()
    assert not any(other in frame for frame in frames)


def test_coalesced_writes_deliver_every_event_once_and_in_order(db):
    """With a 50 ms coalescing period, a steady flow (an event every 5 ms, each its own transaction) reaches a
    stream in far fewer writes than events, and every event arrives, once, in commit order."""
    device_id, events = _device(), 60
    feed = EventFeed(db, poll_seconds=0.2, coalesce_seconds=0.05)
    stop = threading.Event()
    writes: list[list[int]] = []
    filters = Filters(device_ids=(device_id,))
    first = read_page(db, None, filters, event_stream.STREAM_BATCH, 24)
    frames_of = event_stream.stream(db, feed, first, filters, retention_hours=24, max_seconds=60,
                                    stopping=stop.is_set, token_valid=lambda: True)

    def read() -> None:
        for frame in frames_of:
            numbers = [int(part.split("}")[0]) for part in frame.split('"data":{"n":')[1:]]
            if numbers:
                writes.append(numbers)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: feed.ring.start is not None, 10, "the listener filling its ring")
        for n in range(events):
            _write(db, device_id, n)
            time.sleep(0.005)  # the flow's pace: without coalescing, nearly every event is a write of its own
        wait_until(lambda: sum(len(numbers) for numbers in writes) >= events, 10, "every event at the stream")
    finally:
        stop.set()
        reader.join(5)
        feed.close()
    received = [n for numbers in writes for n in numbers]
    assert received == list(range(events))
    assert len(writes) <= events // 3, f"{len(writes)} writes for {events} events: not coalesced"


def test_the_first_event_after_a_quiet_spell_is_not_held_back(db):
    """Coalescing spaces batches that follow one another; an event after a quiet spell wakes at once."""
    device_id = _device()
    coalesce = 1.0
    feed = EventFeed(db, poll_seconds=5.0, coalesce_seconds=coalesce)
    subscription = feed.subscribe(Filters(device_ids=(device_id,)))
    try:
        wait_until(lambda: feed.ring.start is not None, 10, "the listener filling its ring")
        time.sleep(coalesce)  # the quiet spell: longer than the period that follows the ring's first fill
        subscription.wait(0)
        began = time.monotonic()
        _write(db, device_id, 1)
        assert subscription.wait(5)
        assert time.monotonic() - began < coalesce / 2
    finally:
        subscription.close()
        feed.close()




def _ring_numbers(feed: EventFeed, device_id: str) -> list[int]:
    """The `n` of every event of `device_id` the ring holds."""
    page = feed.ring.page(Cursor(feed.ring.start, now_ms()), Filters(device_ids=(device_id,)), 100_000, 24)
    return [event["data"]["n"] for event in page.events]


def test_a_worker_ring_keeps_the_configured_number_of_events(hub_env, db):
    """UAIP_EVENT_RING_EVENTS / UAIP_EVENT_RING_MB reach the worker's ring, which then holds no more events than
    that: the most recent ones."""
    app = create_app({**hub_env, "UAIP_EVENT_RING_EVENTS": "256", "UAIP_EVENT_RING_MB": "1"})
    with app.app_context():
        feed = event_follow.feed()
    assert (feed.ring.max_events, feed.ring.max_bytes) == (256, 1024 * 1024)
    subscription = feed.subscribe()  # starts the worker's listener
    try:
        wait_until(lambda: feed.ring.start is not None, 10, "the listener filling its ring")
        device_id = _device()
        for batch in range(3):  # 600 events in batches of 200, more than twice the bound
            numbers = range(batch * 200, batch * 200 + 200)
            db.transaction(lambda cur, numbers=numbers: [
                record_event(cur, "device.updated", device_id, {"n": n}) for n in numbers])
            wait_until(lambda numbers=numbers: _ring_numbers(feed, device_id)[-1:] == [numbers[-1]], 10,
                       "the batch in the ring")
        held = _ring_numbers(feed, device_id)
        assert 200 <= len(held) <= 256 and held == list(range(600 - len(held), 600))
        assert len(feed.ring._entries) <= 256
    finally:
        subscription.close()
