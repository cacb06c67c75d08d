"""Who is calling, per request: bearer tokens (the scope decorator) and device HTTP Basic auth.

A bearer token is accepted when it verifies (signature under a known key, expiry: cached per process by
VerifiedTokens), names an acceptable audience and is not revoked (app/auth/revocation.py, asked on every request:
its keys are read in the rate limiter's Redis round trip). The authenticated client becomes the audit actor of the
request (app/core/audit_context.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import current_app, g, request

from app.auth import revocation
from app.auth.secrets import _recent_device_logins, client_login_seen, verify_secret
from app.auth.tokens import InvalidToken, Principal, SigningKeys, VerifiedTokens
from app.core import audit_context
from app.core.errors import APIError
from app.core.json_input import InvalidJSON, decode_json
from app.infra.db import DatabaseUnavailable, get_db
from app.infra.redis_client import get_cache
from app.services.clients import revocation_state
from app.services.oauth import grant_is_live
from app.web.urls import API_PREFIX, public_base_url

# Endpoints where an API client authenticates with its id and secret (HTTP Basic or the body): the token
# endpoint (and its old name), revocation and introspection.
TOKEN_PATHS = tuple(f"{API_PREFIX}/auth/{name}" for name in ("token", "login", "revoke", "introspect"))


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def signing_keys() -> SigningKeys:
    """The app's signing keys: JWT_SECRET signs, it and JWT_PREVIOUS_SECRETS verify."""
    extensions = current_app.extensions
    keys = extensions.get("uaip.signing_keys")
    if keys is None:
        settings = current_app.config["SETTINGS"]
        keys = extensions.setdefault("uaip.signing_keys",
                                     SigningKeys(settings.jwt_secret, settings.jwt_previous_secrets))
    return keys


def verified_tokens() -> VerifiedTokens:
    extensions = current_app.extensions
    cache = extensions.get("uaip.verified_tokens")
    if cache is None:
        cache = extensions.setdefault("uaip.verified_tokens", VerifiedTokens(signing_keys()))
    return cache


def revocations() -> revocation.Revocations:
    """The app's revocation store: its Redis client, and PostgreSQL's revocations as the fallback and the truth."""
    extensions = current_app.extensions
    store = extensions.get("uaip.revocations")
    if store is None:
        db = get_db()
        store = extensions.setdefault("uaip.revocations",
                                      revocation.Revocations(get_cache(), lambda: revocation_state(db)))
    return store


# `revocation.is_revoked(principal)` and `revocation.publish(...)` (services, the event streams) find the running
# app's store through this.
revocation.set_resolver(revocations)


def token_principal() -> Principal | None:
    """The principal of a valid bearer token on this request, or None (never raises). Cached on `g`."""
    if "token_principal" not in g:
        token = _bearer_token()
        principal = None
        if token is not None:
            try:
                principal = verified_tokens().principal(token)
            except InvalidToken:
                principal = None
            if principal is not None and principal.grant_id is not None and not grant_still_live(principal.grant_id):
                principal = None  # an operator revoked the desktop agent's grant (or it was caught reusing one)
        g.token_principal = principal
    return g.token_principal


def grant_still_live(grant_id: str, db=None) -> bool:
    """False also when the database cannot say (the token is then refused, as an unverifiable one). `db` for
    callers outside a request (an open event stream)."""
    try:
        return grant_is_live(db or get_db(), grant_id)
    except DatabaseUnavailable:
        return False


def recognised_device() -> str | None:
    """The device id of this request's HTTP Basic credentials if this process accepted exactly those credentials
    recently, else None. Never touches the database; a wrong or unknown secret is simply not recognised."""
    credentials = basic_credentials()
    if credentials is None:
        return None
    device_id, secret = credentials
    return device_id if _recent_device_logins.seen(device_id, secret) else None


def token_request_credentials() -> tuple[str, str] | None:
    """The (client_id, client_secret) a token request presents (HTTP Basic, or the form or JSON body), else None.
    Only for POSTs to TOKEN_PATHS; reads the body the way the views do (cached), never checks anything."""
    if request.method != "POST" or request.path not in TOKEN_PATHS:
        return None
    basic = basic_credentials()
    if basic is not None:
        return basic
    raw = request.get_data(cache=True)  # first, so the view (and request.form below) still see the body
    fields: object = None
    if request.is_json:
        try:
            fields = decode_json(raw)
        except InvalidJSON:
            return None
    elif request.mimetype in ("application/x-www-form-urlencoded", ""):
        fields = request.form
    if not hasattr(fields, "get"):
        return None
    client_id, secret = fields.get("client_id"), fields.get("client_secret")
    if isinstance(client_id, str) and isinstance(secret, str) and client_id and secret:
        return client_id, secret
    return None


def recognised_client() -> str | None:
    """The client id of a token request whose credentials this process's token endpoint accepted recently, else
    None (one HMAC; no database, no scrypt). What the rate limiter keys the token endpoint by."""
    credentials = token_request_credentials()
    if credentials is None:
        return None
    client_id, secret = credentials
    return client_id if client_login_seen(client_id, secret) else None


