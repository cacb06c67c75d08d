"""Application metrics (prometheus_client objects) shared by every module that counts something.

Only the metric objects live here so any module can import them cheaply. Under gunicorn,
PROMETHEUS_MULTIPROC_DIR is set by gunicorn.conf.py before this module is imported, so values are written to
per-worker files and `/metrics` aggregates them (DESIGN.md decision 6).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
