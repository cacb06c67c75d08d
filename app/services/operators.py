"""Operators (the people who use the console): accounts, roles, sign-in with a throttle, and server-side sessions.

Passwords are scrypt hashes (app/auth/secrets.py). A session is a random 256-bit value in a cookie; the database
keeps only its SHA-256, so a leaked table signs nobody in, and signing out deletes the row, so an old cookie stops
working at once. Failed sign-ins are rows per email: up to `MAX_FAILURES` in `FAILURE_WINDOW` are answered as
failures, every further attempt in the window is throttled (right password or not) without checking the password,
and other emails are unaffected.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from app.auth.secrets import hash_secret, verify_secret
from app.auth.tokens import SCOPES
from app.core.json_input import storable_text
from app.core.text import escaped, has_invisible
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.services.audit import record_audit

ROLES = ("admin", "viewer")
ROLE_SCOPES = {"admin": SCOPES, "viewer": ("device:read", "message:read")}
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
MAX_FAILURES = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
SESSION_LIFETIME = dt.timedelta(hours=12)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


class OperatorError(ValueError):
    """Input an operator account cannot have (bad email, role or password); the message says which."""


class OperatorExists(OperatorError):
    pass


class UnknownOperator(OperatorError):
    pass


@dataclass(frozen=True)
class Operator:
    email: str
    role: str
    disabled: bool
    created_at: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def view(self) -> dict[str, Any]:
        return {"email": self.email, "role": self.role, "disabled": self.disabled, "created_at": self.created_at}


def normalise_email(email: str) -> str:
    value = (email or "").strip().lower()
    if not _EMAIL.match(value) or len(value) > 254 or not storable_text(value):
        raise OperatorError(f"not an email address: {email!r}")
    return value


def check_role(role: str) -> str:
    if role not in ROLES:
        raise OperatorError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH or "\x00" in password:
        raise OperatorError(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return password


def generate_password() -> str:
    """A random password for `--generate` and empty stdin: 144 bits, URL-safe (24 characters)."""
    return secrets.token_urlsafe(18)


def role_scopes(role: str) -> tuple[str, ...]:
    """The most a token issued on this operator's behalf may carry."""
    return ROLE_SCOPES.get(role, ())


def _operator(row: dict[str, Any]) -> Operator:
    created = row.get("created_at")
    return Operator(row["email"], row["role"], row["disabled"],
                    created if isinstance(created, str) or created is None else timestamp(created))


def create_operator(db: Database, email: str, role: str, password: str) -> Operator:
    email, role, password = normalise_email(email), check_role(role), check_password(password)
    if has_invisible(email):
        # The email is the operator's name wherever a person reads it (console, grants, audit actor): characters
        # that do not show could make one operator pass for another, so a new account cannot have them.
        raise OperatorError(f"an email address cannot contain invisible characters: {escaped(email)}")
    password_hash = hash_secret(password)

    def insert(cur):
        cur.execute(
            "INSERT INTO operators (email, role, password_hash) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING "
            "RETURNING email, role, disabled, created_at",
            (email, role, password_hash),
        )
        row = cur.fetchone()
        if row is not None:
            record_audit(cur, "operator.create", f"operator:{email}", {"role": role})
        return row

    row = db.transaction(insert)
    if row is None:
        raise OperatorExists(f"operator {email} already exists")
    return _operator(row)


def list_operators(db: Database, *, limit: int = 1000, offset: int = 0) -> list[Operator]:
    def query(cur):
        cur.execute("SELECT email, role, disabled, created_at FROM operators ORDER BY email LIMIT %s OFFSET %s",
                    (limit, offset))
        return cur.fetchall()

    return [_operator(row) for row in db.read(query)]


def get_operator(db: Database, email: str) -> Operator | None:
    def query(cur):
        cur.execute("SELECT email, role, disabled, created_at FROM operators WHERE email = %s", (email,))
        return cur.fetchone()

    row = db.read(query)
    return _operator(row) if row else None


def _end_access(cur, email: str) -> None:
    """Sessions end and desktop-agent grants are revoked (the operator lost access or changed password)."""
    cur.execute("DELETE FROM operator_sessions WHERE email = %s", (email,))
    cur.execute("UPDATE oauth_grants SET revoked_at = now(), revoked_reason = 'operator' "
                "WHERE email = %s AND revoked_at IS NULL RETURNING grant_id", (email,))
    for row in cur.fetchall():
        record_audit(cur, "grant.revoke", f"grant:{row['grant_id']}", {"reason": "operator access changed"})


