"""OAuth 2.0 authorization code with PKCE for desktop agents (public clients) that act for an operator.

- Registration (RFC 7591): public clients only (`token_endpoint_auth_method` "none"); redirect URIs on the
  loopback interface over http (RFC 8252 §7.3) or https. A registration never used for an approved authorization
  is deleted after `UNUSED_REGISTRATION_LIFETIME`.
- Authorization: the operator approves on a consent page; that creates a *grant* (client, operator, scopes,
  resource) and a one-time code valid `CODE_LIFETIME`, bound to the redirect URI and the S256 PKCE challenge.
- Token endpoint: the code (once, with its verifier) yields an access token and a refresh token; a refresh token
  works once and is replaced by a new one (rotation). Presenting a used refresh token or a used code means one of
  the copies was stolen: the whole grant is revoked, and with it every access token it issued (tokens carry the
  grant id; app/web/authz.py refuses a revoked grant's tokens within `GRANT_CACHE_SECONDS`).

Scopes are at most what the operator's role allows (app/services/operators.py `ROLE_SCOPES`), re-checked at every
refresh, so an operator who lost rights cannot keep them through a stored refresh token.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.auth.tokens import SCOPES
from app.core.json_input import storable_text
from app.core.text import NotAName, visible_name
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services.audit import record_audit
from app.services.operators import role_scopes

CODE_LIFETIME = dt.timedelta(seconds=60)
REFRESH_LIFETIME = dt.timedelta(days=30)
UNUSED_REGISTRATION_LIFETIME = dt.timedelta(hours=24)
GRANT_CACHE_SECONDS = 1.0
MAX_REDIRECT_URIS = 10
MAX_URI_LENGTH = 2000
MAX_NAME_LENGTH = 200
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


class RegistrationError(ValueError):
    """RFC 7591 §3.2.2: `error` is invalid_redirect_uri or invalid_client_metadata."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class GrantError(ValueError):
    """RFC 6749 §5.2 token-endpoint error (invalid_grant, invalid_request, invalid_client, invalid_scope)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class PublicClient:
    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    scope: str | None


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# --- registration ------------------------------------------------------------------------------------------------


def _check_redirect_uri(uri: Any) -> str:
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_LENGTH or not storable_text(uri):
        raise RegistrationError("invalid_redirect_uri", "Each redirect URI is a string of at most 2000 characters.")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise RegistrationError("invalid_redirect_uri", f"Not a URI: {uri}") from None
    if parts.fragment or "#" in uri:
        raise RegistrationError("invalid_redirect_uri", "A redirect URI has no fragment.")
    host = (parts.hostname or "").lower()
    if "@" in parts.netloc:
        raise RegistrationError("invalid_redirect_uri", "A redirect URI carries no user information.")
    if parts.scheme == "https" and host or parts.scheme == "http" and host in LOOPBACK_HOSTS:
        return uri
    raise RegistrationError(
        "invalid_redirect_uri",
        "Redirect URIs must be http://127.0.0.1 or http://localhost (any port) or https.",
    )


UNNAMED_CLIENT = "Unnamed client"


def _client_name(value: Any) -> str:
    """`client_name` as the consent page and the console show it to the operator deciding whether to grant access:
    `visible_name`, so invisible or bidirectional characters cannot disguise a client: they are removed and the
    rest trimmed; control characters, or a name with nothing visible left, are refused. Absent or "" (the field
    is optional in RFC 7591): "Unnamed client"."""
    if value is None or value == "":
        return UNNAMED_CLIENT
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        raise RegistrationError("invalid_client_metadata", "client_name is a string of at most 200 characters.")
    try:
        return visible_name(value)
    except NotAName as exc:
        raise RegistrationError("invalid_client_metadata", f"client_name {exc}.") from None


def register_client(db: Database, metadata: Any) -> dict[str, Any]:
    """RFC 7591 registration of a public client; returns the 201 body."""
    if not isinstance(metadata, dict):
        raise RegistrationError("invalid_client_metadata", "The body must be a JSON object.")
    method = metadata.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise RegistrationError(
            "invalid_client_metadata",
            "Only public clients register here: token_endpoint_auth_method must be \"none\" (PKCE protects the code).",
        )
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        raise RegistrationError("invalid_redirect_uri", "redirect_uris is a list of 1 to 10 URIs.")
    uris = [_check_redirect_uri(uri) for uri in uris]
    grant_types = metadata.get("grant_types", ["authorization_code"])
    if not isinstance(grant_types, list) or not set(grant_types) <= {"authorization_code", "refresh_token"} \
            or "authorization_code" not in grant_types:
        raise RegistrationError("invalid_client_metadata",
                                "grant_types may name authorization_code and refresh_token only.")
    response_types = metadata.get("response_types", ["code"])
    if response_types != ["code"]:
        raise RegistrationError("invalid_client_metadata", "response_types must be [\"code\"].")
    name = _client_name(metadata.get("client_name"))
    scope = metadata.get("scope")
    if scope is not None and (not isinstance(scope, str) or len(scope) > 500):
        raise RegistrationError("invalid_client_metadata", "scope is a space-separated string.")
    if scope is not None:
        scope = " ".join(name for name in dict.fromkeys(scope.split()) if name in SCOPES) or None
    client_id = "pub_" + secrets.token_hex(12)

    def insert(cur):
        # Registrations nobody used within a day are dropped here, on the way in: no sweeper needed.
        cur.execute("DELETE FROM oauth_public_clients WHERE first_used_at IS NULL AND created_at < now() - %s",
                    (UNUSED_REGISTRATION_LIFETIME,))
        cur.execute(
            "INSERT INTO oauth_public_clients (client_id, client_name, redirect_uris, scope) VALUES (%s, %s, %s, %s) "
            "RETURNING created_at",
            (client_id, name, uris, scope),
        )
        return cur.fetchone()["created_at"]

    created = db.transaction(insert)
    body: dict[str, Any] = {
        "client_id": client_id,
        "client_id_issued_at": int(created.timestamp()),
        "client_name": name,
        "redirect_uris": uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    if scope:
        body["scope"] = scope
    return body


CLIENT_ID = re.compile(r"^pub_[0-9a-f]{24}$")


def find_client(db: Database, client_id: str) -> PublicClient | None:
    """A registered public client that has not expired unused."""
    if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
        return None

    def query(cur):
        cur.execute(
            "SELECT client_id, client_name, redirect_uris, scope FROM oauth_public_clients WHERE client_id = %s "
            "AND (first_used_at IS NOT NULL OR created_at > now() - %s)",
            (client_id, UNUSED_REGISTRATION_LIFETIME),
        )
        return cur.fetchone()

    row = db.read(query)
    if row is None:
        return None
    return PublicClient(row["client_id"], row["client_name"], tuple(row["redirect_uris"]), row["scope"])


def _loopback(parts) -> bool:
    return parts.scheme == "http" and (parts.hostname or "").lower() in LOOPBACK_HOSTS


def redirect_uri_allowed(registered: tuple[str, ...], given: str) -> bool:
    """Exact match, except that loopback URIs match with any port (RFC 8252 §7.3): scheme, host, path and
    query must be equal."""
    if given in registered:
        return True
    try:
        asked = urlsplit(given)
        asked.port  # noqa: B018
    except ValueError:
        return False
    if not _loopback(asked):
        return False
    for uri in registered:
        known = urlsplit(uri)
        if _loopback(known) and known.hostname == asked.hostname and known.path == asked.path \
                and known.query == asked.query and not asked.fragment and "@" not in asked.netloc:
            return True
    return False


# --- scopes ------------------------------------------------------------------------------------------------------


def granted_scopes(requested: str | None, role: str, client: PublicClient) -> list[str]:
    """The requested scopes the operator's role allows (RFC 6749 §3.3: the held subset). No `scope` asks for the
    client's registered scope, or everything the role allows. `admin` stands for all scopes."""
    allowed = set(role_scopes(role))
    if "admin" in allowed:
        allowed = set(SCOPES)
    wanted = (requested or client.scope or "").split() or list(role_scopes(role))
    if "admin" in wanted and "admin" not in allowed:
        wanted = [*wanted, *SCOPES]  # a viewer asking for admin gets what a viewer may hold
    return [scope for scope in SCOPES if scope in wanted and scope in allowed]


