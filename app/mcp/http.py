"""`POST /api/v1/mcp`: the Model Context Protocol endpoint for AI agents (docs/mcp.md).

The view does what HTTP decides before any JSON-RPC is read, then hands the body to app/mcp/server.py:

1. an `Origin` header not in CORS_ORIGINS: 403 (DNS-rebinding protection, as the MCP transport requires);
2. a bearer token issued for this endpoint (`aud` = `<base>/api/v1/mcp`, RFC 8707), else 401 whose challenge
   names the endpoint's protected-resource metadata, so a client can discover how to get one;
3. an `Accept` that rules out `application/json` (the only thing this endpoint answers with): 406; a body declared
   as something other than JSON: 415; a body over MAX_MESSAGE_SIZE_BYTES: 413.

Those refusals use the hub's error envelope; everything after them is JSON-RPC. GET and DELETE get 405 (no
server-initiated stream, no sessions). The rate limit applies as on every route.
"""

from __future__ import annotations

import functools

from flask import Blueprint, Response, current_app, g, jsonify, request

from app.core.errors import APIError
from app.mcp import server
from app.mcp.tools import Caller
from app.web.authz import authenticate_bearer, insufficient_scope
from app.web.health import package_version
from app.web.urls import mcp_resource, mcp_resource_metadata_url

blueprint = Blueprint("mcp", __name__)


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = {value.lower() for value in current_app.config["SETTINGS"].cors_origins}
    if origin.lower() not in allowed and "*" not in allowed:
        raise APIError(
            403, "ORIGIN_NOT_ALLOWED", "Requests from this Origin are not allowed (CORS_ORIGINS).",
            {"origin": origin[:256]},
        )


def _check_representation() -> None:
    accept = request.accept_mimetypes
    if accept and accept["application/json"] <= 0:
        raise APIError(406, "NOT_ACCEPTABLE", "This endpoint answers with application/json only.")
    if request.mimetype and not request.is_json:
        raise APIError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "The body must be a JSON-RPC message (Content-Type: application/json).")


@functools.cache
def _server_info() -> dict[str, str]:
    return {"name": "uaip-hub", "title": "UAIP Hub", "version": package_version()}


@blueprint.post("/mcp")
def mcp_endpoint():
    _check_origin()
    challenge = f'resource_metadata="{mcp_resource_metadata_url()}"'
    principal = authenticate_bearer((mcp_resource(),), challenge)
    g.principal = principal
    _check_representation()
    body = request.get_data(cache=True)  # 413 past MAX_MESSAGE_SIZE_BYTES
    caller = Caller(principal, g.get("request_id"))
    try:
        reply = server.handle(body, request.headers, request.headers.getlist, caller, _server_info())
    except server.ScopeRequired as exc:
        raise insufficient_scope(exc.scope, f", {challenge}") from None
    if reply.body is None:
        accepted = Response(status=reply.status)
        del accepted.headers["Content-Type"]  # no body, so no media type
        return accepted
    response = jsonify(reply.body)
    response.status_code = reply.status
    return response
