"""What /metrics needs from the rest of the hub. It sits above the services and health so that app/telemetry/metrics.py,
which every module counts through, stays a leaf.

A scrape first refreshes the gauges counted when asked rather than as things happen: `uaip_devices` (devices by
effective status: one short query, at most once per health period per worker) and `uaip_dependency_up` (set by
the health probes; a scrape runs them through the per-worker cached report, so at most one round of probes per
2 s, or the gauge would stay empty where nothing calls /health). Every command counter's and histogram's series
exists from the start.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, current_app

from app.core.statuses import DEVICE_STATUSES
from app.core.statuses import STATUSES as COMMAND_STATUSES
from app.infra.db import get_db
from app.services.registry import count_devices_by_status
from app.telemetry import metrics
from app.web.health import get_health

log = logging.getLogger(__name__)


class DeviceCounts:
    """The `uaip_devices` gauge, refreshed at most once per `seconds` in this worker (the health report's period).

    /metrics is anonymous and counting is a `count(*) ... GROUP BY` over every device: however many scrapes
    arrive, each worker asks PostgreSQL at most once per period, and scrapes that find the count expired wait for
    the one query in progress instead of starting their own. A failed count (NaN) is kept for the period too, so
    an outage is not hammered either."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._fresh_until = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        if time.monotonic() < self._fresh_until:
            return
        with self._lock:
            if time.monotonic() < self._fresh_until:
                return
            for status, count in _count_devices().items():
                metrics.devices.labels(status=status).set(count)
            self._fresh_until = time.monotonic() + self.seconds


def _count_devices() -> dict[str, float]:
    try:
        return count_devices_by_status(get_db(), current_app.config["SETTINGS"].heartbeat_timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even when PostgreSQL does not
        log.warning("device count for /metrics failed", extra={"error": f"{exc.__class__.__name__}: {exc}"})
        return {status: math.nan for status in DEVICE_STATUSES}


def refresh_device_gauge() -> None:
    current_app.extensions["uaip.device_counts"].refresh()


def refresh_gauges() -> None:
    """Run before every scrape of the API's /metrics."""
    refresh_device_gauge()
    get_health().report()


def init_app(app: Flask) -> None:
    """/metrics and the request metrics (call it before the limiter, so a 429 is still observed)."""
    metrics.init_app(app, before_scrape=refresh_gauges)
    app.extensions["uaip.device_counts"] = DeviceCounts(app.config["SETTINGS"].health_cache_seconds)
    _create_series()


def _create_series() -> None:
    """The command counters' and histograms' series exist from the start with 0 (multiprocess mode hides series
    never touched, and rate() needs a first sample before the first event)."""
    for status in COMMAND_STATUSES:
        metrics.commands_total.labels(status=status)
    for status in metrics.COMPLETION_STATUSES:
        metrics.command_completion_seconds.labels(status=status)
    for source in metrics.ACK_SOURCES:
        for outcome in metrics.ACK_OUTCOMES:
            if outcome != "malformed" or source == "relay":
                metrics.acks_total.labels(source=source, outcome=outcome)
    for reason in metrics.REDELIVERY_REASONS:
        metrics.command_redeliveries_total.labels(reason=reason)
