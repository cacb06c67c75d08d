"""MCP `subscriptions/listen` (protocol 2026-07-28): a POST answered by a stream of change notifications, served
from the event log (docs/events.md, docs/mcp.md).

A client subscribes to devices by resource URI, `urn:uaip:device:{device_id}` (the device's Thing Description
`id`), in `notifications.resourceSubscriptions`. The stream opens with `notifications/subscriptions/acknowledged`
naming what is honoured (those device URIs; the list-changed kinds never, as the hub's tool list does not
change), then sends `notifications/resources/updated` for a device whenever one of its `device.*` or `state.*`
events commits — one notification per device per batch, since each is a level trigger ("read it again"). Every
frame carries the listen request's id in `_meta`. The stream ends like a REST event stream (its age, the worker
stopping, the token expiring) with the request's result, the protocol's graceful close; the client listens again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from app.core.json_input import is_identifier
from app.core.statuses import EVENT_TYPES
from app.mcp.jsonrpc import INVALID_PARAMS, RequestId, RpcError
from app.schemas.thing_description import DEVICE_URN_PREFIX, device_urn
from app.services import event_stream

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
MAX_DEVICES = 100
# What a device resource's reader would see change: not command statuses (those are messages, not the device).
DEVICE_EVENT_TYPES = tuple(name for name in EVENT_TYPES if name.startswith(("device.", "state.")))


@dataclasses.dataclass(frozen=True)
class Listen:
    """A `subscriptions/listen` request, checked: the HTTP layer answers it with a stream."""

    request_id: RequestId
    device_ids: tuple[str, ...]

    @property
    def honored(self) -> dict[str, Any]:
        """The filter the stream honours, as `notifications/subscriptions/acknowledged` reports it."""
        return {"resourceSubscriptions": [device_urn(device_id) for device_id in self.device_ids]}


def parse(request_id: RequestId, params: dict[str, Any]) -> Listen:
    """-32602 for a filter that is not an object, subscriptions that are not strings, or more than 100 devices.
    URIs that name no device of this hub are simply not honoured."""
    notifications = params.get("notifications")
    if not isinstance(notifications, dict):
        raise RpcError(INVALID_PARAMS, "Invalid params: notifications must be an object.", request_id=request_id)
    uris = notifications.get("resourceSubscriptions") or []
    if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
        raise RpcError(INVALID_PARAMS, "Invalid params: resourceSubscriptions must be a list of URIs.",
                       request_id=request_id)
    device_ids = tuple(dict.fromkeys(
        uri.removeprefix(DEVICE_URN_PREFIX) for uri in uris
        if uri.startswith(DEVICE_URN_PREFIX) and is_identifier(uri.removeprefix(DEVICE_URN_PREFIX))
    ))
    if len(device_ids) > MAX_DEVICES:
        raise RpcError(INVALID_PARAMS, f"Invalid params: at most {MAX_DEVICES} device subscriptions per stream.",
                       request_id=request_id)
    return Listen(request_id, device_ids)


def _frame(message: dict[str, Any]) -> str:
    return f"event: message\ndata: {json.dumps(message, separators=(',', ':'), ensure_ascii=False)}\n\n"


def framing(listen: Listen, server_info: dict[str, str]) -> event_stream.Framing:
    """The stream's frames: the acknowledgement, an update per changed device, and the graceful close."""
    meta = {SUBSCRIPTION_ID: listen.request_id}

    def render(events: list[dict[str, Any]]) -> list[str]:
        changed = dict.fromkeys(event["device_id"] for event in events)
        return [_frame({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                        "params": {"uri": device_urn(device_id), "_meta": meta}}) for device_id in changed]

    acknowledged = _frame({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                           "params": {"notifications": listen.honored, "_meta": meta}})
    closed = _frame({"jsonrpc": "2.0", "id": listen.request_id, "result": {
        "resultType": "complete", "_meta": {**meta, "io.modelcontextprotocol/serverInfo": server_info}}})
    return event_stream.Framing(opening=acknowledged, render=render, reset="", ending=closed, closing=closed)
