"""API clients as the console's clients page manages them: the list (never a secret), disable and enable, and a
new secret (shown once). The client-management API has the full set (several live secrets, token revocation);
this module is the console's narrow view of the clients table."""

from __future__ import annotations

from typing import Any

from app.auth.secrets import generate_secret, hash_secret
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services.audit import record_audit


def list_clients(db: Database, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    def query(cur):
        cur.execute(
            "SELECT client_id, name, scopes, NOT active AS disabled, created_at, "
            "(SELECT count(*) FROM clients) AS total FROM clients ORDER BY created_at DESC, client_id "
            "LIMIT %s OFFSET %s",
            (limit, offset),
        )
        rows = cur.fetchall()
        if rows or offset == 0:
            return rows, rows[0]["total"] if rows else 0
        cur.execute("SELECT count(*) AS total FROM clients")
        return rows, cur.fetchone()["total"]

    rows, total = db.read(query)
    return [{"client_id": row["client_id"], "name": row["name"], "scopes": list(row["scopes"]),
             "disabled": row["disabled"], "created_at": timestamp(row["created_at"])} for row in rows], total


def set_disabled(db: Database, client_id: str, disabled: bool) -> bool:
    """False when there is no such client. A disabled client gets no new tokens."""

    def update(cur):
        cur.execute("UPDATE clients SET active = %s, updated_at = now() WHERE client_id = %s RETURNING client_id",
                    (not disabled, client_id))
        found = cur.fetchone() is not None
        if found:
            record_audit(cur, "client.update", f"client:{client_id}", {"disabled": disabled})
        return found

    return db.transaction(update)


def rotate_secret(db: Database, client_id: str) -> str | None:
    """A new secret for the client, returned once (None: no such client); the old one stops working."""
    secret = generate_secret()

    def update(cur):
        cur.execute("UPDATE clients SET secret_hash = %s, updated_at = now() WHERE client_id = %s "
                    "RETURNING client_id", (hash_secret(secret), client_id))
        found = cur.fetchone() is not None
        if found:
            record_audit(cur, "client.rotate_secret", f"client:{client_id}")
        return found

    return secret if db.transaction(update) else None
