"""Following events from a request: what the REST routes and the MCP tool share (docs/events.md).

The per-process pieces live in the app's extensions, created on first use in the worker that uses them: the
event feed (one LISTEN connection and thread), the stream writer (one thread writing every caught-up stream's
events) and the stream slots. This module turns a caller's filters and
scopes into a `Filters`, answers a long poll inside the `?wait` waiter slots, and opens a stream inside a stream
slot, with the checks a long-lived stream repeats (the worker stopping, the token expiring or being revoked).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import jwt
from flask import current_app, request

from app.auth.tokens import Principal
from app.core.errors import APIError
from app.infra.db import get_db
from app.services import event_log, event_stream
from app.services.event_feed import EventFeed, StreamsFull, StreamSlots
from app.services.events import EVENT_TYPES, MESSAGE_READ_TYPES
from app.services.stream_writer import StreamWriter, Target
from app.telemetry import metrics
from app.web import worker_hooks
from app.web.authz import grant_still_live, insufficient_scope, revocations
from app.web.delivery import waiters

MAX_DEVICE_IDS = 100
MAX_WAIT_SECONDS = 30
MAX_LIMIT = 1000
STREAMS_FULL_RETRY_AFTER = 5


def _settings():
    return current_app.config["SETTINGS"]


def feed() -> EventFeed:
    extensions = current_app.extensions
    if "uaip.events" not in extensions:
        settings = _settings()
        extensions.setdefault("uaip.events", EventFeed(
            get_db(), coalesce_seconds=settings.event_coalesce_ms / 1000, ring_events=settings.event_ring_events,
            ring_bytes=settings.event_ring_mb * 1024 * 1024))
    return extensions["uaip.events"]


def stream_writer() -> StreamWriter:
    extensions = current_app.extensions
    if "uaip.stream_writer" not in extensions:
        extensions.setdefault("uaip.stream_writer", StreamWriter(feed(), worker_hooks.shutting_down))
    return extensions["uaip.stream_writer"]


def push_target() -> Target | None:
    """The request's client socket when the stream writer may write to it, else None (the stream's own thread
    writes). The writer must produce exactly what gunicorn's response would: that holds for a body on HTTP/1.1
    (chunked) or HTTP/1.0 (as is) over gunicorn's plain blocking socket. Not for TLS terminated by gunicorn, HTTP/2,
    HEAD (no body), or another WSGI server (the test client, the development server)."""
    environ = request.environ
    sock = environ.get("gunicorn.socket")
    protocol = environ.get("SERVER_PROTOCOL")
    if (not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket) or sock.gettimeout() is not None
            or protocol not in ("HTTP/1.1", "HTTP/1.0") or environ.get("HTTP_VERSION") == "2"
            or environ.get("REQUEST_METHOD") == "HEAD"):
        return None
    return Target(sock, chunked=protocol == "HTTP/1.1")


def _writer_attach(filters: event_log.Filters, framing: event_stream.Framing,
                   retention_hours: float) -> event_stream.Attach | None:
    target = push_target()
    if target is None:
        return None
    return event_stream.writer_attach(stream_writer(), target, filters, framing, retention_hours)


def stream_slots() -> StreamSlots:
    extensions = current_app.extensions
    if "uaip.stream_slots" not in extensions:
        settings = _settings()
        extensions.setdefault("uaip.stream_slots", StreamSlots(settings.max_streams, settings.max_streams_per_client))
    return extensions["uaip.stream_slots"]


def filters_for(principal: Principal, types: list[str] | None, device_ids: list[str] | None,
                device_types: list[str] | None) -> event_log.Filters:
    """The caller's filters, checked: known types, at most 100 device ids; `command.status` only with
    `message:read` (asked for without it: 403; otherwise left out for such a caller)."""
    if types is not None:
        unknown = [name for name in types if name not in EVENT_TYPES]
        if unknown or not types:
            raise APIError(400, "VALIDATION_ERROR", "Unknown event type.",
                           {"types": f"must be a list of {', '.join(EVENT_TYPES)}"})
    if device_ids is not None and not 1 <= len(device_ids) <= MAX_DEVICE_IDS:
        raise APIError(400, "VALIDATION_ERROR", "Too many device ids.",
                       {"device_id": f"at most {MAX_DEVICE_IDS} device ids"})
    if device_types is not None and not 1 <= len(device_types) <= MAX_DEVICE_IDS:
        raise APIError(400, "VALIDATION_ERROR", "Too many device types.",
                       {"device_type": f"at most {MAX_DEVICE_IDS} device types"})
    allowed = EVENT_TYPES if principal.has_scope("message:read") else tuple(
        name for name in EVENT_TYPES if name not in MESSAGE_READ_TYPES)
    if types is not None:
        if any(name not in allowed for name in types):
            raise insufficient_scope("message:read")
        allowed = tuple(dict.fromkeys(types))
    return event_log.Filters(
        types=None if len(allowed) == len(EVENT_TYPES) else allowed,
        device_ids=tuple(dict.fromkeys(device_ids)) if device_ids is not None else None,
        device_types=tuple(dict.fromkeys(device_types)) if device_types is not None else None,
    )


def long_poll(principal: Principal, after: event_log.Cursor | None, filters: event_log.Filters, *, limit: int,
              wait: float) -> event_log.Page:
    settings = _settings()
    client_id = principal.subject
    return event_stream.long_poll(
        get_db(), feed(), after, filters, limit=limit, wait=wait, retention_hours=settings.event_retention_hours,
        waiter_slot=lambda: waiters().slot(client_id), stopping=worker_hooks.shutting_down,
    )


def streams_full() -> APIError:
    return APIError(503, "STREAMS_FULL", "Every event stream slot of this server is taken; retry shortly.",
                    {"max_streams": _settings().max_streams,
                     "max_streams_per_client": _settings().max_streams_per_client},
                    headers={"Retry-After": str(STREAMS_FULL_RETRY_AFTER)})


def token_expiry(token: str | None) -> float:
    """The `exp` of the request's bearer token (already verified by the scope check); infinity without one."""
    if token is None:
        return float("inf")
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


