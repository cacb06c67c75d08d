"""The device state (reported, desired, delta, history) as the device page shows and changes it.

Goes through the state service when this build has one (app/services/state.py); without it the page says the
state is not available, and the rest of the page works.
"""

from __future__ import annotations

import importlib
from typing import Any

from app.infra.db import get_db


def _service():
    try:
        return importlib.import_module("app.services.state")
    except ImportError:
        return None


def available() -> bool:
    service = _service()
    return service is not None and hasattr(service, "get_state")


def load_state(device_id: str) -> dict[str, Any] | None:
    service = _service()
    if service is None or not hasattr(service, "get_state"):
        return None
    return service.get_state(get_db(), device_id)


def load_history(device_id: str, prop: str, limit: int = 200) -> list[dict[str, Any]] | None:
    service = _service()
    if service is None or not hasattr(service, "get_history"):
        return None
    page = service.get_history(get_db(), device_id, prop, limit=limit)
    return page.get("points", []) if isinstance(page, dict) else list(page)


def set_desired(device_id: str, patch: dict[str, Any], client_id: str) -> dict[str, Any] | None:
    service = _service()
    if service is None or not hasattr(service, "patch_desired"):
        return None
    return service.patch_desired(get_db(), device_id, patch, client_id=client_id)
