"""OAuth2 API clients: creation (CLI and bootstrap) and credential checks for the token endpoint."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from app.auth.secrets import generate_secret, hash_secret, verify_secret
from app.auth.tokens import SCOPES
from app.infra.db import Database


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    scopes: list[str]


class UnknownScope(ValueError):
    pass


def normalise_scopes(scopes: list[str] | str) -> list[str]:
    """Split, de-duplicate and check scope names against the known set."""
    names = scopes.split() if isinstance(scopes, str) else list(scopes)
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise UnknownScope(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return sorted(set(names), key=SCOPES.index)


def create_client(db: Database, name: str, scopes: list[str] | str) -> tuple[Client, str]:
    """Create a client with a generated id and secret; the secret is returned here and never again."""
    scope_list = normalise_scopes(scopes)
    client_id = "client_" + secrets.token_hex(12)
    secret = generate_secret()
    db.transaction(
        lambda cur: cur.execute(
            "INSERT INTO clients (client_id, name, secret_hash, scopes) VALUES (%s, %s, %s, %s)",
            (client_id, name, hash_secret(secret), scope_list),
        )
    )
    return Client(client_id, name, scope_list), secret


def upsert_client(db: Database, client_id: str, secret: str, name: str, scopes: list[str] | str) -> Client:
    """Create or update a client with a known id and secret (the Helm bootstrap admin)."""
    scope_list = normalise_scopes(scopes)
    db.transaction(
        lambda cur: cur.execute(
            "INSERT INTO clients (client_id, name, secret_hash, scopes) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (client_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, scopes = EXCLUDED.scopes, "
            "name = EXCLUDED.name, active = true, updated_at = now()",
            (client_id, name, hash_secret(secret), scope_list),
        )
    )
    return Client(client_id, name, scope_list)


def authenticate_client(db: Database, client_id: str, secret: str) -> Client | None:
    """The active client with these credentials, or None. Always spends one hash check (no timing oracle)."""

    def load(cur):
        cur.execute("SELECT client_id, name, secret_hash, scopes FROM clients WHERE client_id = %s AND active",
                    (client_id,))
        return cur.fetchone()

    row = db.transaction(load)
    if not verify_secret(row["secret_hash"] if row else None, secret) or row is None:
        return None
    return Client(row["client_id"], row["name"], list(row["scopes"]))
