"""Schema migrations: numbered `.sql` files in app/infra/migrations, each applied once, in order, in a transaction.

Several pods run `uaip-hub migrate` at the same time during a rollout, so the whole run holds a PostgreSQL
advisory lock: the second runner waits, then finds nothing left to apply and succeeds too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg2

log = logging.getLogger(__name__)

# An arbitrary constant shared by every runner ("uaip" in ASCII).
MIGRATION_LOCK_ID = 0x75616970
MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("app.infra.migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError("two migration files share a version number")
    return sorted(found, key=lambda m: m.version)


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the names applied by this run (empty when up to date)."""
    applied_now: list[str] = []
    conn = psycopg2.connect(database_url, connect_timeout=10, application_name="uaip-hub migrate")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in cur.fetchall()}
                for migration in available_migrations():
                    if migration.version in done:
                        continue
                    conn.autocommit = False
                    try:
                        cur.execute(migration.sql)
                        cur.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name),
                        )
                        conn.commit()
                    except Exception:
                        conn.rollback()
                        raise
                    finally:
                        conn.autocommit = True
                    label = f"{migration.version:03d}_{migration.name}"
                    log.info("applied migration %s", label)
                    applied_now.append(label)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    finally:
        conn.close()
    return applied_now
