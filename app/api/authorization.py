"""Desktop agents that act for an operator: dynamic registration (RFC 7591) at /auth/register, and the token
endpoint's authorization_code (RFC 6749 §4.1.3 with PKCE, RFC 7636) and refresh_token (§6) grants.

The authorization endpoint itself is a page (sign-in and consent): app/console/authorize.py. Tokens issued here
carry `sub` = the operator's email, `client_id` = the agent's registration and `grant_id` (revoking the grant
ends them); `aud` is the resource named at authorization. Errors use RFC 6749 §5.2 / RFC 7591 §3.2.2 bodies.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from app.api.auth import OTHER_GRANTS, InvalidTarget, _audience, oauth_error
from app.auth.tokens import issue_token
from app.core.json_input import InvalidJSON, decode_json
from app.infra.db import get_db
from app.services import oauth
from app.web.authz import basic_credentials

blueprint = Blueprint("authorization", __name__)


@blueprint.post("/auth/register")
def register():
    """RFC 7591 §3: public clients only; 201 with the registration."""
    if not request.is_json:
        return oauth_error(400, "invalid_client_metadata", "The body must be a JSON object (application/json).")
    try:
        metadata = decode_json(request.get_data(cache=True) or b"")
    except InvalidJSON as exc:
        return oauth_error(400, "invalid_client_metadata", exc.message)
    try:
        body = oauth.register_client(get_db(), metadata)
    except oauth.RegistrationError as exc:
        return oauth_error(400, exc.error, exc.description)
    response = jsonify(body)
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


def _token_response(grant: oauth.IssuedGrant):
    settings = current_app.config["SETTINGS"]
    access_token, expires_in = issue_token(
        grant.email, grant.scopes, settings.jwt_secret, settings.jwt_expiry_seconds, audience=grant.resource,
        extra_claims={"client_id": grant.client_id, "grant_id": grant.grant_id},
    )
    response = jsonify({
        "access_token": access_token, "token_type": "Bearer", "expires_in": expires_in,
        "scope": " ".join(grant.scopes), "refresh_token": grant.refresh_token,
    })
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def operator_grant(grant_type: str, fields: dict[str, str], requested_resources: list):
    """The token endpoint for the two grants of public clients (called by app/api/auth.py `token`)."""
    if basic_credentials() is not None or fields.get("client_secret"):
        return oauth_error(401, "invalid_client", "Public clients do not authenticate with a secret.")
    client_id = fields.get("client_id")
    if not client_id or oauth.find_client(get_db(), client_id) is None:
        return oauth_error(401, "invalid_client", "Unknown client_id.")
    try:
        requested = _audience(requested_resources)
    except InvalidTarget as exc:
        return oauth_error(400, "invalid_target", str(exc))
    try:
        if grant_type == "authorization_code":
            if not fields.get("code"):
                return oauth_error(400, "invalid_request", "code is required.")
            grant = oauth.exchange_code(get_db(), client_id, fields["code"], fields.get("redirect_uri"),
                                        fields.get("code_verifier"))
        else:
            if not fields.get("refresh_token"):
                return oauth_error(400, "invalid_request", "refresh_token is required.")
            grant = oauth.refresh(get_db(), client_id, fields["refresh_token"])
    except oauth.GrantError as exc:
        return oauth_error(exc.status, exc.error, exc.description)
    if requested is not None and requested != grant.resource:
        return oauth_error(400, "invalid_target", "The resource differs from the one the operator approved.")
    return _token_response(grant)


OTHER_GRANTS.update(authorization_code=operator_grant, refresh_token=operator_grant)
