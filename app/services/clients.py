"""OAuth2 API clients: create, list, change, delete, rotate secrets, revoke tokens, and the token endpoint's check.

A client has up to two live secrets (`client_secrets`), so a secret can be rotated with an overlap: the new one
works at once, the previous one until `previous_secret_expires_in` seconds later. A secret's expiry only ends its
use at the token endpoint; tokens already issued live on. Revoking tokens (explicitly, by removing a scope, by
disabling or by deleting the client) writes a cutoff (app/auth/revocation.py): tokens issued before it are refused.
Every change is recorded in the audit log in its own transaction (app/services/audit.py).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from app.auth import revocation
from app.auth.secrets import generate_secret, hash_secret, verify_secret
from app.auth.tokens import SCOPES
from app.core.errors import APIError
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services.audit import record_audit

MAX_LIVE_SECRETS = 2
DEFAULT_PREVIOUS_SECRET_SECONDS = 86_400
MAX_PREVIOUS_SECRET_SECONDS = 604_800
# last_used_at is written at most this often per secret (a token request must not always write).
LAST_USED_GRANULARITY_SECONDS = 60

LIVE = "(s.expires_at IS NULL OR s.expires_at > now())"


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    scopes: list[str]


class UnknownScope(ValueError):
    pass


def normalise_scopes(scopes: list[str] | str) -> list[str]:
    """Split, de-duplicate and check scope names against the known set."""
    if isinstance(scopes, str):
        names = scopes.split()
    elif isinstance(scopes, (list, tuple)) and all(isinstance(name, str) for name in scopes):
        names = list(scopes)
    else:
        raise UnknownScope("scopes must be a list of scope names or a space-separated string")
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise UnknownScope(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return sorted(set(names), key=SCOPES.index)


def client_not_found(client_id: str) -> APIError:
    return APIError(404, "CLIENT_NOT_FOUND", f"Client '{client_id[:128]}' not found.", {"client_id": client_id[:128]})


def _new_secret_id() -> str:
    return "sec_" + secrets.token_hex(12)


def _insert_secret(cur, client_id: str, secret: str) -> str:
    secret_id = _new_secret_id()
    cur.execute("INSERT INTO client_secrets (secret_id, client_id, secret_hash) VALUES (%s, %s, %s)",
                (secret_id, client_id, hash_secret(secret)))
    return secret_id


def _stamp(value) -> str | None:
    return None if value is None else timestamp(value)


def _client_views(cur, rows: list[dict]) -> list[dict[str, Any]]:
    """The API's client objects for these rows, with their live secrets (never a hash)."""
    ids = [row["client_id"] for row in rows]
    by_client: dict[str, list[dict]] = {client_id: [] for client_id in ids}
    if ids:
        cur.execute(
            f"SELECT s.client_id, s.secret_id, s.created_at, s.expires_at, s.last_used_at FROM client_secrets s "
            f"WHERE s.client_id = ANY(%s) AND {LIVE} ORDER BY s.created_at, s.secret_id", (ids,))
        for secret in cur.fetchall():
            by_client[secret["client_id"]].append({
                "secret_id": secret["secret_id"], "created_at": _stamp(secret["created_at"]),
                "expires_at": _stamp(secret["expires_at"]), "last_used_at": _stamp(secret["last_used_at"]),
            })
    return [{
        "client_id": row["client_id"], "name": row["name"], "scopes": list(row["scopes"]),
        "disabled": not row["active"], "created_at": _stamp(row["created_at"]),
        "secrets": by_client[row["client_id"]],
    } for row in rows]


CLIENT_COLUMNS = "client_id, name, scopes, active, created_at"


def _load(cur, client_id: str, lock: bool = False) -> dict:
    cur.execute(f"SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = %s" + (" FOR UPDATE" if lock else ""),
                (client_id,))
    row = cur.fetchone()
    if row is None:
        raise client_not_found(client_id)
    return row