# --- authorization and grants ------------------------------------------------------------------------------------


def approve(db: Database, client: PublicClient, email: str, scopes: list[str], resource: str | None,
            redirect_uri: str, code_challenge: str) -> str:
    """Create the grant and its one-time code (returned; only its hash is kept)."""
    code = secrets.token_urlsafe(32)
    grant_id = "grant_" + secrets.token_hex(12)

    def insert(cur):
        cur.execute(
            "INSERT INTO oauth_grants (grant_id, client_id, email, scopes, resource) VALUES (%s, %s, %s, %s, %s)",
            (grant_id, client.client_id, email, scopes, resource),
        )
        cur.execute(
            "INSERT INTO oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + %s)",
            (_hash(code), grant_id, redirect_uri, code_challenge, CODE_LIFETIME),
        )
        cur.execute("UPDATE oauth_public_clients SET first_used_at = coalesce(first_used_at, now()) "
                    "WHERE client_id = %s", (client.client_id,))
        record_audit(cur, "grant.create", f"grant:{grant_id}",
                     {"client_id": client.client_id, "client_name": client.client_name, "operator": email,
                      "scopes": scopes, "resource": resource})

    db.transaction(insert)
    return code


@dataclass(frozen=True)
class IssuedGrant:
    """What the token endpoint needs to mint tokens for a grant."""

    grant_id: str
    client_id: str
    email: str
    scopes: list[str]
    resource: str | None
    refresh_token: str


