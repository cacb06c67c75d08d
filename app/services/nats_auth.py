"""Who may connect to NATS as a device (the auth callout, docs/nats-security.md): the device's id and secret, checked
as HTTP Basic auth checks them (the same scrypt hash in PostgreSQL, the same per-process cache of recent
successes), so a device has one credential for both routes."""

from __future__ import annotations

from app.auth.secrets import verify_secret
from app.core.json_input import is_identifier
from app.infra.db import Database
from app.services.registry import device_secret_hash


def subject_safe(device_id: str) -> bool:
    """An id that makes whole NATS subject tokens (no leading or trailing ".", no ".."); permissions are granted
    on subjects built from it, so any other id is refused before PostgreSQL is asked."""
    return is_identifier(device_id) and not device_id.startswith(".") and not device_id.endswith(".") \
        and ".." not in device_id


def device_may_connect(db: Database, device_id: str, secret: str) -> bool:
    """True for a registered device presenting its secret; False for a wrong secret or an unknown (or deleted)
    device. Every wrong guess pays the full scrypt cost, as over HTTP."""
    if not secret or not subject_safe(device_id):
        return False
    return verify_secret(device_secret_hash(db, device_id), secret)
