"""Credentials: secret hashing, JWT access tokens, the scope decorator and device HTTP Basic auth.

Secrets (client and device) are stored as scrypt hashes (N=2**14, r=8, p=1: 16 MiB, about 45 ms here) and
compared in constant time. That cost alone would cap token issuance near 40/s per core, so each process keeps a
short-lived cache of *successful* verifications, keyed by an HMAC of the presented secret under a per-process
random key: a repeat client pays one HMAC, while every wrong guess still pays the full scrypt cost.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from flask import current_app, g, request

from app.errors import APIError
from app.urls import public_base_url

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
VERIFIED_CACHE_SECONDS = 300
VERIFIED_CACHE_MAX = 10_000
VERIFIED_TOKENS_MAX = 1_000  # per process; an entry is the token string and its principal (~1 KB)

TOKEN_ISSUER = "uaip-hub"
TOKEN_ALGORITHM = "HS256"

SCOPES = ("device:read", "device:write", "device:command", "message:read", "admin")


# --- secrets -------------------------------------------------------------------------------------------


def generate_secret() -> str:
    """A new client or device secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    encode = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt)}${encode(digest)}"


class _VerifiedSecrets:
    """Process-local memory of secrets recently proven correct for a given stored hash."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._entries: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def _fingerprint(self, stored_hash: str, secret: str) -> tuple[str, bytes]:
        return stored_hash, hmac.new(self._key, secret.encode("utf-8"), hashlib.sha256).digest()

    def seen(self, stored_hash: str, secret: str) -> bool:
        key = self._fingerprint(stored_hash, secret)
        with self._lock:
            expires = self._entries.get(key)
            return expires is not None and expires > time.monotonic()

    def remember(self, stored_hash: str, secret: str) -> None:
        key = self._fingerprint(stored_hash, secret)
        with self._lock:
            if len(self._entries) >= VERIFIED_CACHE_MAX:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v > now}
                if len(self._entries) >= VERIFIED_CACHE_MAX:
                    self._entries.clear()
            self._entries[key] = time.monotonic() + VERIFIED_CACHE_SECONDS


_verified = _VerifiedSecrets()
# (device_id, secret) pairs this process recently accepted: lets the rate limiter key a device by its id
# without a database round trip or a scrypt check before the view runs.
_recent_device_logins = _VerifiedSecrets()


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Constant-time check of `secret` against a stored scrypt hash (False for malformed input)."""
    if not stored_hash:
        # Spend the same time as a real check so a missing client is not distinguishable by timing.
        hashlib.scrypt(b"x", salt=b"0" * 16, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32)
        return False
    if _verified.seen(stored_hash, secret):
        return True
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        actual = hashlib.scrypt(
            secret.encode("utf-8"), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p),
            maxmem=SCRYPT_MAXMEM, dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    if hmac.compare_digest(actual, expected):
        _verified.remember(stored_hash, secret)
        return True
    return False


# --- tokens --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client (by token) or a device (by Basic auth)."""

    kind: str  # "client" or "device"
    subject: str
    scopes: frozenset[str]
    audience: str | None = None  # the token's `aud` (RFC 8707 resource), None when it names none

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def issue_token(
    client_id: str, scopes: list[str], secret: str, expiry_seconds: int, audience: str | None = None
) -> tuple[str, int]:
    """A signed access token; `audience` (the requested RFC 8707 resource) becomes its `aud` claim."""
    now = int(time.time())
    claims = {
        "iss": TOKEN_ISSUER,
        "sub": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + expiry_seconds,
        "jti": uuid.uuid4().hex,
    }
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM), expiry_seconds


class InvalidToken(Exception):
    pass


def decode_token(token: str, secret: str) -> Principal:
    """Verify signature, algorithm (HS256 only: `none` and others are refused), issuer and expiry.

    The audience is read, not judged: which `aud` is acceptable depends on the resource being called (the REST API
    or the MCP endpoint), so `authenticate_bearer` compares it. A non-string `aud` (this hub issues none) is invalid.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[TOKEN_ALGORITHM],
            issuer=TOKEN_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"], "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    scope = claims.get("scope", "")
    audience = claims.get("aud")
    if not isinstance(scope, str) or not isinstance(claims["sub"], str) or not isinstance(audience, (str, type(None))):
        raise InvalidToken("malformed claims")
    return Principal("client", claims["sub"], frozenset(scope.split()), audience)


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class VerifiedTokens:
    """The tokens this process verified recently, so the next request with the same token skips verification
    (HMAC, base64 and JSON parsing, claim checks: ~30 µs, most of the token's cost per request).

    Keyed by the exact token string under one secret (one instance per app). Only tokens that passed
    `decode_token` are remembered, so an invalid token is never accepted and always pays the full check. A
    remembered token answers only while `int(exp)` is in the future, PyJWT's own expiry rule; the other checks
    (signature, algorithm, issuer, required claims, `iat`/`nbf` not in the future) cannot turn false later for
    the same string. At most `max_entries` tokens: when full, expired ones are dropped, then the oldest.
    """

    def __init__(self, secret: str, max_entries: int = VERIFIED_TOKENS_MAX) -> None:
        self.secret = secret
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, int]] = {}
        self._lock = threading.Lock()

    def principal(self, token: str) -> Principal:
        """The token's principal; InvalidToken exactly when `decode_token` would raise it."""
        entry = self._entries.get(token)
        if entry is not None:
            if time.time() < entry[1]:
                return entry[0]
            self._entries.pop(token, None)
        principal = decode_token(token, self.secret)  # raises InvalidToken
        # Verified just now; read back the expiry PyJWT checked (as it reads it: int()).
        expires = int(jwt.decode(token, options={"verify_signature": False})["exp"])
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.time()
                self._entries = {key: value for key, value in self._entries.items() if value[1] > now}
                while len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]
            self._entries[token] = (principal, expires)
        return principal


def verified_tokens() -> VerifiedTokens:
    extensions = current_app.extensions
    cache = extensions.get("uaip.verified_tokens")
    if cache is None:
        cache = extensions.setdefault("uaip.verified_tokens", VerifiedTokens(current_app.config["SETTINGS"].jwt_secret))
    return cache


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
        g.token_principal = principal
    return g.token_principal


def recognised_device() -> str | None:
    """The device id of this request's HTTP Basic credentials if this process accepted exactly those credentials
    recently, else None. Never touches the database; a wrong or unknown secret is simply not recognised."""
    credentials = basic_credentials()
    if credentials is None:
        return None
    device_id, secret = credentials
    return device_id if _recent_device_logins.seen(device_id, secret) else None


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
    if principal is None:
        raise _invalid_token("The access token is missing, malformed, expired or invalid.", challenge)
    if principal.audience not in audiences:
        raise _invalid_token("The access token was issued for another resource (its aud claim).", challenge)
    g.client_id = principal.subject
    return principal


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
