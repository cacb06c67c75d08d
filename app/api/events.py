"""Event streams (docs/events.md): `GET /events` and `GET /devices/{id}/events`, as Server-Sent Events when the
client accepts `text/event-stream`, else as a JSON long poll. Views parse the query and headers and hand over to
app/web/event_follow.py."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from app.api.devices import checked_device_id
from app.core.errors import APIError
from app.infra.db import get_db
from app.services import event_log, registry
from app.web import event_follow
from app.web.authz import bearer_token, require_scope
from app.web.parsing import query_int

blueprint = Blueprint("events", __name__)

MAX_FILTER_ITEM = 128
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _list(name: str) -> list[str] | None:
    """A comma-separated filter (the parameter may also repeat); None when absent or empty."""
    items = [item.strip() for raw in request.args.getlist(name) for item in raw.split(",") if item.strip()]
    if not items:
        return None
    if any(len(item) > MAX_FILTER_ITEM or "\x00" in item for item in items):
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.",
                       {name: f"comma-separated values of at most {MAX_FILTER_ITEM} characters"})
    return items


def _wants_stream() -> bool:
    return any(mimetype == "text/event-stream" and quality > 0 for mimetype, quality in request.accept_mimetypes)


def _after(*, stream: bool) -> event_log.Cursor | None:
    """Where to resume: a stream takes `Last-Event-ID` (what a reconnecting EventSource sends) before the query;
    `after` and `last_event_id` are the same parameter."""
    header = request.headers.get("Last-Event-ID") if stream else None
    value = header if header not in (None, "") else request.args.get("after") or request.args.get("last_event_id")
    return event_log.parse_cursor(value)


def _follow(device_ids: list[str] | None):
    filters = event_follow.filters_for(g.principal, _list("types"), device_ids, _list("device_type"))
    if _wants_stream():
        frames = event_follow.open_stream(g.principal, bearer_token(), _after(stream=True), filters)
        return Response(frames, mimetype="text/event-stream", headers=SSE_HEADERS)
    after = _after(stream=False)
    wait = query_int("wait", 0, 0, event_follow.MAX_WAIT_SECONDS)
    limit = query_int("limit", 100, 1, event_follow.MAX_LIMIT)
    page = event_follow.long_poll(g.principal, after, filters, limit=limit, wait=wait)
    return jsonify(page.body())


@blueprint.get("/events")
@require_scope("device:read")
def events():
    return _follow(_list("device_id"))


@blueprint.get("/devices/<device_id>/events")
@require_scope("device:read")
def device_events(device_id: str):
    device_id = checked_device_id(device_id)
    registry.get_device(get_db(), device_id, current_app.config["SETTINGS"].heartbeat_timeout_seconds)  # else 404
    return _follow([device_id])
