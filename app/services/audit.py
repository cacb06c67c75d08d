"""The audit log of changes made by clients (who did what to which target).

A stub until the audit log exists: services already call `record_audit` inside the transaction that makes a
change (the desired state of a device, for one), so the log can be filled without touching them.
"""

from __future__ import annotations


def record_audit(cur, action: str, target: str, details: dict | None = None) -> None:
    """Record `action` on `target` inside the caller's transaction (actor and request id come from the request)."""
