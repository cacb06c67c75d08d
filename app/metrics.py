"""Application metrics (prometheus_client objects) shared by every module that counts something, the HTTP request
metrics, the /metrics endpoint and the gunicorn hooks that keep multiprocess metrics right.

Metric objects are module-level so any module can import and count cheaply. Under gunicorn,
PROMETHEUS_MULTIPROC_DIR is set by gunicorn.conf.py before this module is imported, so values are written to
per-worker files and `/metrics` aggregates them (DESIGN.md decision 6).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time

from flask import Flask, current_app, g, request
from prometheus_client import Counter, Gauge, Histogram, multiprocess
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

log = logging.getLogger(__name__)

commands_total = Counter(
    "uaip_commands_total",
    "Commands by the status they reached (queued, sent, acknowledged, completed, failed, expired, cancelled).",
    ["status"],
)

rate_limited_total = Counter(
    "uaip_rate_limited_total",
    "Requests refused with 429 by the rate limiter.",
)

# "max" over live workers: a dependency is up if the most recent probe in any live worker saw it up.
dependency_up = Gauge(
    "uaip_dependency_up",
    "1 when the last health probe reached the dependency, else 0.",
    ["name"],
    multiprocess_mode="livemax",
)

# --- HTTP metrics and the /metrics endpoint --------------------------------------------------------------
#
# prometheus-flask-exporter serves /metrics (aggregating the per-worker files in Gunicorn multiprocess mode) and
# marks dead workers; its built-in request metrics are off because their names and labels differ from the
# contract's (`<prefix>_http_request_total` has no endpoint label), so the two HTTP metrics are recorded here.

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Label values are bounded: the URL rule (never the raw path), a known method, a status code.
UNMATCHED_ENDPOINT = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"

http_requests_total = Counter(
    "uaip_http_requests_total",
    "HTTP requests by method, endpoint (URL rule) and status.",
    ["method", "endpoint", "status"],
)

http_request_duration_seconds = Histogram(
    "uaip_http_request_duration_seconds",
    "Time from the first request hook to the response, by method, endpoint (URL rule) and status.",
    ["method", "endpoint", "status"],
    buckets=HTTP_BUCKETS,
)

# Counted in PostgreSQL by the worker answering the scrape (at most once per DeviceCounts period); the most recent
# count of any live worker wins.
devices = Gauge(
    "uaip_devices",
    "Devices by effective status, counted at scrape time (NaN when PostgreSQL cannot be asked).",
    ["status"],
    multiprocess_mode="livemostrecent",
)


def observe_request(response):
    """after_request: count and time every request (429s included: the first hook set g.request_started)."""
    if getattr(request, "prom_do_not_track", False):
        return response
    started = g.get("request_started")
    labels = {
        "method": request.method if request.method in KNOWN_METHODS else "OTHER",
        "endpoint": request.url_rule.rule if request.url_rule is not None else UNMATCHED_ENDPOINT,
        "status": str(response.status_code),
    }
    http_requests_total.labels(**labels).inc()
    if started is not None:
        http_request_duration_seconds.labels(**labels).observe(max(time.perf_counter() - started, 0.0))
    return response


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
                devices.labels(status=status).set(count)
            self._fresh_until = time.monotonic() + self.seconds


def _count_devices() -> dict[str, float]:
    from app.db import get_db
    from app.services.registry import DEVICE_STATUSES, count_devices_by_status

    try:
        return count_devices_by_status(get_db(), current_app.config["SETTINGS"].heartbeat_timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - a scrape must answer even when PostgreSQL does not
        log.warning("device count for /metrics failed", extra={"error": f"{exc.__class__.__name__}: {exc}"})
        return {status: math.nan for status in DEVICE_STATUSES}


def refresh_device_gauge() -> None:
    current_app.extensions["uaip.device_counts"].refresh()


def _refresh_before_scrape(view):
    @functools.wraps(view)
    def scrape(*args, **kwargs):
        refresh_device_gauge()
        # uaip_dependency_up is set by health probes; a scrape runs them too (through the per-worker cache, so
        # at most one round of probes per 2 s), or the gauge would stay empty where nothing calls /health.
        from app.health import get_health

        get_health().report()
        return view(*args, **kwargs)

    return scrape


def init_app(app: Flask) -> None:
    """Register /metrics and the request hook. Call it before the limiter, so a 429 is still observed."""
    multiprocess_mode = bool(os.environ.get(MULTIPROC_ENV))
    exporter_class = GunicornInternalPrometheusMetrics if multiprocess_mode else PrometheusMetrics
    exporter = exporter_class.for_app_factory(
        path=METRICS_PATH, export_defaults=False, metrics_decorator=_refresh_before_scrape
    )
    exporter.init_app(app)
    app.after_request(observe_request)
    from app.health import cache_seconds_from_env  # (health imports this module)

    app.extensions["uaip.device_counts"] = DeviceCounts(cache_seconds_from_env())
    from app.services.commands import STATUSES as COMMAND_STATUSES  # (that module counts through this one)

    for status in COMMAND_STATUSES:  # every series exists from the start (multiprocess mode hides empty ones)
        commands_total.labels(status=status)
    app.extensions["uaip.metrics"] = exporter


# --- gunicorn master hooks (called from gunicorn.conf.py) -------------------------------------------------


def reset_multiprocess_dir() -> None:
    """on_starting: create PROMETHEUS_MULTIPROC_DIR and drop the files of a previous run (only *.db files,
    so a mistaken path never loses anything else)."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))


def mark_worker_dead(pid: int) -> None:
    """child_exit: drop a dead worker's live gauges (its counters stay in the totals)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