# --- token endpoint -----------------------------------------------------------------------------------------


def authenticate_client(db: Database, client_id: str, secret: str) -> Client | None:
    """The enabled client with these credentials (one of its live secrets), or None. Always spends at least one
    hash check, so an unknown or disabled client is not told apart by timing from a wrong secret."""

    def load(cur):
        cur.execute(
            f"SELECT c.client_id, c.name, c.scopes, c.active, s.secret_id, s.secret_hash, "
            f"s.last_used_at < now() - interval '{LAST_USED_GRANULARITY_SECONDS} seconds' "
            f"OR s.last_used_at IS NULL AS stale FROM clients c JOIN client_secrets s USING (client_id) "
            f"WHERE c.client_id = %s AND {LIVE} ORDER BY s.created_at DESC", (client_id,))
        return cur.fetchall()

    rows = db.read(load)
    matched = None
    for row in rows or [None]:
        if verify_secret(row["secret_hash"] if row else None, secret):
            matched = row
            break
    if matched is None or not matched["active"]:
        return None
    if matched["stale"]:
        db.autocommit(lambda cur: cur.execute(
            "UPDATE client_secrets SET last_used_at = now() WHERE secret_id = %s", (matched["secret_id"],)))
    return Client(matched["client_id"], matched["name"], list(matched["scopes"]))


# --- administration -----------------------------------------------------------------------------------------


def create_client(db: Database, name: str, scopes: list[str] | str) -> tuple[Client, str]:
    """Create a client with a generated id and secret; the secret is returned here and never again."""
    scope_list = normalise_scopes(scopes)
    client_id = "client_" + secrets.token_hex(12)
    secret = generate_secret()

    def insert(cur):
        cur.execute("INSERT INTO clients (client_id, name, scopes) VALUES (%s, %s, %s)", (client_id, name, scope_list))
        _insert_secret(cur, client_id, secret)
        record_audit(cur, "client.create", f"client:{client_id}", {"name": name, "scopes": scope_list})

    db.transaction(insert)
    return Client(client_id, name, scope_list), secret


def create_client_view(db: Database, name: str, scopes: list[str] | str) -> dict[str, Any]:
    """POST /clients: the new client's object plus `client_secret` (shown once)."""
    client, secret = create_client(db, name, scopes)
    return {**get_client(db, client.client_id), "client_secret": secret}


def upsert_client(db: Database, client_id: str, secret: str, name: str, scopes: list[str] | str) -> Client:
    """Create or update a client with a known id and secret (the Helm bootstrap admin): enabled, these scopes,
    and this secret live (if no live secret already is it, it replaces the client's secrets)."""
    scope_list = normalise_scopes(scopes)

    def live_hashes(cur):
        cur.execute(f"SELECT s.secret_hash FROM client_secrets s WHERE s.client_id = %s AND {LIVE}", (client_id,))
        return [row["secret_hash"] for row in cur.fetchall()]

    current = any(verify_secret(stored, secret) for stored in db.read(live_hashes))

    def upsert(cur):
        cur.execute(
            "INSERT INTO clients (client_id, name, scopes) VALUES (%s, %s, %s) "
            "ON CONFLICT (client_id) DO UPDATE SET scopes = EXCLUDED.scopes, name = EXCLUDED.name, active = true, "
            "updated_at = now() RETURNING (xmax = 0) AS inserted", (client_id, name, scope_list))
        inserted = cur.fetchone()["inserted"]
        if not current:
            cur.execute("DELETE FROM client_secrets WHERE client_id = %s", (client_id,))
            _insert_secret(cur, client_id, secret)
        record_audit(cur, "client.create" if inserted else "client.update", f"client:{client_id}",
                     {"name": name, "scopes": scope_list, "bootstrap": True, "secret_replaced": not current})

    db.transaction(upsert)
    return Client(client_id, name, scope_list)


