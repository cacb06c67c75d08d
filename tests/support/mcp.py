"""Helpers for MCP tests: tokens for the MCP resource, JSON-RPC bodies, and the 2026-07-28 request envelope."""

from __future__ import annotations

import itertools
from typing import Any

MCP = "/api/v1/mcp"
STATELESS = "2026-07-28"
_ids = itertools.count(1)


def request(method: str, params: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(_ids), "method": method, **fields}
    if params is not None:
        body["params"] = params
    return body


def call(name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return request("tools/call", {"name": name, "arguments": arguments or {}})


def stateless(method: str, params: dict[str, Any] | None = None, *, name_header: str | None = None):
    """(body, headers) of a 2026-07-28 request: `_meta` envelope and its header mirrors."""
    params = dict(params or {})
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {"MCP-Protocol-Version": STATELESS, "Mcp-Method": method}
    if method == "tools/call":
        headers["Mcp-Name"] = name_header if name_header is not None else params["name"]
    return request(method, params), headers


def token_request(client_id: str, secret: str, resource: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "resource": resource}
