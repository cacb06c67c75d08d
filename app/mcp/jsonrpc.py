"""JSON-RPC 2.0 framing as MCP's Streamable HTTP transport uses it: one request or notification per POST body.

Parsing refuses, before anything runs, what cannot be a single MCP message: a body that is not JSON the hub
accepts (app/web/parsing.py's decode_json: also non-finite numbers, NUL, nesting deeper than 32: -32700), a
batch (removed from MCP in 2025-06-18), anything but an object, a wrong `jsonrpc`, a missing method, a request
without a string or integer `id` (-32600). A message without `id` is a notification only when its method is one
(`notifications/...`); any other method without an `id` is a request that forgot it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.json_input import InvalidJSON, decode_json

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = str | int


class RpcError(Exception):
    """A JSON-RPC error answer. `request_id` is None when the request's id could not be read."""

    def __init__(self, code: int, message: str, data: Any = None, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id


@dataclass(frozen=True)
class Message:
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    id: RequestId | None = None  # None: a notification

    @property
    def is_notification(self) -> bool:
        return self.id is None


def _invalid(message: str) -> RpcError:
    return RpcError(INVALID_REQUEST, f"Invalid Request: {message}")


def _request_id(raw: dict[str, Any], method: str) -> RequestId | None:
    if "id" not in raw:
        if method.startswith("notifications/"):
            return None
        raise _invalid("a request needs an id (only notifications/* methods may omit it)")
    value = raw["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _invalid("id must be a string or an integer")
    return value


def parse(body: bytes) -> Message:
    """The one message in `body`, or RpcError (-32700 / -32600, id unknown)."""
    try:
        raw = decode_json(body)
    except InvalidJSON as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc.message}") from None
    if isinstance(raw, list):
        raise _invalid("batches are not supported; send one message per POST")
    if not isinstance(raw, dict):
        raise _invalid("the body must be a JSON-RPC request or notification object")
    if raw.get("jsonrpc") != "2.0":
        raise _invalid('jsonrpc must be "2.0"')
    method = raw.get("method")
    if not isinstance(method, str) or not method:
        raise _invalid("method must be a non-empty string (this endpoint accepts requests and notifications only)")
    request_id = _request_id(raw, method)
    params = raw.get("params", {})
    if params is None:
        params = {}
    if isinstance(params, list):
        # A valid JSON-RPC request whose params MCP cannot take: the method's params are wrong, not the framing.
        raise RpcError(INVALID_PARAMS, "Invalid params: params must be an object", request_id=request_id)
    if not isinstance(params, dict):
        raise _invalid("params must be an object")
    return Message(method, params, request_id)


def result(request_id: RequestId, value: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}
