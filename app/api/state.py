"""Device state endpoints (docs/state.md): read the state, patch desired, report, read the history.

Every 200 carries `ETag: "<version>"`. Writes check, in order: body shape (400), device (404), `If-Match` (412),
size (413), then the type's property declarations (422) — app/services/state.py does all but the first.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request

from app.api.devices import checked_device_id, device_secret_lookup
from app.core.errors import APIError
from app.core.etags import parse_if_match
from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.services import state, state_history
from app.services.commands import sweeps
from app.services.state_model import parse_timestamp
from app.telemetry import metrics
from app.web import device_state
from app.web.authz import device_or_scope, require_device_self, require_scope
from app.web.parsing import if_none_match_hits, json_body, query_int, query_text

blueprint = Blueprint("state", __name__)

MAX_BUCKET_SECONDS = 366 * 24 * 3600
MAX_PROPERTY_QUERY = 256


def _settings():
    return current_app.config["SETTINGS"]


def state_response(document: dict[str, Any]):
    response = jsonify(document)
    response.headers["ETag"] = state.etag_for(document["version"])
    return response


def _object_body(what: str) -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise APIError(400, "VALIDATION_ERROR", f"The request body must be a JSON object: {what}.",
                       {"body": "must be an object"})
    return body


@blueprint.get("/devices/<device_id>/state")
@device_or_scope("device:read", device_secret_lookup)
def get_state(device_id: str):
    device_id = checked_device_id(device_id)
    require_device_self(device_id)
    current = state.get_state(get_db(), device_id)
    etag = state.etag_for(current["version"])
    if if_none_match_hits(etag):
        response = current_app.response_class(status=304)
        response.headers["ETag"] = etag
        return response
    return state_response(current)


@blueprint.patch("/devices/<device_id>/state/desired")
@require_scope("device:command")
def patch_desired(device_id: str):
    patch = _object_body("a JSON merge patch of the desired state")
    device_id = checked_device_id(device_id)
    expected = parse_if_match(request.headers.get("If-Match"))
    document = device_state.set_desired(device_id, patch, expected=expected, client_id=g.principal.subject)
    return state_response(document)


def _report_body() -> tuple[dict[str, Any], dt.datetime | None]:
    body = _object_body('{"reported": {...}, "timestamp": "<RFC 3339, optional>"}')
    problems = {}
    unknown = sorted(set(body) - {"reported", "timestamp"})
    if unknown:
        problems.update({name: "unknown field" for name in unknown[:20]})
    if not isinstance(body.get("reported"), dict):
        problems["reported"] = "required; must be an object"
    sent_at = None
    if body.get("timestamp") is not None:
        try:
            sent_at = parse_timestamp(body["timestamp"]) if isinstance(body["timestamp"], str) else None
        except ValueError:
            sent_at = None
        if sent_at is None:
            problems["timestamp"] = "must be an RFC 3339 date-time with an offset"
    if problems:
        metrics.state_reports_total.labels(outcome="rejected").inc()
        raise APIError(400, "VALIDATION_ERROR", "The report is invalid.", problems)
    return body["reported"], sent_at


@blueprint.patch("/devices/<device_id>/state/reported")
@device_or_scope("device:write", device_secret_lookup)
def patch_reported(device_id: str):
    reported, sent_at = _report_body()
    device_id = checked_device_id(device_id)
    require_device_self(device_id)
    try:
        written = state.report(get_db(), device_state.scope(), device_id, reported, sent_at,
                               limits=device_state.limits())
    except APIError as exc:
        if exc.status in (413, 422):
            metrics.state_reports_total.labels(outcome="rejected").inc()
        raise
    metrics.state_reports_total.labels(outcome=written.outcome).inc()
    if written.changed:
        state.notify_reported(get_messaging(), [device_id])
    if written.status == "online" and written.previous_status != "online":
        sweeps.devices_came_online(get_db(), get_messaging(), [(device_id, written.previous_status)],
                                     _settings().command_retry_seconds)
    return state_response(written.state)


def _query_time(name: str) -> dt.datetime | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_timestamp(raw)
    except ValueError:
        raise APIError(400, "VALIDATION_ERROR", f"Query parameter '{name}' is invalid.",
                       {name: "must be an RFC 3339 date-time with an offset (e.g. 2026-01-31T12:00:00Z)"}) from None


@blueprint.get("/devices/<device_id>/state/history")
@require_scope("device:read")
def get_history(device_id: str):
    prop = query_text("property", MAX_PROPERTY_QUERY)
    if prop is None:
        raise APIError(400, "VALIDATION_ERROR", "Query parameter 'property' is required.",
                       {"property": "required: the reported member whose history to read"})
    agg = request.args.get("agg") or None
    if agg is not None and agg not in state_history.AGGREGATES:
        raise APIError(400, "VALIDATION_ERROR", "Query parameter 'agg' is invalid.",
                       {"agg": f"must be one of {', '.join(state_history.AGGREGATES)}"})
    bucket = query_int("bucket", 0, 1, MAX_BUCKET_SECONDS) or None
    if agg is not None and bucket is None:
        raise APIError(400, "VALIDATION_ERROR", "Query parameter 'agg' needs 'bucket'.",
                       {"bucket": "required with agg: the bucket size in seconds"})
    query = state_history.Query(
        device_id=checked_device_id(device_id), property=prop, start=_query_time("from"), end=_query_time("to"),
        limit=query_int("limit", 100, 1, 1000), cursor=query_text("cursor", 64), bucket=bucket, agg=agg,
    )
    current = state.get_state(get_db(), query.device_id)  # 404 for an unknown device
    response = jsonify(state_history.read_history(get_db(), query, _settings().state_history_hours))
    response.headers["ETag"] = state.etag_for(current["version"])  # like every 200 of a state route
    return response
