"""OAuth 2.0 client credentials grant (RFC 6749 §4.4) at /auth/token, and /auth/login, the old hub's name.

An optional `resource` (RFC 8707) picks the token's audience: the REST API (`<base>`) or the MCP endpoint
(`<base>/api/v1/mcp`); any other value, or more than one, is `invalid_target`. Tokens without one work on REST.

Errors here use RFC 6749 §5.2 bodies (`error`, `error_description`), not the hub's envelope, because OAuth2
client libraries parse exactly that shape.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import Blueprint, Response, current_app, jsonify, request

from app.auth.secrets import remember_client_login
from app.auth.tokens import granted_scopes, issue_token
from app.core.json_input import InvalidJSON, decode_json, storable_text
from app.infra.db import get_db
from app.services.clients import Client, authenticate_client
from app.web.authz import basic_credentials, signing_keys
from app.web.urls import canonical_resource, resources

blueprint = Blueprint("auth", __name__)

MAX_CREDENTIAL_LENGTH = 256

# Grant types served by other modules: grant_type -> view(grant_type, fields, requested resources). Registered by
# app/api/authorization.py (authorization_code, refresh_token), which imports this module, not the other way round.
OTHER_GRANTS: dict = {}


def oauth_error(status: int, error: str, description: str):
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="uaip-hub", charset="UTF-8"'
    return response


def _is_utf8_form(raw: bytes) -> bool:
    """RFC 6749 (appendix B) form bodies are UTF-8 once percent-decoded; werkzeug would quietly replace bad bytes."""
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def token_request_fields() -> tuple[dict[str, str] | None, list, str]:
    """(form or JSON fields as strings, every `resource` value given, "") or (None, [], why the request is
    malformed). RFC 8707 allows `resource` more than once: repeated form fields, or a JSON array.

    Text no credential can contain (NUL, unpaired surrogates, bytes that are not UTF-8) makes the request
    malformed (400 invalid_request) before it reaches the database or the secret check."""
    if request.is_json:
        try:
            data = decode_json(request.get_data(cache=True) or b"{}")
        except InvalidJSON as exc:
            return None, [], exc.message
        if not isinstance(data, dict):
            return None, [], "The JSON body must be an object."
        resource = data.get("resource")
        given = [] if resource is None else resource if isinstance(resource, list) else [resource]
        return {key: value for key, value in data.items() if isinstance(value, str)}, given, ""
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        if request.mimetype != "multipart/form-data" and not _is_utf8_form(request.get_data(cache=True)):
            return None, [], "The form body is not UTF-8."
        fields = {key: value for key, value in request.form.items()}
        if not all(storable_text(value) for value in fields.values()):
            return None, [], "The form body contains a NUL character."
        return fields, request.form.getlist("resource"), ""
    return None, [], "The body must be application/x-www-form-urlencoded or a JSON object."


class InvalidTarget(Exception):
    """A `resource` this hub cannot issue a token for (RFC 8707 `invalid_target`)."""

    def __init__(self, reason: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"{reason} Its resources are {' and '.join(allowed)}.")


def _audience(requested: list) -> str | None:
    """The token's `aud` for the requested resources: none requested, none; exactly one of the hub's resources
    (compared as app/web/urls.py `canonical_resource` writes it), that one. Anything else raises InvalidTarget."""
    if not requested:
        return None
    allowed = resources()
    if len(requested) > 1:
        raise InvalidTarget("Request one resource per token.", allowed)
    value = requested[0]
    canonical = canonical_resource(value) if isinstance(value, str) else None
    if canonical not in allowed:
        raise InvalidTarget("The resource is not one this hub serves.", allowed)
    return canonical


def authenticated_client(fields: dict[str, str]) -> tuple[Client | None, Response | None]:
    """(the enabled client whose credentials this request carries, None) or (None, the OAuth error to answer).
    HTTP Basic (client_secret_basic) or `client_id` + `client_secret` fields (client_secret_post), not both. Used
    by the token, revocation and introspection endpoints alike."""
    basic = basic_credentials()
    body_id, body_secret = fields.get("client_id"), fields.get("client_secret")
    if basic is not None and body_secret is not None:
        return None, oauth_error(400, "invalid_request", "Use one client authentication method, not both.")
    client_id, client_secret = basic if basic is not None else (body_id, body_secret)
    if not client_id or not client_secret:
        return None, oauth_error(401, "invalid_client", "Client authentication failed.")
    if len(client_id) > MAX_CREDENTIAL_LENGTH or len(client_secret) > MAX_CREDENTIAL_LENGTH:
        return None, oauth_error(401, "invalid_client", "Client authentication failed.")
    client = authenticate_client(get_db(), client_id, client_secret)
    if client is None:  # unknown, wrong or expired secret, disabled or deleted
        return None, oauth_error(401, "invalid_client", "Client authentication failed.")
    remember_client_login(client_id, client_secret)  # its next requests here get its own rate-limit bucket
    return client, None


@blueprint.post("/auth/token")
@blueprint.post("/auth/login")
def token():
    fields, requested_resources, problem = token_request_fields()
    if fields is None:
        return oauth_error(400, "invalid_request", problem)
    grant_type = fields.get("grant_type")
    if grant_type is None:
        return oauth_error(400, "invalid_request", "grant_type is required.")
    if grant_type in OTHER_GRANTS:  # desktop agents acting for an operator (app/api/authorization.py)
        return OTHER_GRANTS[grant_type](grant_type, fields, requested_resources)
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
        audience = _audience(requested_resources)
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