def update_operator(db: Database, email: str, *, role: str | None = None, disabled: bool | None = None) -> Operator:
    """Change the role or the disabled flag. Disabling, or lowering admin to viewer, ends the operator's sessions
    and grants (what they hold was issued under the old rights)."""
    email = normalise_email(email)
    if role is not None:
        check_role(role)

    def update(cur):
        cur.execute("SELECT role, disabled FROM operators WHERE email = %s FOR UPDATE", (email,))
        before = cur.fetchone()
        if before is None:
            return None
        cur.execute(
            "UPDATE operators SET role = coalesce(%s, role), disabled = coalesce(%s, disabled), updated_at = now() "
            "WHERE email = %s RETURNING email, role, disabled, created_at",
            (role, disabled, email),
        )
        row = cur.fetchone()
        if (row["disabled"] and not before["disabled"]) or (before["role"] == "admin" and row["role"] != "admin"):
            _end_access(cur, email)
        if disabled and not before["disabled"]:
            record_audit(cur, "operator.disable", f"operator:{email}")
        changes = {key: row[key] for key in ("role", "disabled") if row[key] != before[key]}
        if changes and not (disabled and not before["disabled"] and list(changes) == ["disabled"]):
            record_audit(cur, "operator.update", f"operator:{email}", changes)
        return row

    row = db.transaction(update)
    if row is None:
        raise UnknownOperator(f"no operator {email}")
    return _operator(row)


def disable_operator(db: Database, email: str) -> Operator:
    return update_operator(db, email, disabled=True)


def reset_password(db: Database, email: str, password: str) -> Operator:
    """A new password; every session and grant of the operator ends (whoever held the old one is out)."""
    email, password = normalise_email(email), check_password(password)
    password_hash = hash_secret(password)

    def update(cur):
        cur.execute(
            "UPDATE operators SET password_hash = %s, updated_at = now() WHERE email = %s "
            "RETURNING email, role, disabled, created_at",
            (password_hash, email),
        )
        row = cur.fetchone()
        if row is not None:
            _end_access(cur, email)
            record_audit(cur, "operator.update", f"operator:{email}", {"password": "reset"})
        return row

    row = db.transaction(update)
    if row is None:
        raise UnknownOperator(f"no operator {email}")
    return _operator(row)


# --- sign-in and sessions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in attempt: `outcome` is "ok" (with `session`), "failed" or "throttled"."""

    outcome: str
    session: str | None = None
    operator: Operator | None = None


def _session_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def sign_in(db: Database, email: str, password: str) -> SignIn:
    """Check the password unless the email is throttled; start a session on success.

    Attempts for one email are serialised by a transaction-level advisory lock, so concurrent guesses cannot all
    pass the count before any of them is recorded."""
    try:
        email = normalise_email(email)
    except OperatorError:
        # Counted under what was typed, made storable (an address no operator can have still gets throttled).
        email = (email or "").strip().lower()[:254].replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    password = password or ""

    def attempt(cur):
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('uaip-signin:' || %s))", (email,))
        cur.execute(
            "SELECT count(*) AS failures FROM operator_signin_failures WHERE email = %s AND at > now() - %s",
            (email, FAILURE_WINDOW),
        )
        if cur.fetchone()["failures"] >= MAX_FAILURES:
            return SignIn("throttled")
        cur.execute("SELECT email, role, disabled, created_at, password_hash FROM operators WHERE email = %s",
                    (email,))
        row = cur.fetchone()
        good = verify_secret(row["password_hash"] if row else None, password[:MAX_PASSWORD_LENGTH])
        if not good or row is None or row["disabled"]:
            cur.execute("DELETE FROM operator_signin_failures WHERE email = %s AND at <= now() - %s",
                        (email, FAILURE_WINDOW))
            cur.execute("INSERT INTO operator_signin_failures (email) VALUES (%s)", (email,))
            return SignIn("failed")
        token = secrets.token_urlsafe(32)
        cur.execute("DELETE FROM operator_sessions WHERE expires_at < now()")
        cur.execute(
            "INSERT INTO operator_sessions (session_hash, email, expires_at) VALUES (%s, %s, now() + %s)",
            (_session_hash(token), email, SESSION_LIFETIME),
        )
        return SignIn("ok", token, _operator(row))

    return db.transaction(attempt)


def session_operator(db: Database, token: str | None) -> Operator | None:
    """The operator of a live session (not expired, operator not disabled), else None."""
    if not token or len(token) > 128:
        return None

    def query(cur):
        cur.execute(
            "SELECT o.email, o.role, o.disabled, o.created_at FROM operator_sessions s "
            "JOIN operators o USING (email) WHERE s.session_hash = %s AND s.expires_at > now() AND NOT o.disabled",
            (_session_hash(token),),
        )
        return cur.fetchone()

    row = db.read(query)
    return _operator(row) if row else None


def end_session(db: Database, token: str | None) -> None:
    if not token:
        return
    db.transaction(lambda cur: cur.execute("DELETE FROM operator_sessions WHERE session_hash = %s",
                                           (_session_hash(token),)))
