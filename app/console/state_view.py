"""The device state (reported, desired, delta, history) as the device page shows and changes it, through the same
services as the API (app/services/state.py, app/services/state_history.py, app/web/device_state.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app

from app.infra.db import get_db
from app.services import state, state_history
from app.web import device_state

CHART_HOURS = 6  # the device page's chart: the last hours of a numeric property, one point per minute
CHART_BUCKET_SECONDS = 60


def load_state(device_id: str) -> dict[str, Any]:
    return state.get_state(get_db(), device_id)


def load_history(device_id: str, prop: str) -> list[dict[str, Any]]:
    """The property's last CHART_HOURS, the last value of each minute, oldest first."""
    query = state_history.Query(
        device_id=device_id, property=prop, start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=CHART_HOURS),
        end=None, limit=CHART_HOURS * 3600 // CHART_BUCKET_SECONDS, cursor=None, bucket=CHART_BUCKET_SECONDS,
        agg="last")
    settings = current_app.config["SETTINGS"]
    return state_history.read_history(get_db(), query, settings.state_history_hours)["points"]


def set_desired(device_id: str, patch: dict[str, Any], client_id: str) -> dict[str, Any]:
    """As PATCH /devices/{id}/state/desired without If-Match: the checks, the audit entry, the NATS push."""
    return device_state.set_desired(device_id, patch, expected=None, client_id=client_id)
