"""Device registry endpoints (docs/api.md, "Devices"). Each view parses input, calls one registry function, answers."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request, url_for

from app.api.models import DeviceCreate, DevicePatch, DeviceReplace, Heartbeat
from app.core.json_input import is_identifier
from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.services import registry
from app.services.commands import acks, sweeps
from app.services.events import publish_device_event
from app.web.authz import device_or_scope, require_device_self, require_scope
from app.web.parsing import if_none_match_hits, parse_body, query_choice, query_int, query_text

blueprint = Blueprint("devices", __name__)




def _timeout() -> int:
    return current_app.config["SETTINGS"].heartbeat_timeout_seconds


def checked_device_id(device_id: str) -> str:
    """An id that cannot exist (bad characters, too long) is simply not found; it never reaches SQL."""
    if not is_identifier(device_id):
        raise registry.device_not_found(device_id[:128])
    return device_id


def _device_response(device: dict[str, Any], status: int = 200):
    response = jsonify(device)
    response.status_code = status
    response.headers["ETag"] = registry.etag_for(device["version"])
    return response


@blueprint.post("/devices")
@blueprint.post("/devices/register")
@require_scope("device:write")
def register_device():
    body = parse_body(DeviceCreate)
    device, secret = registry.register_device(get_db(), body.model_dump(), _timeout())
    publish_device_event(get_messaging(), "registered", device["device_id"], device_type=device["device_type"])
    response = _device_response({**device, "device_secret": secret}, 201)
    response.headers["Location"] = url_for("devices.get_device", device_id=device["device_id"])
    return response


@blueprint.get("/devices")
@require_scope("device:read")
def list_devices():
    limit = query_int("limit", 100, 1, 1000)
    offset = query_int("offset", 0, 0, 10_000_000)
    devices, total = registry.list_devices(
        get_db(),
        status=query_choice("status", registry.DEVICE_STATUSES),
        device_type=query_text("type", 64),
        capability=query_text("capability", 64),
        limit=limit,
        offset=offset,
        timeout=_timeout(),
    )
    return jsonify({"devices": devices, "total": total, "limit": limit, "offset": offset})


@blueprint.get("/devices/<device_id>")
@require_scope("device:read")
def get_device(device_id: str):
    device = registry.get_device(get_db(), checked_device_id(device_id), _timeout())
    etag = registry.etag_for(device["version"])
    if if_none_match_hits(etag):
        response = current_app.response_class(status=304)
        response.headers["ETag"] = etag
        return response
    return _device_response(device)


@blueprint.route("/devices/<device_id>", methods=["PATCH", "PUT"])
@require_scope("device:write")
def update_device(device_id: str):
    device_id = checked_device_id(device_id)
    replace = request.method == "PUT"
    body = parse_body(DeviceReplace if replace else DevicePatch)
    changes = body.model_dump() if replace else body.model_dump(include=body.model_fields_set)
    expected = registry.parse_if_match(request.headers.get("If-Match"))
    if not changes:
        # Nothing to change: answer with the device, still honouring If-Match, without bumping the version.
        device = registry.get_device(get_db(), device_id, _timeout())
        if expected is not None and expected != device["version"]:
            raise registry.precondition_failed(device["version"])
        return _device_response(device)
    device = registry.update_device(
        get_db(), device_id, changes, expected_version=expected, timeout=_timeout()
    )
    publish_device_event(get_messaging(), "updated", device_id, version=device["version"])
    return _device_response(device)


@blueprint.delete("/devices/<device_id>")
@require_scope("device:write")
def delete_device(device_id: str):
    cancelled = sweeps.delete_device(get_db(), checked_device_id(device_id), _timeout())
    publish_device_event(get_messaging(), "deleted", device_id, cancelled_commands=len(cancelled))
    acks.notify_final(get_messaging(), cancelled)
    return "", 204


def device_secret_lookup(device_id: str) -> str | None:
    return registry.device_secret_hash(get_db(), device_id) if is_identifier(device_id) else None


@blueprint.post("/devices/<device_id>/heartbeat")
@device_or_scope("device:write", device_secret_lookup)
def heartbeat(device_id: str):
    device_id = checked_device_id(device_id)
    require_device_self(device_id)
    body = parse_body(Heartbeat, optional=True) or Heartbeat()
    device, previous = registry.record_heartbeat(get_db(), device_id, body.status, _timeout())
    if device["status"] == "online" and previous != "online":
        retry = current_app.config["SETTINGS"].command_retry_seconds
        sweeps.devices_came_online(get_db(), get_messaging(), [(device_id, previous)], retry)
    return _device_response(device)
