"""Token revocation (RFC 7009) at /auth/revoke and introspection (RFC 7662) at /auth/introspect.

Both authenticate the calling client exactly as the token endpoint does (HTTP Basic or client_secret_post; 401
`invalid_client` otherwise) and take a form (or JSON) field `token`; `token_type_hint` is accepted and not needed.
Any token this hub signed is understood: access tokens, and refresh tokens if they are JWTs of this hub's keys.

- revoke: 200 with an empty body, also for a token that is unknown, malformed or expired (RFC 7009 §2.2). A client
  may revoke only tokens issued to it (else 400 `unauthorized_client`, nothing changes) unless it holds `admin`.
- introspect: `{"active": false}` for anything not valid now — and for another client's token unless the caller
  holds `admin`; otherwise `active`, `scope`, `client_id`, `sub`, `aud` (only when the token has one), `exp`,
  `iat`, `jti`, `token_type` ("Bearer").
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from app.api.auth import authenticated_client, oauth_error, token_request_fields
from app.auth import revocation
from app.auth.tokens import InvalidToken, token_claims
from app.infra.db import get_db
from app.services import oauth
from app.services.clients import Client, revoke_token_ids
from app.web.authz import basic_credentials, grant_still_live, signing_keys

blueprint = Blueprint("token_admin", __name__)

MAX_TOKEN_LENGTH = 8192


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _request(public_clients: bool = False):
    """(fields, the authenticated client, None) or (None, None, an OAuth error response). With `public_clients`, a
    registered public client (a desktop agent) may name itself by `client_id` alone (RFC 7009 §2.1)."""
    fields, _resources, problem = token_request_fields()
    if fields is None:
        return None, None, oauth_error(400, "invalid_request", problem)
    client, failure = authenticated_client(fields)
    if failure is not None and public_clients and fields.get("client_id") and "client_secret" not in fields \
            and basic_credentials() is None:
        public = oauth.find_client(get_db(), fields["client_id"])
        if public is not None:
            client, failure = Client(public.client_id, public.client_name, []), None
    if failure is not None:
        return None, None, failure
    token = fields.get("token")
    if not token:
        return None, None, oauth_error(400, "invalid_request", "The token parameter is required.")
    return fields, client, None


def _claims(token: str, verify_expiry: bool = True) -> dict | None:
    """The claims of a token this hub signed (any of its keys), or None."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        return token_claims(token, signing_keys(), verify_expiry=verify_expiry)
    except InvalidToken:
        return None


def _owner(claims: dict) -> str:
    owner = claims.get("client_id", claims["sub"])
    return owner if isinstance(owner, str) else claims["sub"]


@blueprint.post("/auth/revoke")
def revoke():
    fields, client, failure = _request(public_clients=True)
    if failure is not None:
        return failure
    admin = "admin" in client.scopes
    foreign = oauth_error(400, "unauthorized_client", "A client may revoke only tokens issued to it.")
    claims = _claims(fields["token"], verify_expiry=False)
    if claims is not None and isinstance(claims.get("jti"), str) and isinstance(claims.get("exp"), int):
        if _owner(claims) != client.client_id and not admin:
            return foreign
        revoke_token_ids(get_db(), [(claims["jti"], claims["exp"])])
    elif claims is None and len(fields["token"]) <= MAX_TOKEN_LENGTH:
        # Not a JWT of this hub: perhaps a refresh token of an operator sign-in grant (opaque, stored hashed).
        if oauth.revoke_refresh_token(get_db(), fields["token"], None if admin else client.client_id) == "foreign":
            return foreign
    return _no_store(current_app.response_class(status=200))


@blueprint.post("/auth/introspect")
def introspect():
    fields, client, failure = _request()
    if failure is not None:
        return failure
    claims = _claims(fields["token"])
    inactive = _no_store(jsonify({"active": False}))
    if claims is None or not isinstance(claims.get("jti"), str):
        return inactive
    owner = _owner(claims)
    if owner != client.client_id and "admin" not in client.scopes:
        return inactive
    if revocation.current().is_revoked(owner, claims["jti"], int(claims["iat"])):
        return inactive
    grant_id = claims.get("grant_id")
    if grant_id is not None and not (isinstance(grant_id, str) and grant_still_live(grant_id)):
        return inactive  # issued through operator sign-in, and the grant was revoked since
    answer = {"active": True, "scope": claims.get("scope", ""), "client_id": owner, "sub": claims["sub"]}
    if claims.get("aud") is not None:
        answer["aud"] = claims["aud"]
    answer.update(exp=claims["exp"], iat=claims["iat"], jti=claims["jti"], token_type="Bearer")
    return _no_store(jsonify(answer))