def list_clients(db: Database, limit: int, offset: int, newest_first: bool = False) -> dict[str, Any]:
    """A page of clients, oldest first (the API), or newest first (the console, where the latest matter most)."""
    order = "created_at DESC, client_id DESC" if newest_first else "created_at, client_id"

    def query(cur):
        cur.execute(f"SELECT {CLIENT_COLUMNS}, count(*) OVER () AS total FROM clients "
                    f"ORDER BY {order} LIMIT %s OFFSET %s", (limit, offset))
        rows = cur.fetchall()
        if rows:
            total = rows[0]["total"]
        else:
            cur.execute("SELECT count(*) AS total FROM clients")
            total = cur.fetchone()["total"]
        return _client_views(cur, rows), total

    views, total = db.read(query)
    return {"clients": views, "total": total, "limit": limit, "offset": offset}


def get_client(db: Database, client_id: str) -> dict[str, Any]:
    return db.read(lambda cur: _client_views(cur, [_load(cur, client_id)])[0])


def update_client(db: Database, client_id: str, name: str | None = None, scopes: list[str] | str | None = None,
                  disabled: bool | None = None) -> dict[str, Any]:
    """Change name, scopes or disabled. Removing a scope or disabling revokes every token the client holds;
    renaming, adding scopes or enabling revokes nothing."""
    scope_list = None if scopes is None else normalise_scopes(scopes)

    def update(cur):
        row = _load(cur, client_id, lock=True)
        old_scopes = list(row["scopes"])
        new_name = row["name"] if name is None else name
        new_scopes = old_scopes if scope_list is None else scope_list
        new_active = row["active"] if disabled is None else not disabled
        cur.execute("UPDATE clients SET name = %s, scopes = %s, active = %s, updated_at = now() "
                    "WHERE client_id = %s", (new_name, new_scopes, new_active, client_id))
        changes: dict[str, Any] = {}
        if new_name != row["name"]:
            changes["name"] = new_name
        if new_scopes != old_scopes:
            changes["scopes"] = new_scopes
        if new_active != row["active"]:
            changes["disabled"] = not new_active
        revokes = bool(set(old_scopes) - set(new_scopes)) or (row["active"] and not new_active)
        cutoff = _write_cutoff(cur, client_id) if revokes else None
        record_audit(cur, "client.update", f"client:{client_id}", {**changes, "tokens_revoked": revokes})
        return cutoff

    cutoff = db.transaction(update)
    if cutoff is not None:
        _publish_cutoff(db, client_id, cutoff)
    return get_client(db, client_id)


def delete_client(db: Database, client_id: str) -> None:
    """Delete the client and its secrets; its tokens are refused from now on (the cutoff outlives the row)."""

    def delete(cur):
        _load(cur, client_id, lock=True)
        cur.execute("DELETE FROM clients WHERE client_id = %s", (client_id,))
        cutoff = _write_cutoff(cur, client_id)
        record_audit(cur, "client.delete", f"client:{client_id}")
        return cutoff

    _publish_cutoff(db, client_id, db.transaction(delete))


def revoke_client_tokens(db: Database, client_id: str) -> None:
    """Every token issued to the client before this returns is refused; tokens issued a second later work."""

    def revoke(cur):
        _load(cur, client_id, lock=True)
        cutoff = _write_cutoff(cur, client_id)
        record_audit(cur, "client.revoke_tokens", f"client:{client_id}")
        return cutoff

    _publish_cutoff(db, client_id, db.transaction(revoke))


