"""Devices as W3C Web of Things "Things" (docs/device-types.md, docs/state.md): the Thing Description and its
property routes — read (`status`, `last_seen`, and the reported value of a state property), write (a state
property's desired value) and observe (long poll for the next reported change).

The action forms of a Thing Description point at `POST /devices/{id}/commands/{command}`, served with the other
command routes in app/api/messages.py.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from app.api.devices import checked_device_id
from app.core.errors import APIError
from app.core.json_input import InvalidJSON, decode_json
from app.infra.db import get_db
from app.schemas.thing_description import MEDIA_TYPE, thing_description
from app.services import device_types, event_log, registry, state
from app.services.events import STATE_REPORTED
from app.web import device_state, event_follow
from app.web.authz import bearer_token, require_scope
from app.web.urls import published_base_url

blueprint = Blueprint("things", __name__)

PROPERTIES = ("status", "last_seen")


def _timeout() -> int:
    return current_app.config["SETTINGS"].heartbeat_timeout_seconds


@blueprint.get("/devices/<device_id>/thing-description")
@require_scope("device:read")
def get_thing_description(device_id: str):
    device, device_type = device_types.get_device_with_type(get_db(), checked_device_id(device_id), _timeout())
    document = thing_description(device, device_type, published_base_url())
    return current_app.response_class(json.dumps(document, ensure_ascii=False), mimetype=MEDIA_TYPE)


def _not_found(name: str, properties: list[str]) -> APIError:
    return APIError(404, "PROPERTY_NOT_FOUND", f"The device has no property '{name[:64]}'.",
                    {"property": name[:64], "properties": properties})


def _no_value(name: str) -> APIError:
    return APIError(404, "PROPERTY_NO_VALUE", f"The device has not reported '{name[:64]}' yet.",
                    {"property": name[:64]})


def _declaration(device_id: str, name: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the property's declaration — None on a device of an undeclared type, where any member is a property —,
    the device's state); 404 DEVICE_NOT_FOUND, or PROPERTY_NOT_FOUND for a name its type does not declare."""
    declared, current = state.property_context(get_db(), device_id)
    if declared is None:
        return None, current
    if name not in declared:
        raise _not_found(name, [*PROPERTIES, *sorted(declared)])
    return declared[name], current


def _bare_json() -> Any:
    """The body as one JSON value; a missing Content-Type is read as JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise APIError(400, "INVALID_JSON", "The request body must be a JSON value: the property's new value.")
    if request.content_type and not request.is_json:
        raise APIError(415, "UNSUPPORTED_MEDIA_TYPE", "The request body must be JSON (Content-Type: application/json).")
    try:
        return decode_json(raw)
    except InvalidJSON as exc:
        raise APIError(400, "INVALID_JSON", exc.message, exc.details) from None


def _client_id() -> str:
    return g.principal.subject


@blueprint.get("/devices/<device_id>/properties/<name>")
@require_scope("device:read")
def read_property(device_id: str, name: str):
    """One property of the Thing Description, as a bare JSON value: `status`, `last_seen`, or a reported one."""
    device_id = checked_device_id(device_id)
    if name in PROPERTIES:
        return jsonify(registry.get_device(get_db(), device_id, _timeout())[name])
    _, current = _declaration(device_id, name)
    if name not in current["reported"]:
        raise _no_value(name)
    return jsonify(current["reported"][name])


@blueprint.put("/devices/<device_id>/properties/<name>")
@require_scope("device:command")
def write_property(device_id: str, name: str):
    """A Thing Description's writeproperty form: the body is the bare value, which becomes the desired one."""
    value = _bare_json()
    device_id = checked_device_id(device_id)
    if name in PROPERTIES:
        registry.get_device(get_db(), device_id, _timeout())  # 404 first for an unknown device
        raise APIError(422, "PROPERTY_NOT_WRITABLE", f"'{name}' is kept by the hub; it cannot be written.",
                       {"property": name})
    _declaration(device_id, name)
    device_state.set_desired(device_id, {name: value}, expected=None, client_id=_client_id(), bare=True)
    return "", 204


def _observe_stream(device_id: str, name: str):
    """The observeproperty form's SSE variant: this property's reported changes as they commit, each frame's data
    the bare new value, in an event-stream slot (docs/events.md)."""
    after = event_log.parse_cursor(request.headers.get("Last-Event-ID") or request.args.get("after"))
    filters = event_log.Filters(types=(STATE_REPORTED,), device_ids=(device_id,))
    frames = event_follow.open_stream(g.principal, bearer_token(), after, filters,
                                      framing=event_follow.property_framing(name))
    return Response(frames, mimetype="text/event-stream", headers={"Cache-Control": "no-cache",
                                                                    "X-Accel-Buffering": "no"})


@blueprint.get("/devices/<device_id>/properties/<name>/observe")
@require_scope("device:read")
def observe_property(device_id: str, name: str):
    """A Thing Description's observeproperty form (long poll): the next changed reported value."""
    device_id = checked_device_id(device_id)
    if name in PROPERTIES:
        registry.get_device(get_db(), device_id, _timeout())
        raise APIError(404, "PROPERTY_NOT_FOUND", f"'{name}' cannot be observed; read it instead.",
                       {"property": name, "observable": False})
    declaration, _ = _declaration(device_id, name)
    if declaration is not None and not declaration.get("observable", True):
        raise APIError(404, "PROPERTY_NOT_FOUND", f"Property '{name}' is not observable; read it instead.",
                       {"property": name, "observable": False})
    if any(mimetype == "text/event-stream" and quality > 0 for mimetype, quality in request.accept_mimetypes):
        return _observe_stream(device_id, name)
    value = device_state.observe(device_id, name, _client_id())
    if value is device_state.MISSING:
        raise _no_value(name)
    return jsonify(value)
