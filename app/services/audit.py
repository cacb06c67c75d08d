"""The audit log: who changed what (placeholder until the audit module lands).

`record_audit(cur, action, target, details=None)` is called inside the transaction of each change, so an entry
is written exactly when the change commits. The acting party (`client:<id>`, `operator:<email>` or `cli`) comes
from a context variable the web layer sets per request (`set_actor`) and the CLI sets once.

This version keeps the interface and writes nothing: the audit table and its queries belong to the audit module,
which replaces this file.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_actor: ContextVar[str | None] = ContextVar("uaip_audit_actor", default=None)


def set_actor(actor: str | None) -> None:
    """Who is acting in this context (request thread or CLI run)."""
    _actor.set(actor)


def current_actor() -> str | None:
    return _actor.get()


def record_audit(cur, action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """Record one change (no-op here; see the module docstring)."""
    return None


def list_audit(db, *, actor: str | None = None, action: str | None = None, target: str | None = None,
               limit: int = 50, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None] | None:
    """Entries newest first and the next cursor, or None when this build keeps no audit log."""
    return None