def presents_credentials() -> bool:
    """Whether the request carries device or client credentials (unchecked): HTTP Basic, or client credentials in
    a token request's body."""
    return basic_credentials() is not None or token_request_credentials() is not None


REST_CHALLENGE = 'realm="uaip-hub"'


def authenticate_bearer(audiences: tuple[str | None, ...], challenge: str = REST_CHALLENGE) -> Principal:
    """The principal of this request's valid bearer token whose `aud` is one of `audiences` (None: a token naming
    no resource), else 401 with `WWW-Authenticate: Bearer <challenge>` (plus `error="invalid_token"` when a token
    was presented)."""
    if "Authorization" not in request.headers:
        raise APIError(
            401, "UNAUTHORIZED", "A bearer token is required.", headers={"WWW-Authenticate": f"Bearer {challenge}"}
        )
    principal = token_principal()
    if principal is None or _revoked(principal):
        raise _invalid_token("The access token is missing, malformed, expired or invalid.", challenge)
    if principal.audience not in audiences:
        raise _invalid_token("The access token was issued for another resource (its aud claim).", challenge)
    g.client_id = principal.subject
    audit_context.set_actor(actor_of(principal))
    return principal


def _revoked(principal: Principal) -> bool:
    """Revocation, asked once per request (a view authenticating twice costs no second round trip); usually
    answered already by the rate limiter's round trip (`settle_revocation`)."""
    if "token_revoked" not in g:
        g.token_revoked = revocation.is_revoked(principal)
    return g.token_revoked


def revocation_keys_to_read() -> list[str] | None:
    """The Redis keys that say whether this request's bearer token is revoked, for the rate limiter to read in
    its own round trip; None without a client token (or when the check must go its own way)."""
    principal = token_principal()
    if principal is None or principal.kind != "client" or principal.issued_at is None:
        return None
    return revocations().keys_to_read(principal.client_id, principal.token_id)


def settle_revocation(values: list) -> None:
    """Take the revocation answer from the values of `revocation_keys_to_read`; when they cannot give it (Redis
    lost its copy), the view asks `revocation.is_revoked` itself, which restores it."""
    principal = token_principal()
    answer = revocations().answer_from(values, principal.token_id, principal.issued_at)
    if answer is not None:
        g.token_revoked = answer


def actor_of(principal: Principal) -> str:
    """The audit actor of a token: its client, or the operator a token issued through sign-in acts for."""
    if principal.operator is not None:
        return audit_context.operator_actor(principal.operator)
    return audit_context.client_actor(principal.subject)


def _invalid_token(message: str, challenge: str) -> APIError:
    return APIError(401, "UNAUTHORIZED", message,
                    headers={"WWW-Authenticate": f'Bearer {challenge}, error="invalid_token"'})


def insufficient_scope(scope: str, challenge_extra: str = "") -> APIError:
    """403 for a valid token without `scope`; `challenge_extra` appends parameters to the Bearer challenge."""
    return APIError(
        403, "INSUFFICIENT_SCOPE", f"This operation needs the '{scope}' scope.",
        details={"required_scope": scope},
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"{challenge_extra}'},
    )


def _authenticate_bearer(scope: str) -> Principal:
    """REST routes: a token naming no resource or the REST API (`<base>`), with `scope`."""
    principal = authenticate_bearer((None, public_base_url()))
    if not principal.has_scope(scope):
        raise insufficient_scope(scope)
    return principal


def require_scope(scope: str) -> Callable:
    """View decorator: a valid bearer token with `scope` (or admin), else 401/403."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            g.principal = _authenticate_bearer(scope)
            return view(*args, **kwargs)

        wrapper.required_scope = scope
        return wrapper

    return decorator


def basic_credentials() -> tuple[str, str] | None:
    auth = request.authorization
    if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
        return None
    return auth.username, auth.password


def device_or_scope(scope: str, load_device_secret_hash: Callable[[str], str | None]) -> Callable:
    """View decorator for device endpoints: HTTP Basic `device_id:device_secret`, or a bearer token with `scope`.

    Basic auth identifies one device; it may only act on itself (the route's device, or the device that owns
    the message, checked by the view through `g.principal.subject`).
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            credentials = basic_credentials()
            if credentials is None:
                g.principal = _authenticate_bearer(scope)
                return view(*args, **kwargs)
            device_id, secret = credentials
            if not verify_secret(load_device_secret_hash(device_id), secret):
                raise APIError(
                    401, "UNAUTHORIZED", "Invalid device credentials.",
                    headers={"WWW-Authenticate": 'Basic realm="uaip-hub devices"'},
                )
            _recent_device_logins.remember(device_id, secret)
            g.principal = Principal("device", device_id, frozenset())
            g.client_id = f"device:{device_id}"
            return view(*args, **kwargs)

        wrapper.required_scope = scope
        wrapper.device_auth = True
        return wrapper

    return decorator


def require_device_self(device_id: str) -> None:
    """A device authenticated by Basic auth may only touch its own resources."""
    principal: Principal = g.principal
    if principal.kind == "device" and principal.subject != device_id:
        raise APIError(403, "FORBIDDEN", "A device may only act on itself.")


def bearer_token() -> str | None:
    """The raw bearer token of this request (event streams read its expiry to end on time)."""
    return _bearer_token()
