"""Following the event log: a Server-Sent Events stream, and the long poll (REST and the MCP tool).

Both read their first page from PostgreSQL (numbering what committed so far first, so a caller sees its own
writes and a bad cursor is answered at once), then sleep on a subscription to the process's event feed
(app/services/event_feed.py) and take each later page, with their own cursor and filters, from the feed's ring of
recent events in memory: the feed reads each new batch once for every stream and long poll of the process.
PostgreSQL is read again only when the cursor lies before the ring (a resume from an older id), and every second
while the feed's listener is disconnected. Once a stream has caught up, the process's stream writer (one thread)
writes its live events while the stream's thread sleeps (app/services/stream_writer.py), so a batch wakes one
thread, not one per stream. A stream holds its gthread thread: it ends after
UAIP_STREAM_MAX_SECONDS with a `retry:` line (the client reconnects with Last-Event-ID and resumes), within
STOP_CHECK_SECONDS of the worker being told to stop, at its token's expiry, and within TOKEN_CHECK_SECONDS of the
token's revocation; in between it sends a `: keep-alive` comment every 15 s of silence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2

from app.infra.db import Database, DatabaseUnavailable
from app.services.event_feed import EventFeed, Subscription
from app.services.event_log import Cursor, Filters, Page, read_page
from app.services.stream_writer import PushedStream, StreamWriter, TakenBack, Target

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
# How often a stream re-checks its token (expiry and revocation): ends within this many seconds of either.
TOKEN_CHECK_SECONDS = 10.0
# A stream notices a stopping worker within this many seconds (a wake-up that only reads two flags).
STOP_CHECK_SECONDS = 0.2
# Without a connected listener, a reader polls PostgreSQL this often.
FALLBACK_POLL_SECONDS = 1.0
# The reconnection delay a stream that ends by age asks for (milliseconds).
RETRY_MS = 1000
STREAM_BATCH = 100


def sse_event(event: dict[str, Any]) -> str:
    """One event as an SSE frame; the JSON `id` is also the frame's `id:` (the client's Last-Event-ID). An event
    from the feed's ring keeps its frame, so the process's other streams reuse it."""
    frame = getattr(event, "sse", None)
    if frame is None:
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        frame = f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"
        with contextlib.suppress(AttributeError):  # a plain dict (a page read from PostgreSQL) keeps nothing
            event.sse = frame
    return frame


RESET_FRAME = 'event: reset\ndata: {"reason":"expired"}\n\n'
KEEPALIVE_FRAME = ": keep-alive\n\n"


@dataclasses.dataclass(frozen=True)
class Framing:
    """What a stream writes around its events: the REST stream's SSE frames, or the MCP `subscriptions/listen`
    notifications (app/mcp/server.py)."""

    opening: str
    render: Callable[[list[dict[str, Any]]], list[str]]
    reset: str
    ending: str  # the last frame of a stream that ends by age
    closing: str = ""  # the last frame of a stream that ends otherwise (worker stopping, token expired)


SSE = Framing(": connected\n\n", lambda events: [sse_event(event) for event in events], RESET_FRAME,
              f"retry: {RETRY_MS}\n\n")


def _later_page(db: Database, feed: EventFeed, cursor: Cursor, filters: Filters, limit: int,
                retention_hours: float, live: bool, may_query: bool) -> Page | None:
    """The page after `cursor` once a reader has waited: from the ring while the listener is connected, else (or
    when the ring does not reach back to `cursor`) from PostgreSQL, numbering first when nobody listens. None when
    only PostgreSQL could answer and `may_query` is false: the reader waits for its next wake-up instead of
    querying five times a second."""
    if live:
        page = feed.recent(cursor, filters, limit, retention_hours)
        if page is not None or not may_query:
            return page
    return read_page(db, cursor, filters, limit, retention_hours, fresh=not live)


# Hands a caught-up stream to the process's stream writer: (subscription, cursor, next keep-alive) -> the hold, or
# None when the writer cannot take it.
Attach = Callable[[Subscription, Cursor, float], PushedStream | None]


def writer_attach(writer: StreamWriter, target: Target, filters: Filters, framing: Framing,
                  retention_hours: float) -> Attach:
    """How a stream with these filters and framing is handed to `writer`, which writes to `target`."""
    keepalive = KEEPALIVE_FRAME.encode()

    def attach(subscription: Subscription, cursor: Cursor, next_keepalive: float) -> PushedStream | None:
        return writer.attach(target, subscription, filters, framing.render, cursor, next_keepalive,
                             retention_hours=retention_hours, page_size=STREAM_BATCH, keepalive_frame=keepalive,
                             keepalive_seconds=KEEPALIVE_SECONDS)

    return attach


def _sleep_while_held(pushed: PushedStream, clock: Callable[[], float], until: float, next_token_check: float,
                      token_valid: Callable[[], bool]) -> tuple[TakenBack, float, bool]:
    """The stream's thread while the writer holds its stream: it wakes only for the token check every
    TOKEN_CHECK_SECONDS, until `until` (the stream's age or its token's expiry) or until the writer hands the
    stream back. Returns the stream's state, the next token check, and whether the token is still valid."""
    valid = True
    while True:
        now = clock()
        if now >= until:
            break
        if now >= next_token_check:
            if not token_valid():
                valid = False
                break
            next_token_check = now + TOKEN_CHECK_SECONDS
        if pushed.wait(min(until, next_token_check) - now):
            break
    return pushed.take_back(), next_token_check, valid