def rotate_secret(db: Database, client_id: str,
                  previous_expires_in: int = DEFAULT_PREVIOUS_SECRET_SECONDS) -> dict[str, str]:
    """A new secret, live at once. The newest previous live secret stays live for `previous_expires_in` seconds
    (never longer than it already would); any older one ends now, so at most two are live. Expired rows go."""
    secret = generate_secret()

    def rotate(cur):
        _load(cur, client_id, lock=True)
        cur.execute("DELETE FROM client_secrets WHERE client_id = %s AND expires_at <= now()", (client_id,))
        cur.execute("SELECT secret_id FROM client_secrets WHERE client_id = %s ORDER BY created_at DESC, secret_id",
                    (client_id,))
        live = [row["secret_id"] for row in cur.fetchall()]
        keep, end = live[:MAX_LIVE_SECRETS - 1], live[MAX_LIVE_SECRETS - 1:]
        if end:
            cur.execute("DELETE FROM client_secrets WHERE secret_id = ANY(%s)", (end,))
        if keep:
            cur.execute(
                "UPDATE client_secrets SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), "
                "now() + make_interval(secs => %s)) WHERE secret_id = ANY(%s)", (previous_expires_in, keep))
            if previous_expires_in == 0:
                cur.execute("DELETE FROM client_secrets WHERE secret_id = ANY(%s)", (keep,))
        secret_id = _insert_secret(cur, client_id, secret)
        record_audit(cur, "client.rotate_secret", f"client:{client_id}",
                     {"secret_id": secret_id, "previous_secret_expires_in": previous_expires_in,
                      "ended": end + (keep if previous_expires_in == 0 else [])})
        return secret_id

    return {"secret_id": db.transaction(rotate), "client_secret": secret}


# --- revocation state ---------------------------------------------------------------------------------------


def _write_cutoff(cur, client_id: str) -> int:
    cutoff = revocation.new_cutoff()
    cur.execute(
        "INSERT INTO client_token_cutoffs (client_id, revoked_before) VALUES (%s, %s) ON CONFLICT (client_id) "
        "DO UPDATE SET revoked_before = GREATEST(client_token_cutoffs.revoked_before, EXCLUDED.revoked_before), "
        "updated_at = now()", (client_id, cutoff))
    return cutoff


def _publish_cutoff(db: Database, client_id: str, cutoff: int) -> None:
    """Publish the committed cutoff; if the second it names has begun meanwhile (a slow commit), move it to the
    next second, so that no token issued before this call returns is honoured."""
    revocation.publish(cutoffs={client_id: cutoff})
    while time.time() >= cutoff:
        cutoff = db.autocommit(lambda cur: _write_cutoff(cur, client_id))
        revocation.publish(cutoffs={client_id: cutoff})


def revoke_token_ids(db: Database, items) -> None:
    """Deny single tokens until they expire: `items` are (jti, expires_at as Unix seconds) pairs. For RFC 7009
    and for revoking an OAuth grant's tokens."""
    tokens = revocation.token_items(items)
    if not tokens:
        return

    def insert(cur):
        for token_id, expires in tokens.items():
            cur.execute("INSERT INTO revoked_tokens (jti, expires_at) VALUES (%s, to_timestamp(%s)) "
                        "ON CONFLICT (jti) DO NOTHING", (token_id, expires))

    db.transaction(insert)
    revocation.publish(tokens=tokens)


def revocation_state(db: Database) -> revocation.RevocationState:
    """Every revocation still in force, for app/auth/revocation.py (its fallback copy and Redis resync)."""

    def query(cur):
        cur.execute("SELECT client_id, revoked_before FROM client_token_cutoffs WHERE revoked_before > %s",
                    (int(time.time()) - revocation.CUTOFF_TTL_SECONDS,))
        cutoffs = {row["client_id"]: int(row["revoked_before"]) for row in cur.fetchall()}
        cur.execute("SELECT jti, extract(epoch FROM expires_at)::bigint AS expires FROM revoked_tokens "
                    "WHERE expires_at > now()")
        return revocation.RevocationState(cutoffs, {row["jti"]: int(row["expires"]) for row in cur.fetchall()})

    return db.read(query)


def purge_expired_revocations(db: Database) -> int:
    """Drop revoked-token rows of expired tokens (the relay's sweep)."""
    return db.autocommit(lambda cur: (cur.execute("DELETE FROM revoked_tokens WHERE expires_at < now()"),
                                      cur.rowcount)[1])
