"""Devices as W3C Web of Things "Things" (docs/device-types.md): the Thing Description and its property reads.

The action forms of a Thing Description point at `POST /devices/{id}/commands/{command}`, served with the other
command routes in app/api/messages.py.
"""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify

from app.api.devices import checked_device_id
from app.core.errors import APIError
from app.infra.db import get_db
from app.schemas.thing_description import MEDIA_TYPE, thing_description
from app.services import device_types, registry
from app.web.authz import require_scope
from app.web.urls import public_base_url

blueprint = Blueprint("things", __name__)

PROPERTIES = ("status", "last_seen")


def _timeout() -> int:
    return current_app.config["SETTINGS"].heartbeat_timeout_seconds


@blueprint.get("/devices/<device_id>/thing-description")
@require_scope("device:read")
def get_thing_description(device_id: str):
    device, device_type = device_types.get_device_with_type(get_db(), checked_device_id(device_id), _timeout())
    document = thing_description(device, device_type, public_base_url())
    return current_app.response_class(json.dumps(document, ensure_ascii=False), mimetype=MEDIA_TYPE)


@blueprint.get("/devices/<device_id>/properties/<name>")
@require_scope("device:read")
def read_property(device_id: str, name: str):
    """One property of the Thing Description, as a bare JSON value."""
    if name not in PROPERTIES:
        raise APIError(404, "PROPERTY_NOT_FOUND", f"Devices have no property '{name[:64]}'.",
                       {"property": name[:64], "properties": list(PROPERTIES)})
    device = registry.get_device(get_db(), checked_device_id(device_id), _timeout())
    return jsonify(device[name])