def stream(db: Database, feed: EventFeed, first: Page, filters: Filters, *, retention_hours: float,
           max_seconds: float, stopping: Callable[[], bool], token_valid: Callable[[], bool],
           token_expires_at: float = float("inf"), release: Callable[[], None] = lambda: None,
           framing: Framing = SSE, attach: Attach | None = None,
           clock: Callable[[], float] = time.monotonic) -> Iterator[str]:
    """The frames of one stream, starting with the page the view already read (so a bad cursor was a 400, not a
    broken stream). The stream ends when its token expires (`token_expires_at`, unix time) and when
    `token_valid` (called every TOKEN_CHECK_SECONDS) says it was revoked; `release` gives the stream slot back
    however the stream ends (age, shutdown, token, or the client going away). With `attach`, a caught-up stream is
    written by the process's stream writer while this thread sleeps (app/services/stream_writer.py)."""
    subscription = feed.subscribe(filters)
    try:
        yield framing.opening  # the headers go out now, not with the first event
        started = clock()
        end = started + max_seconds
        token_end = started + max(0.0, token_expires_at - time.time())
        next_keepalive = started + KEEPALIVE_SECONDS
        next_token_check = started + TOKEN_CHECK_SECONDS
        last_read = started
        page: Page | None = first
        while True:
            if page.reset and framing.reset:
                yield framing.reset
            frames = framing.render(page.events)
            if frames:
                yield "".join(frames)  # one write for the page, not one per event
            if frames:
                next_keepalive = clock() + KEEPALIVE_SECONDS
            cursor: Cursor = page.next
            # A full page: read on at once (woken=True: from PostgreSQL when the ring does not reach back).
            woken = len(page.events) >= STREAM_BATCH
            page = None
            while page is None:
                if not woken:
                    now = clock()
                    if stopping() or now >= token_end:
                        if framing.closing:
                            yield framing.closing
                        return
                    if now >= end:
                        yield framing.ending
                        return
                    if now >= next_token_check:
                        if not token_valid():
                            if framing.closing:
                                yield framing.closing
                            return
                        next_token_check = now + TOKEN_CHECK_SECONDS
                    if now >= next_keepalive:
                        yield KEEPALIVE_FRAME
                        next_keepalive = now + KEEPALIVE_SECONDS
                    pushed = attach(subscription, cursor, next_keepalive) if (
                        attach is not None and subscription.live and feed.reaches(cursor)) else None
                    if pushed is not None:  # the writer serves the stream: this thread sleeps meanwhile
                        taken, next_token_check, valid = _sleep_while_held(
                            pushed, clock, min(end, token_end), next_token_check, token_valid)
                        if taken.gone:
                            return
                        cursor, next_keepalive = taken.cursor, taken.next_keepalive
                        if not valid:
                            if framing.closing:
                                yield framing.closing
                            return
                        woken = True  # read on from where the writer left; the checks above run again after
                        continue
                    timeout = min(STOP_CHECK_SECONDS, end - now, next_keepalive - now, next_token_check - now,
                                  token_end - now)
                    woken = subscription.wait(timeout)
                live = subscription.live
                # PostgreSQL is read when woken, else at most every FALLBACK_POLL_SECONDS (the listener is down,
                # or the ring does not reach back to this stream's cursor).
                may_query = woken or clock() - last_read >= FALLBACK_POLL_SECONDS
                if not live and not may_query:
                    continue
                if may_query:
                    last_read = clock()
                try:
                    page = _later_page(db, feed, cursor, filters, STREAM_BATCH, retention_hours, live, may_query)
                except (DatabaseUnavailable, psycopg2.Error) as exc:
                    # The client resumes from its last id on reconnecting (to this pod or another), so a lost read
                    # is a reason to end the stream, not to fail it.
                    log.warning("reading events failed; ending the stream",
                                extra={"error": str(exc).strip() or exc.__class__.__name__})
                    if framing.closing:
                        yield framing.closing
                    return
                woken = False
                if page is not None and not page.events and not page.reset:
                    cursor, page = page.next, None  # nothing for this stream: its cursor moves on, silently
    finally:
        subscription.close()
        release()


def long_poll(db: Database, feed: EventFeed, after: Cursor | None, filters: Filters, *, limit: int, wait: float,
              retention_hours: float, waiter_slot: Callable[[], contextlib.AbstractContextManager[bool]],
              stopping: Callable[[], bool], clock: Callable[[], float] = time.monotonic) -> Page:
    """The events after `after`, at once when there are some (or the cursor expired, or there is no `after`: the
    page is then empty and `next` is the current end), else as soon as some arrive within `wait` seconds; an
    empty page at the end. Waiting takes one of the `?wait` waiter slots; without a free one the answer is
    immediate."""
    if after is None or wait <= 0:
        return read_page(db, after, filters, limit, retention_hours)
    with feed.subscribe(filters) as subscription:  # before the first read: a commit in between still wakes us
        page = read_page(db, after, filters, limit, retention_hours)
        if page.events or page.reset:
            return page
        with waiter_slot() as admitted:
            if not admitted:
                return page
            deadline = clock() + wait
            while True:
                remaining = deadline - clock()
                if remaining <= 0 or stopping():
                    return page
                woken = subscription.wait(min(remaining, STOP_CHECK_SECONDS))
                live = subscription.live
                later = _later_page(db, feed, page.next, filters, limit, retention_hours, live, woken or not live)
                if later is not None:
                    page = later
                    if page.events or page.reset:
                        return page