def _revoke_in(cur, grant_id: str, reason: str) -> None:
    cur.execute("UPDATE oauth_grants SET revoked_at = now(), revoked_reason = %s "
                "WHERE grant_id = %s AND revoked_at IS NULL RETURNING grant_id", (reason, grant_id))
    if cur.fetchone() is not None:
        record_audit(cur, "grant.revoke", f"grant:{grant_id}", {"reason": reason})
    _forget_grant(grant_id)


def revoke_refresh_token(db: Database, refresh_token: str, client_id: str | None) -> str:
    """RFC 7009 for a refresh token: revoke its grant (and so every token of it). `client_id`: the caller, who may
    revoke only its own (None: anyone's, for an admin). "revoked", "unknown" (also for an already revoked grant)
    or "foreign" (another client's: nothing changes)."""
    if not storable_text(refresh_token):
        return "unknown"

    def work(cur):
        cur.execute("SELECT g.grant_id, g.client_id FROM oauth_refresh_tokens r JOIN oauth_grants g USING (grant_id) "
                    "WHERE r.token_hash = %s AND g.revoked_at IS NULL FOR UPDATE OF g", (_hash(refresh_token),))
        row = cur.fetchone()
        if row is None:
            return "unknown"
        if client_id is not None and row["client_id"] != client_id:
            return "foreign"
        _revoke_in(cur, row["grant_id"], "refresh token revoked by its client")
        return "revoked"

    return db.transaction(work)


def _new_refresh(cur, grant_id: str) -> str:
    token = "rt_" + secrets.token_urlsafe(32)
    cur.execute("INSERT INTO oauth_refresh_tokens (token_hash, grant_id, expires_at) VALUES (%s, %s, now() + %s)",
                (_hash(token), grant_id, REFRESH_LIFETIME))
    return token


def _live_scopes(cur, grant: dict[str, Any]) -> list[str] | None:
    """The grant's scopes the operator still holds, or None when the operator may no longer act."""
    cur.execute("SELECT role, disabled FROM operators WHERE email = %s", (grant["email"],))
    operator = cur.fetchone()
    if operator is None or operator["disabled"]:
        return None
    allowed = set(SCOPES) if operator["role"] == "admin" else set(role_scopes(operator["role"]))
    return [scope for scope in grant["scopes"] if scope in allowed] or None


def pkce_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding equals the challenge."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    expected = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return hmac.compare_digest(expected, challenge)


def exchange_code(db: Database, client_id: str, code: str, redirect_uri: str | None,
                  code_verifier: str | None) -> IssuedGrant:
    """Redeem a code once. A second use revokes the grant (RFC 6749 §4.1.2: the code leaked)."""
    if not code_verifier or not 43 <= len(code_verifier) <= 128:
        raise GrantError("invalid_request", "code_verifier (43-128 characters) is required.")
    if not redirect_uri:
        raise GrantError("invalid_request", "redirect_uri is required.")

    def redeem(cur):
        cur.execute(
            "SELECT c.grant_id, c.redirect_uri, c.code_challenge, c.used_at, c.expires_at < now() AS expired, "
            "g.client_id, g.email, g.scopes, g.resource, g.revoked_at FROM oauth_codes c JOIN oauth_grants g "
            "USING (grant_id) WHERE c.code_hash = %s FOR UPDATE OF c, g",
            (_hash(code),),
        )
        row = cur.fetchone()
        if row is None or row["client_id"] != client_id:
            return GrantError("invalid_grant", "The authorization code is unknown, used or expired.")
        if row["used_at"] is not None:
            _revoke_in(cur, row["grant_id"], "code reused")
            return GrantError("invalid_grant", "The authorization code is unknown, used or expired.")
        if row["expired"] or row["revoked_at"] is not None:
            return GrantError("invalid_grant", "The authorization code is unknown, used or expired.")
        if row["redirect_uri"] != redirect_uri:
            return GrantError("invalid_grant", "redirect_uri differs from the one in the authorization request.")
        if not pkce_matches(code_verifier, row["code_challenge"]):
            return GrantError("invalid_grant", "The code_verifier does not match the code_challenge.")
        cur.execute("UPDATE oauth_codes SET used_at = now() WHERE code_hash = %s", (_hash(code),))
        scopes = _live_scopes(cur, row)
        if scopes is None:
            _revoke_in(cur, row["grant_id"], "operator access changed")
            return GrantError("invalid_grant", "The operator who approved this may no longer grant it.")
        cur.execute("UPDATE oauth_grants SET last_used_at = now() WHERE grant_id = %s", (row["grant_id"],))
        refresh = _new_refresh(cur, row["grant_id"])
        return IssuedGrant(row["grant_id"], row["client_id"], row["email"], scopes, row["resource"], refresh)

    result = db.transaction(redeem)
    if isinstance(result, GrantError):
        raise result
    return result


