"""OAuth 2.0 client credentials grant (RFC 6749 §4.4) at /auth/token, and /auth/login, the old hub's name.

An optional `resource` (RFC 8707) picks the token's audience: the REST API (`<base>`) or the MCP endpoint
(`<base>/api/v1/mcp`); any other value, or more than one, is `invalid_target`. Tokens without one work on REST.

Errors here use RFC 6749 §5.2 bodies (`error`, `error_description`), not the hub's envelope, because OAuth2
client libraries parse exactly that shape.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.auth.tokens import granted_scopes, issue_token
from app.web.authz import signing_keys
from app.web.oauth_requests import (
    InvalidTarget,
    authenticated_client,
    oauth_error,
    requested_audience,
    token_request_fields,
)

blueprint = Blueprint("auth", __name__)


@blueprint.post("/auth/token")
@blueprint.post("/auth/login")
def token():
    fields, requested_resources, problem = token_request_fields()
    if fields is None:
        return oauth_error(400, "invalid_request", problem)
    grant_type = fields.get("grant_type")
    if grant_type is None:
        return oauth_error(400, "invalid_request", "grant_type is required.")
    if grant_type in ("authorization_code", "refresh_token"):
        from app.api.authorization import operator_grant  # desktop agents acting for an operator

        return operator_grant(grant_type, fields, requested_resources)
    if grant_type != "client_credentials":
        return oauth_error(
            400, "unsupported_grant_type",
            "Supported grant types: client_credentials, authorization_code, refresh_token.",
        )

    client, failure = authenticated_client(fields)
    if failure is not None:
        return failure

    scopes = granted_scopes(fields.get("scope"), client.scopes)
    if not scopes:
        return oauth_error(400, "invalid_scope", "This client holds none of the requested scopes.")

    try:
        audience = requested_audience(requested_resources)
    except InvalidTarget as exc:
        return oauth_error(400, "invalid_target", str(exc))

    settings = current_app.config["SETTINGS"]
    access_token, expires_in = issue_token(
        client.client_id, scopes, signing_keys(), settings.jwt_expiry_seconds, audience=audience
    )
    response = jsonify(
        {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in, "scope": " ".join(scopes)}
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
