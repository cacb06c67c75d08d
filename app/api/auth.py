"""OAuth 2.0 client credentials grant (RFC 6749 §4.4) at /auth/token, and /auth/login, the old hub's name.

Errors here use RFC 6749 §5.2 bodies (`error`, `error_description`), not the hub's envelope, because OAuth2
client libraries parse exactly that shape.
"""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request

from app.db import get_db
from app.security import SCOPES, basic_credentials, issue_token
from app.services.clients import authenticate_client

blueprint = Blueprint("auth", __name__)

MAX_CREDENTIAL_LENGTH = 256


def oauth_error(status: int, error: str, description: str):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="uaip-hub", charset="UTF-8"'
    return response


def _token_request_fields() -> dict[str, str] | None:
    """Form or JSON fields as strings; None when the body cannot be read as either."""
    if request.is_json:
        try:
            data = json.loads(request.get_data(cache=True) or b"{}")
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        return {key: value for key, value in data.items() if isinstance(value, str)}
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        return {key: value for key, value in request.form.items()}
    return None


@blueprint.post("/auth/token")
@blueprint.post("/auth/login")
def token():
    fields = _token_request_fields()
    if fields is None:
        return oauth_error(400, "invalid_request", "The body must be application/x-www-form-urlencoded or a JSON object.")
    grant_type = fields.get("grant_type")
    if grant_type is None:
        return oauth_error(400, "invalid_request", "grant_type is required.")
    if grant_type != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", "Only the client_credentials grant is supported.")

    basic = basic_credentials()
    body_id, body_secret = fields.get("client_id"), fields.get("client_secret")
    if basic is not None and body_secret is not None:
        return oauth_error(400, "invalid_request", "Use one client authentication method, not both.")
    client_id, client_secret = basic if basic is not None else (body_id, body_secret)
    if not client_id or not client_secret:
        return oauth_error(401, "invalid_client", "Client authentication failed.")
    if len(client_id) > MAX_CREDENTIAL_LENGTH or len(client_secret) > MAX_CREDENTIAL_LENGTH or "\x00" in client_id:
        return oauth_error(401, "invalid_client", "Client authentication failed.")

    client = authenticate_client(get_db(), client_id, client_secret)
    if client is None:
        return oauth_error(401, "invalid_client", "Client authentication failed.")

    requested = fields.get("scope")
    if requested is None or not requested.strip():
        scopes = client.scopes
    else:
        scopes = list(dict.fromkeys(requested.split()))
        granted = set(SCOPES) if "admin" in client.scopes else set(client.scopes)
        if not set(scopes) <= granted:
            return oauth_error(400, "invalid_scope", "The requested scope exceeds the scopes granted to this client.")

    settings = current_app.config["SETTINGS"]
    access_token, expires_in = issue_token(client.client_id, scopes, settings.jwt_secret, settings.jwt_expiry_seconds)
    response = jsonify(
        {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in, "scope": " ".join(scopes)}
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