def token_check(principal: Principal, token: str | None) -> Callable[[], bool]:
    """The one place a long-lived stream re-checks the token it was opened with, every TOKEN_CHECK_SECONDS
    (app/services/event_stream.py; its expiry ends the stream on time by itself). False ends the stream: the
    token was revoked (or its client disabled or deleted), or the grant it came from was. What the check needs is
    bound here, while the request's context exists; the stream's frames are produced after the view returned."""
    if token is None:  # a console session: its stream is bound to the session, not to a token
        return lambda: True
    store, db = revocations(), get_db()

    def still_valid() -> bool:
        if principal.issued_at is not None and store.is_revoked(principal.client_id, principal.token_id,
                                                               principal.issued_at):
            return False
        return principal.grant_id is None or grant_still_live(principal.grant_id, db)

    return still_valid


def property_framing(name: str) -> event_stream.Framing:
    """A Thing Description's observeproperty in its SSE form: one frame per `state.reported` event that changed
    property `name`, whose data is the new value alone (null when it was removed), with the event's id (so
    Last-Event-ID resumes)."""

    def render(events: list[dict]) -> list[str]:
        return [f"id: {event['id']}\ndata: {json.dumps(event['data']['changed'][name], ensure_ascii=False)}\n\n"
                for event in events if name in (event["data"].get("changed") or {})]

    return dataclasses.replace(event_stream.SSE, render=render)


def open_stream(principal: Principal, token: str | None, after: event_log.Cursor | None,
                filters: event_log.Filters, still_valid: Callable[[], bool] | None = None,
                framing: event_stream.Framing = event_stream.SSE) -> Iterator[str]:
    """Take a stream slot (else 503 STREAMS_FULL), read the first page (so a bad cursor is a 400 now), and return
    the stream's frames (`framing`: SSE events, or MCP notifications); the slot is given back when the stream
    ends, however it ends. `still_valid` replaces the token's check for a stream opened otherwise (the console's,
    by its operator's session)."""
    settings = _settings()
    slots = stream_slots()
    client_id = principal.subject
    try:
        slots.acquire(client_id)
    except StreamsFull:
        raise streams_full() from None
    metrics.event_streams_open.inc()

    def give_back() -> None:
        slots.release(client_id)
        metrics.event_streams_open.dec()

    release = _once(give_back)
    try:
        db = get_db()
        first = event_log.read_page(db, after, filters, event_stream.STREAM_BATCH, settings.event_retention_hours)
        frames = event_stream.stream(
            db, feed(), first, filters, retention_hours=settings.event_retention_hours,
            max_seconds=settings.stream_max_seconds, stopping=worker_hooks.shutting_down,
            token_valid=still_valid or token_check(principal, token), token_expires_at=token_expiry(token),
            release=release, framing=framing,
            attach=_writer_attach(filters, framing, settings.event_retention_hours),
        )
    except BaseException:
        release()
        raise
    return _Frames(frames, release)


def _once(action: Callable[[], None]) -> Callable[[], None]:
    lock = threading.Lock()
    done = []

    def run() -> None:
        with lock:
            if done:
                return
            done.append(True)
        action()

    return run


class _Frames:
    """The stream's frames for the WSGI server, whose `close()` also gives the slot back when the stream never
    started (a generator's `finally` does not run if it was never iterated)."""

    def __init__(self, frames: Iterator[str], release: Callable[[], None]) -> None:
        self._frames = frames
        self._release = release

    def __iter__(self) -> _Frames:
        return self

    def __next__(self) -> str:
        return next(self._frames)

    def close(self) -> None:
        try:
            self._frames.close()
        finally:
            self._release()
