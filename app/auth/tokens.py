"""JWT access tokens: issuing, verifying (HS256 only) and a per-process cache of recently verified tokens.

Signing keys rotate without downtime: JWT_SECRET signs, JWT_PREVIOUS_SECRETS still verify (`SigningKeys`). Every
token names its key in the header's `kid` (the first 16 hex digits of the secret's SHA-256: it identifies the key
without revealing it); a token naming a `kid` the hub does not know is refused. A token without `kid` (issued
before keys had ids) is checked against the current key only.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass

import jwt

VERIFIED_TOKENS_MAX = 1_000  # per process; an entry is the token string and its principal (~1 KB)


TOKEN_ISSUER = "uaip-hub"


TOKEN_ALGORITHM = "HS256"


SCOPES = ("device:read", "device:write", "device:command", "message:read", "admin")


def granted_scopes(requested: str | None, held: list[str]) -> list[str]:
    """The scopes a token gets when a client holding `held` asks for `requested` (space-separated; None or blank:
    everything it holds). RFC 6749 §3.3 lets the server issue less than asked: requested names the client does
    not hold, known or not, are dropped, so a client that asks for every scope a resource lists (as the MCP SDK
    does) gets the ones it has. `admin` holds every scope. An empty answer means `invalid_scope`."""
    if requested is None or not requested.strip():
        return list(held)
    holds = set(SCOPES) if "admin" in held else set(held)
    return [name for name in dict.fromkeys(requested.split()) if name in holds]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API client (by token) or a device (by Basic auth).

    For a token: `token_id` (`jti`), `issued_at` (`iat`) and `expires_at` (`exp`) let app/auth/revocation.py judge
    it; `client` is the OAuth client the token was issued to (its `client_id` claim, else `sub`)."""

    kind: str  # "client" or "device"
    subject: str
    scopes: frozenset[str]
    audience: str | None = None  # the token's `aud` (RFC 8707 resource), None when it names none
    token_id: str | None = None
    issued_at: int | None = None
    expires_at: int | None = None
    client: str | None = None
    # Tokens an operator's approval issued to a desktop agent (authorization code grant): `subject` and `client`
    # are then the agent's client id (rate limits, command ownership, revocation), `operator` the approving
    # operator (the JWT's `sub`) and `grant_id` the grant whose revocation ends the token.
    operator: str | None = None
    grant_id: str | None = None

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def client_id(self) -> str:
        return self.client or self.subject


def key_id(secret: str) -> str:
    """The `kid` of a signing secret: differs per key, reveals nothing usable about it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


class SigningKeys:
    """The current signing secret and the previous ones that still verify, by `kid`."""

    def __init__(self, current: str, previous: tuple[str, ...] = ()) -> None:
        self.current = current
        self.current_kid = key_id(current)
        self.by_kid = {key_id(secret): secret for secret in previous}
        self.by_kid[self.current_kid] = current

    @classmethod
    def of(cls, keys: SigningKeys | str) -> SigningKeys:
        return keys if isinstance(keys, SigningKeys) else cls(keys)

    def verifying_secret(self, token: str) -> str:
        """The secret the token's `kid` names; InvalidToken for an unknown `kid` or an unreadable header."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        kid = header.get("kid")
        if kid is None:
            return self.current
        secret = self.by_kid.get(kid) if isinstance(kid, str) else None
        if secret is None:
            raise InvalidToken("unknown signing key (kid)")
        return secret


def issue_token(
    client_id: str, scopes: list[str], secret: SigningKeys | str, expiry_seconds: int, audience: str | None = None,
    extra_claims: dict[str, str] | None = None,
) -> tuple[str, int]:
    """A signed access token; `audience` (the requested RFC 8707 resource) becomes its `aud` claim. `secret` is
    the signing secret or the app's SigningKeys (the current key signs); the header names it in `kid`.
    `extra_claims` adds claims (the authorization code grant: `client_id` and `grant_id`, `sub` the operator)."""
    keys = SigningKeys.of(secret)
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
    token = jwt.encode(claims, keys.current, algorithm=TOKEN_ALGORITHM, headers={"kid": keys.current_kid})
    return token, expiry_seconds


class InvalidToken(Exception):
    pass


def token_claims(token: str, secret: SigningKeys | str, verify_expiry: bool = True) -> dict:
    """The claims of a token signed by one of the keys (the one its `kid` names): signature, algorithm (HS256 only:
    `none` and others are refused), issuer, expiry (unless `verify_expiry` is False) and the claims' types
    checked. InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token,
            SigningKeys.of(secret).verifying_secret(token),
            algorithms=[TOKEN_ALGORITHM],
            issuer=TOKEN_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"], "verify_aud": False, "verify_exp": verify_expiry},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    scope = claims.get("scope", "")
    audience = claims.get("aud")
    client = claims.get("client_id")
    if (not isinstance(scope, str) or not isinstance(claims["sub"], str) or not isinstance(audience, (str, type(None)))
            or not isinstance(client, (str, type(None))) or not isinstance(claims.get("jti"), (str, type(None)))
            or not isinstance(claims["iat"], (int, float)) or not isinstance(claims["exp"], (int, float))):
        raise InvalidToken("malformed claims")
    return claims


def decode_token(token: str, secret: SigningKeys | str) -> Principal:
    """Verify the token (`token_claims`) and return its principal.

    The audience is read, not judged: which `aud` is acceptable depends on the resource being called (the REST API
    or the MCP endpoint), so `authenticate_bearer` compares it. A non-string `aud` (this hub issues none) is invalid.
    Revocation is judged elsewhere (app/auth/revocation.py), on every request. A token of an authorization code
    grant names its client in `client_id` and its grant in `grant_id` (both or neither); `sub` is the operator.
    """
    claims = token_claims(token, secret)
    scopes, audience = frozenset(claims.get("scope", "").split()), claims.get("aud")
    times = {"token_id": claims.get("jti"), "issued_at": int(claims["iat"]), "expires_at": int(claims["exp"])}
    client_id, grant_id = claims.get("client_id"), claims.get("grant_id")
    if client_id is not None or grant_id is not None:
        if not isinstance(client_id, str) or not isinstance(grant_id, str):
            raise InvalidToken("malformed claims")
        return Principal("client", client_id, scopes, audience, **times, client=client_id, operator=claims["sub"],
                         grant_id=grant_id)
    return Principal("client", claims["sub"], scopes, audience, **times)


class VerifiedTokens:
    """The tokens this process verified recently, so the next request with the same token skips verification
    (HMAC, base64 and JSON parsing, claim checks: ~30 µs, most of the token's cost per request).

    Keyed by the exact token string under one set of keys (one instance per app). It remembers verification only:
    revocation is checked on every request all the same (app/auth/revocation.py). Only tokens that passed
    `decode_token` are remembered, so an invalid token is never accepted and always pays the full check. A
    remembered token answers only while `int(exp)` is in the future, PyJWT's own expiry rule; the other checks
    (signature, algorithm, issuer, required claims, `iat`/`nbf` not in the future) cannot turn false later for
    the same string. At most `max_entries` tokens: when full, expired ones are dropped, then the oldest.
    """

    def __init__(self, secret: SigningKeys | str, max_entries: int = VERIFIED_TOKENS_MAX) -> None:
        self.secret = SigningKeys.of(secret)
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
        expires = principal.expires_at
        with self._lock:
            if len(self._entries) >= self.max_entries:
                now = time.time()
                self._entries = {key: value for key, value in self._entries.items() if value[1] > now}
                while len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]
            self._entries[token] = (principal, expires)
        return principal
