"""Resuming the event log is exact under concurrent writers whose commits land in random order and late."""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg2

from app.services import event_log
from app.services.event_feed import EventFeed
from app.services.event_log import Filters, current_end, read_page
from app.services.events import record_event
from tests.support.polling import wait_until

WRITERS = 4
EVENTS_PER_WRITER = 40


def _writer(url: str, device_id: str, barrier: threading.Barrier, errors: list) -> None:
    conn = psycopg2.connect(url)
    try:
        barrier.wait()
        rng = random.Random(device_id)
        for n in range(EVENTS_PER_WRITER):
            with conn.cursor() as cur:
                record_event(cur, "device.updated", device_id, {"n": n}, device_type="resume-test")
                # The row's seq is taken now; the commit comes up to 40 ms later, after other writers' commits.
                time.sleep(rng.uniform(0, 0.04))
            conn.commit()
    except Exception as exc:  # noqa: BLE001 - handed to the test thread, which fails with it
        errors.append(exc)
    finally:
        conn.close()


def test_resume_from_last_id_has_no_gap_and_no_duplicate(db):
    devices = [f"resume-{uuid.uuid4().hex[:8]}-{i}" for i in range(WRITERS)]
    filters = Filters(device_ids=tuple(devices))
    cursor = current_end(db)
    barrier = threading.Barrier(WRITERS)
    errors: list = []
    threads = [threading.Thread(target=_writer, args=(db.url, device, barrier, errors)) for device in devices]
    for thread in threads:
        thread.start()

    seen: list[tuple[str, int]] = []
    resumes = 0
    rng = random.Random(7)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        writers_done = not any(thread.is_alive() for thread in threads)
        # Each read resumes from the last id received, as a reconnecting client does.
        page = read_page(db, cursor, filters, limit=rng.randint(1, 5), retention_hours=24)
        resumes += 1
        seen += [(event["device_id"], event["data"]["n"]) for event in page.events]
        cursor = page.next
        if writers_done and not page.events and resumes >= 100:
            break  # everything committed before this read, and nothing left after the cursor
        time.sleep(rng.uniform(0, 0.01))
    for thread in threads:
        thread.join()

    assert not errors
    assert resumes >= 100
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert set(seen) == {(device, n) for device in devices for n in range(EVENTS_PER_WRITER)}, "an event was skipped"
    for device in devices:  # one device's events arrive in commit order
        assert [n for d, n in seen if d == device] == list(range(EVENTS_PER_WRITER))


def test_resume_from_the_workers_ring_has_no_gap_and_no_duplicate(db):
    """The same proof for what streams and woken long polls read: the listener's ring of recent events
    (app/services/event_ring.py), filled once per batch while writers commit out of order."""
    devices = [f"ring-{uuid.uuid4().hex[:8]}-{i}" for i in range(WRITERS)]
    filters = Filters(device_ids=tuple(devices))
    feed = EventFeed(db, poll_seconds=0.2)
    subscription = feed.subscribe()
    try:
        wait_until(lambda: feed.ring.start is not None, 10, "the listener filling its ring")
        cursor = current_end(db)
        barrier = threading.Barrier(WRITERS)
        errors: list = []
        threads = [threading.Thread(target=_writer, args=(db.url, device, barrier, errors)) for device in devices]
        for thread in threads:
            thread.start()

        seen: list[tuple[str, int]] = []
        reads = 0
        rng = random.Random(11)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            end = current_end(db) if not any(thread.is_alive() for thread in threads) else None
            subscription.wait(0.05)
            page = feed.recent(cursor, filters, rng.randint(1, 5), retention_hours=24)
            assert page is not None, "the ring lost events a reader had not read yet"
            reads += 1
            seen += [(event["device_id"], event["data"]["n"]) for event in page.events]
            cursor = page.next
            if end is not None and not page.events and cursor.pos >= end.pos:
                break  # every event committed is in the ring, and nothing is left after the cursor
        for thread in threads:
            thread.join()
    finally:
        subscription.close()
        feed.close()

    assert not errors
    assert reads >= 10
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert set(seen) == {(device, n) for device in devices for n in range(EVENTS_PER_WRITER)}, "an event was skipped"
    for device in devices:
        assert [n for d, n in seen if d == device] == list(range(EVENTS_PER_WRITER))


def test_sequence_numbers_every_committed_event_across_batches(db, monkeypatch):
    """One round trip per batch: a call that numbered a whole batch goes on until nothing is left unnumbered."""
    monkeypatch.setattr(event_log, "SEQUENCE_BATCH", 10)
    device = f"batch-{uuid.uuid4().hex[:8]}"
    start = current_end(db).pos

    def write(cur):
        for n in range(25):
            record_event(cur, "device.updated", device, {"n": n})

    db.transaction(write)
    head = event_log.sequence(db)
    rows = db.read(lambda cur: (cur.execute("SELECT pos FROM event_outbox WHERE device_id = %s ORDER BY seq",
                                            (device,)), cur.fetchall())[1])
    positions = [row["pos"] for row in rows]
    assert None not in positions and len(positions) == 25
    assert positions == sorted(positions) and positions[-1] <= head and positions[0] > start
