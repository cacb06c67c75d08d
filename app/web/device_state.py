"""What every entry point that reads or writes device state (REST routes, property routes, MCP tools) takes from
the app: the limits from the settings, the cache scope, and the desired write with its publish."""

from __future__ import annotations

from typing import Any

from flask import current_app

from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.services import state


def _settings():
    return current_app.config["SETTINGS"]


def limits() -> state.Limits:
    settings = _settings()
    return state.Limits(settings.max_state_bytes, settings.heartbeat_timeout_seconds, settings.state_history_hours)


def scope() -> str:
    """Tells databases apart in the per-process cache of compiled property declarations."""
    return _settings().database_url


def set_desired(device_id: str, patch: dict[str, Any], *, expected: Any, client_id: str | None,
                prefix: str = "", bare: bool = False) -> dict[str, Any]:
    """Merge `patch` into the device's desired state (checks as in app/services/state.py), publish it on
    `.state.desired` after commit, and return the new state."""
    return state.set_desired(get_db(), get_messaging(), scope(), device_id, patch, expected=expected,
                             client_id=client_id, limits=limits(), prefix=prefix, bare=bare)
