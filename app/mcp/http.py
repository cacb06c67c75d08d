"""`POST /api/v1/mcp`: the Model Context Protocol endpoint for AI agents (docs/mcp.md).

The view does what HTTP decides before any JSON-RPC is read, then hands the body to app/mcp/server.py:

1. an `Origin` header not in CORS_ORIGINS: 403 (DNS-rebinding protection, as the MCP transport requires);
2. a bearer token issued for this endpoint (`aud` = `<base>/api/v1/mcp`, RFC 8707), else 401 whose challenge
   names the endpoint's protected-resource metadata and the scopes its tools use, so a client can discover how
   to get one;
3. an `Accept` that rules out `application/json` (the only thing this endpoint answers with): 406; a body declared
   as something other than JSON: 415; a body over MAX_MESSAGE_SIZE_BYTES: 413.

Those refusals use the hub's error envelope; everything after them is JSON-RPC. GET and DELETE get 405 (no
server-initiated stream, no sessions). The rate limit applies as on every route, except to those probes and to an
accepted caller's notifications (`_free_of_charge`).
"""

from __future__ import annotations

import functools

from flask import Blueprint, Response, current_app, g, jsonify, request

from app.core.errors import APIError
from app.mcp import jsonrpc, listen, server
from app.mcp.tools import SCOPES_USED, Caller
from app.ratelimit.hooks import not_charged
from app.services import event_log
from app.web import event_follow
from app.web.authz import authenticate_bearer, bearer_token, insufficient_scope, token_principal
from app.web.health import package_version
from app.web.resource_metadata import protected_resource_document
from app.web.urls import MCP_PATH, PROTECTED_RESOURCE, mcp_resource, mcp_resource_metadata_url

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


# RFC 9728 metadata of this resource, at the well-known path in front of the endpoint's path (not under /api/v1).
metadata_blueprint = Blueprint("mcp_metadata", __name__)


@metadata_blueprint.get(PROTECTED_RESOURCE + MCP_PATH)
def mcp_endpoint_metadata():
    return jsonify(protected_resource_document(mcp_resource(), list(SCOPES_USED)))


def _free_of_charge() -> bool:
    """What the rate limit does not count here: the GET and DELETE probes (405, clients try them to look for a
    stream or a session) and JSON-RPC notifications from a caller this endpoint accepts (202, nothing runs).
    Everything else, refusals included, is charged like any request."""
    if request.path != MCP_PATH:
        return False
    if request.method in ("GET", "DELETE"):
        return True
    if request.method != "POST" or not request.content_length:
        return False
    if request.content_length > current_app.config["MAX_CONTENT_LENGTH"]:
        return False  # the view answers 413
    principal = token_principal()
    if principal is None or principal.audience != mcp_resource():
        return False
    try:
        return jsonrpc.parse(request.get_data(cache=True)).is_notification
    except jsonrpc.RpcError:
        return False


@blueprint.record_once
def _register_exemption(state) -> None:
    not_charged(state.app, _free_of_charge)


def _listen_stream(principal, subscription: listen.Listen) -> Response:
    """`subscriptions/listen`: a stream of notifications (app/mcp/listen.py) in one of this worker's event-stream
    slots, ended like a REST event stream (docs/events.md)."""
    if not any(mimetype == "text/event-stream" and quality > 0 for mimetype, quality in request.accept_mimetypes):
        raise APIError(406, "NOT_ACCEPTABLE", "subscriptions/listen answers with text/event-stream; accept it.")
    filters = event_log.Filters(types=listen.DEVICE_EVENT_TYPES, device_ids=subscription.device_ids)
    frames = event_follow.open_stream(principal, bearer_token(), None, filters,
                                      framing=listen.framing(subscription, _server_info()))
    return Response(frames, mimetype="text/event-stream", headers={"Cache-Control": "no-cache",
                                                                    "X-Accel-Buffering": "no"})


@blueprint.post("/mcp")
def mcp_endpoint():
    _check_origin()
    metadata = f'resource_metadata="{mcp_resource_metadata_url()}"'
    # Every 401 names the discovery document and the scopes to ask for (RFC 6750 §3, RFC 9728 §5.1).
    principal = authenticate_bearer((mcp_resource(),), f'{metadata}, scope="{" ".join(SCOPES_USED)}"')
    g.principal = principal
    _check_representation()
    body = request.get_data(cache=True)  # 413 past MAX_MESSAGE_SIZE_BYTES
    caller = Caller(principal, g.get("request_id"))
    try:
        reply = server.handle(body, request.headers, request.headers.getlist, caller, _server_info())
    except server.ScopeRequired as exc:
        raise insufficient_scope(exc.scope, f", {metadata}") from None
    if reply.listen is not None:
        return _listen_stream(principal, reply.listen)
    if reply.body is None:
        accepted = Response(status=reply.status)
        del accepted.headers["Content-Type"]  # no body, so no media type
        return accepted
    response = jsonify(reply.body)
    response.status_code = reply.status
    return response
