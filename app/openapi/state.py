"""The OpenAPI paths of device state (docs/state.md)."""

from __future__ import annotations

from typing import Any

from app.openapi.common import (
    _COMMON_HEADERS,
    AUTHED,
    BEARER,
    DEVICE_ID,
    DEVICE_OR_BEARER,
    LIMIT,
    WITH_BODY,
    _body,
    _error,
    _errors,
    _json,
    _op,
    _param,
    _ref,
)
from app.web.urls import API_PREFIX


def _state_paths() -> dict[str, Any]:
    """Device state (docs/state.md)."""
    p = API_PREFIX
    state_etag = {"ETag": {"description": "Quoted state version, for If-Match.", "schema": {"type": "string"}}}
    write_errors = _errors(*WITH_BODY, *AUTHED, "422")
    write_errors["413"] = _error("Body larger than MAX_MESSAGE_SIZE_BYTES (`PAYLOAD_TOO_LARGE`), or a side of the "
                                 "state beyond MAX_STATE_BYTES or 16 levels (`STATE_TOO_LARGE`).")
    write_errors["422"] = _error("`UNKNOWN_PROPERTY` (`details.properties` lists the declared names), "
                                 "`PROPERTY_NOT_WRITABLE`, or `INVALID_VALUE` (`details.errors`: `[{pointer, message, "
                                 "keyword}]`). Nothing changed.")
    merge_patch = {"required": True, "content": {
        "application/merge-patch+json": {"schema": _ref("DesiredPatch")},
        "application/json": {"schema": _ref("DesiredPatch")},
    }}
    return {
        f"{p}/devices/{{device_id}}/state": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "Get the device's state: reported, desired, delta, metadata, version",
                {"200": _json(_ref("State"), "The state.", state_etag),
                 "304": {"description": "If-None-Match matched the current ETag.",
                         "headers": {**_COMMON_HEADERS, **state_etag}},
                 **_errors(*AUTHED)},
                tag="devices", security=DEVICE_OR_BEARER, scope="device:read", operationId="getState",
                parameters=[_param("If-None-Match", "header", {"type": "string"}, "Answer 304 if the ETag matches.")],
            ),
        },
        f"{p}/devices/{{device_id}}/state/desired": {
            "parameters": [DEVICE_ID],
            "patch": _op(
                "Merge-patch the desired state (published to the device on `.state.desired`)",
                {"200": _json(_ref("State"), "The new state.", state_etag), **write_errors, **_errors("412")},
                tag="devices", security=BEARER, scope="device:command", operationId="patchDesiredState",
                requestBody=merge_patch,
                parameters=[_param("If-Match", "header", {"type": "string"}, "Only if the state has this ETag.")],
                description="Checks in order: body 400, device 404, If-Match 412, size 413, then 422.",
            ),
        },
        f"{p}/devices/{{device_id}}/state/reported": {
            "parameters": [DEVICE_ID],
            "patch": _op(
                "Report state (the device, or a client with device:write); counts as a heartbeat",
                {"200": _json(_ref("State"), "The new state.", state_etag), **write_errors},
                tag="devices", security=DEVICE_OR_BEARER, scope="device:write", operationId="reportState",
                requestBody=_body("StateReport"),
                description="Per property, a report older than the stored timestamp is ignored; an equal one "
                "applies; a repeated value refreshes only its timestamp.",
            ),
        },
        f"{p}/devices/{{device_id}}/state/history": {
            "parameters": [DEVICE_ID],
            "get": _op(
                "History of one reported property (oldest first), raw or in buckets",
                {"200": _json(_ref("StateHistory"), "A page of points.", state_etag), **_errors("400", *AUTHED)},
                tag="devices", security=BEARER, scope="device:read", operationId="getStateHistory",
                parameters=[
                    _param("property", "query", {"type": "string", "minLength": 1, "maxLength": 256},
                           "The reported member.", required=True),
                    _param("from", "query", {"type": "string", "format": "date-time"}, "Inclusive (RFC 3339)."),
                    _param("to", "query", {"type": "string", "format": "date-time"}, "Exclusive (RFC 3339)."),
                    LIMIT,
                    _param("cursor", "query", {"type": "string", "maxLength": 64}, "next_cursor of the last page."),
                    _param("bucket", "query", {"type": "integer", "minimum": 1}, "Bucket size in seconds "
                           "(aligned to the Unix epoch; empty buckets are left out)."),
                    _param("agg", "query", {"type": "string", "enum": ["avg", "min", "max", "last"]},
                           "Aggregate per bucket (default last; avg/min/max need numbers)."),
                ],
            ),
        },
    }
