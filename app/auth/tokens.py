"""JWT access tokens: issuing, verifying (HS256 only) and a per-process cache of recently verified tokens."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import jwt

VERIFIED_TOKENS_MAX = 1_000  # per process; an entry is the token string and its principal (~1 KB)


TOKEN_ISSUER = "uaip-hub"


TOKEN_ALGORITHM = "HS256"


SCOPES = ("device:read", "device:write", "device:command", "message:read", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client (by token) or a device (by Basic auth)."""

    kind: str  # "client" or "device"
    subject: str
    scopes: frozenset[str]
    audience: str | None = None  # the token's `aud` (RFC 8707 resource), None when it names none
    # Tokens an operator's approval issued to a desktop agent (authorization code grant): `subject` is then the
    # agent's client id (rate limits, command ownership), `operator` the approving operator (the JWT's `sub`)
    # and `grant_id` the grant whose revocation ends the token.
    operator: str | None = None
    grant_id: str | None = None

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def issue_token(
    client_id: str, scopes: list[str], secret: str, expiry_seconds: int, audience: str | None = None,
    extra_claims: dict[str, str] | None = None,
) -> tuple[str, int]:
    """A signed access token; `audience` (the requested RFC 8707 resource) becomes its `aud` claim.
    `extra_claims` adds claims (the authorization code grant: `client_id` and `grant_id`, `sub` the operator)."""
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
    claims.update(extra_claims or {})
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
    client_id, grant_id = claims.get("client_id"), claims.get("grant_id")
    if client_id is not None or grant_id is not None:
        if not isinstance(client_id, str) or not isinstance(grant_id, str):
            raise InvalidToken("malformed claims")
        return Principal("client", client_id, frozenset(scope.split()), audience, claims["sub"], grant_id)
    return Principal("client", claims["sub"], frozenset(scope.split()), audience)


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
