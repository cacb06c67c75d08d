"""The audit log, read-only (admin): GET /audit, newest first, filtered, paged by an opaque cursor.

No route changes the log: POST, PUT, PATCH and DELETE on /audit answer 405 like any method a route lacks."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, jsonify, request

from app.core.errors import APIError
from app.infra.db import get_db
from app.services import audit
from app.web.authz import require_scope
from app.web.parsing import query_int, query_text

blueprint = Blueprint("audit", __name__)


def _query_time(name: str) -> dt.datetime | None:
    """An RFC 3339 date-time with an offset (`Z` allowed), or None when absent; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("z", "Z"))
        if "T" not in raw.upper() or value.tzinfo is None:
            raise ValueError
        value = value.astimezone(dt.UTC)  # PostgreSQL takes offsets up to 15:59 only
    except (ValueError, OverflowError):
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.",
                       {name: "must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T12:00:00Z"}) from None
    return value


@blueprint.get("/audit")
@require_scope("admin")
def list_audit():
    cursor = query_text("cursor", 64)
    return jsonify(audit.list_audit(
        get_db(),
        actor=query_text("actor", 512),
        action=query_text("action", 128),
        target=query_text("target", 512),
        since=_query_time("from"),
        until=_query_time("to"),
        limit=query_int("limit", 100, 1, 1000),
        before_id=None if cursor is None else audit.decode_cursor(cursor),
    ))
