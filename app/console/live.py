"""The console's live stream: the hub's event stream (docs/events.md) for a signed-in operator, by session cookie.

Pages subscribe with one EventSource (static/console.js) and refresh their live parts when an event arrives. The
stream is the API's own (same slots, same ids, same resume with Last-Event-ID, same end after
UAIP_STREAM_MAX_SECONDS); the operator's role sets what it may carry (both roles read devices and commands), and it
ends once the session does (signed out, expired, operator disabled), checked as often as a token's stream is.
"""

from __future__ import annotations

from flask import Response, request

from app.auth.tokens import Principal
from app.console.base import blueprint
from app.console.session import SESSION_COOKIE, current_operator, signed_in
from app.core.json_input import is_identifier
from app.infra.db import get_db
from app.services import event_log, operators
from app.web import event_follow

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@blueprint.get("/events")
@signed_in
def events():
    operator = current_operator()
    # The session is the "client" of stream slots (at most UAIP_MAX_STREAMS_PER_CLIENT tabs per operator session).
    principal = Principal("client", f"operator:{operator.email}", frozenset(operators.role_scopes(operator.role)))
    device_id = request.args.get("device_id")
    device_ids = [device_id] if device_id and is_identifier(device_id) else None
    filters = event_follow.filters_for(principal, None, device_ids, None)
    after = event_log.parse_cursor(request.headers.get("Last-Event-ID") or None)
    db, session = get_db(), request.cookies.get(SESSION_COOKIE)
    frames = event_follow.open_stream(principal, None, after, filters,
                                      still_valid=lambda: operators.session_operator(db, session) is not None)
    return Response(frames, mimetype="text/event-stream", headers=SSE_HEADERS)