def refresh(db: Database, client_id: str, refresh_token: str) -> IssuedGrant:
    """Swap a refresh token for a new one (rotation). A used one revokes the grant and everything it issued."""

    def rotate(cur):
        cur.execute(
            "SELECT r.grant_id, r.used_at, r.expires_at < now() AS expired, g.client_id, g.email, g.scopes, "
            "g.resource, g.revoked_at FROM oauth_refresh_tokens r JOIN oauth_grants g USING (grant_id) "
            "WHERE r.token_hash = %s FOR UPDATE OF r, g",
            (_hash(refresh_token),),
        )
        row = cur.fetchone()
        if row is None or row["client_id"] != client_id:
            return GrantError("invalid_grant", "The refresh token is unknown, used, expired or revoked.")
        if row["used_at"] is not None:
            _revoke_in(cur, row["grant_id"], "refresh token reused")
            return GrantError("invalid_grant", "The refresh token is unknown, used, expired or revoked.")
        if row["expired"] or row["revoked_at"] is not None:
            return GrantError("invalid_grant", "The refresh token is unknown, used, expired or revoked.")
        cur.execute("UPDATE oauth_refresh_tokens SET used_at = now() WHERE token_hash = %s", (_hash(refresh_token),))
        scopes = _live_scopes(cur, row)
        if scopes is None:
            _revoke_in(cur, row["grant_id"], "operator access changed")
            return GrantError("invalid_grant", "The operator who approved this may no longer grant it.")
        cur.execute("UPDATE oauth_grants SET last_used_at = now() WHERE grant_id = %s", (row["grant_id"],))
        new_token = _new_refresh(cur, row["grant_id"])
        return IssuedGrant(row["grant_id"], row["client_id"], row["email"], scopes, row["resource"], new_token)

    # Not retried: a retry after a lost COMMIT would see its own rotation and revoke the grant.
    result = db.transaction(rotate, retry=False)
    if isinstance(result, GrantError):
        raise result
    return result


def list_grants(db: Database, email: str | None = None, *, limit: int = 200) -> list[dict[str, Any]]:
    """Grants (newest first) of one operator, or of everyone with `email=None` (admins)."""

    def query(cur):
        cur.execute(
            "SELECT g.grant_id, g.client_id, c.client_name, g.email, g.scopes, g.resource, g.created_at, "
            "g.last_used_at, g.revoked_at FROM oauth_grants g JOIN oauth_public_clients c USING (client_id) "
            "WHERE (%(email)s::text IS NULL OR g.email = %(email)s) ORDER BY g.created_at DESC LIMIT %(limit)s",
            {"email": email, "limit": limit},
        )
        return cur.fetchall()

    return [
        {**row, "scopes": list(row["scopes"]), "created_at": timestamp(row["created_at"]),
         "last_used_at": timestamp(row["last_used_at"]), "revoked_at": timestamp(row["revoked_at"])}
        for row in db.read(query)
    ]


def revoke_grant(db: Database, grant_id: str, email: str | None) -> bool:
    """Revoke a grant (of `email`, or anyone's with None). False when there is no such live grant."""
    if not storable_text(grant_id):
        return False

    def update(cur):
        cur.execute("SELECT grant_id FROM oauth_grants WHERE grant_id = %s AND revoked_at IS NULL "
                    "AND (%s::text IS NULL OR email = %s) FOR UPDATE", (grant_id, email, email))
        if cur.fetchone() is None:
            return False
        _revoke_in(cur, grant_id, "revoked in the console")
        return True

    return db.transaction(update)


# --- is a grant still live? (checked for every access token that names one) --------------------------------------

_live_cache: dict[str, tuple[bool, float]] = {}
_live_lock = threading.Lock()


def _forget_grant(grant_id: str) -> None:
    with _live_lock:
        _live_cache.pop(grant_id, None)


def grant_is_live(db: Database, grant_id: str) -> bool:
    """Not revoked. Remembered per process for `GRANT_CACHE_SECONDS`, so a revocation reaches every worker of
    every pod within about a second at the cost of one indexed read per grant per second."""
    now = time.monotonic()
    entry = _live_cache.get(grant_id)
    if entry is not None and entry[1] > now:
        return entry[0]

    def query(cur):
        cur.execute("SELECT revoked_at IS NULL AS live FROM oauth_grants WHERE grant_id = %s", (grant_id,))
        row = cur.fetchone()
        return bool(row and row["live"])

    live = db.read(query)
    with _live_lock:
        if len(_live_cache) > 10_000:
            _live_cache.clear()
        _live_cache[grant_id] = (live, now + GRANT_CACHE_SECONDS)
    return live
