"""`GET /api/v1/auth/authorize`, the authorization endpoint the RFC 8414 document names.

The hub issues tokens by client credentials only, so every authorization request is refused the way RFC 6749
§4.1.2.1 says: `unsupported_response_type`, sent back to the client's redirect URI (with its `state`) when that URI
is one the hub knows for the client, else shown as a 400 JSON body — never a redirect to an unverified URI, which
would make the hub an open redirector. Desktop MCP clients read the metadata and need the endpoint to exist; they
fall back to what the server supports.
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, redirect, request

from app.api.auth import oauth_error

blueprint = Blueprint("authorize", __name__)


def registered_redirect_uri(client_id: str | None, redirect_uri: str | None) -> bool:
    """Whether `redirect_uri` is registered for `client_id`. No client registers redirect URIs yet."""
    return False


@blueprint.get("/auth/authorize")
def authorize():
    client_id, redirect_uri = request.args.get("client_id"), request.args.get("redirect_uri")
    description = "This hub issues tokens by the client_credentials grant only (POST /api/v1/auth/token)."
    if not registered_redirect_uri(client_id, redirect_uri):
        return oauth_error(400, "unsupported_response_type", description)
    answer = {"error": "unsupported_response_type", "error_description": description}
    if "state" in request.args:
        answer["state"] = request.args["state"]
    separator = "&" if "?" in redirect_uri else "?"
    return redirect(f"{redirect_uri}{separator}{urlencode(answer)}", code=302)
