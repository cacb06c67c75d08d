"""What every OAuth endpoint reads from a request (the token endpoint, revocation, introspection, the grants of
public clients): the form or JSON fields, the client's credentials, the requested resource, and the RFC 6749 §5.2
error body they answer with. OAuth client libraries parse exactly that shape, so these endpoints do not use the
hub's error envelope."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import Response, jsonify, request

from app.core.json_input import InvalidJSON, decode_json, storable_text
from app.infra.db import get_db
from app.services.clients import Client, authenticate_client
from app.web.authz import basic_credentials
from app.web.urls import canonical_resource, resources

MAX_CREDENTIAL_LENGTH = 256


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


def requested_audience(requested: list) -> str | None:
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
    return client, None
