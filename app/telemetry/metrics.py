"""Application metrics (prometheus_client objects) shared by every module that counts something, the HTTP request
metrics, the /metrics endpoint and the gunicorn hooks that keep multiprocess metrics right.

Metric objects are module-level so any module can import and count cheaply. That is also why this module imports
nothing of the app: everything may import it, so it must not import anything back (app/web/scrape.py, above the
services, tells it what to refresh before a scrape). Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set by
gunicorn.conf.py before this module is imported, so values are written to per-worker files and `/metrics`
aggregates them. Any other process given that variable (the relay, `uaip-hub migrate` in a pod whose ConfigMap
sets it) writes its own files there too; the directory is created if missing, because prometheus_client opens its
files in it the moment the first metric below is made and would otherwise stop the process with a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import time
from collections.abc import Callable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

from flask import Flask, g, request  # noqa: E402
from prometheus_client import Counter, Gauge, Histogram, multiprocess  # noqa: E402
from prometheus_flask_exporter import PrometheusMetrics  # noqa: E402
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics  # noqa: E402

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

# --- commands, acks and the relay (counted where the event happens: app/services/commands/, app/cli/relay.py) ---
#
# A command's final status is applied by exactly one transaction (a conditional UPDATE or a locked row), in
# whichever process runs it: an API worker (REST ack, device delete), or a relay (NATS ack, expiry sweep). Each
# process counts what it applied after the commit, so summing API and relay series in Prometheus counts every
# transition once.

# 10 ms to an hour: devices answer in milliseconds, slow ones in minutes, and the default TTL is 5 min.
COMMAND_COMPLETION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                              600.0, 1800.0, 3600.0)
COMPLETION_STATUSES = ("completed", "failed")
ACK_SOURCES = ("relay", "rest")  # NATS acks applied by a relay; POST /api/v1/messages/{id}/ack in an API worker
ACK_OUTCOMES = ("applied", "duplicate", "expired", "invalid_transition", "not_found", "forbidden", "malformed")
REDELIVERY_REASONS = ("retry", "restart", "device_online")

command_completion_seconds = Histogram(
    "uaip_command_completion_seconds",
    "Time from a command's creation to the ack that finished it (completed or failed), by that status.",
    ["status"],
    buckets=COMMAND_COMPLETION_BUCKETS,
)

acks_total = Counter(
    "uaip_acks_total",
    "Device acks by the path they came by (relay = NATS, rest = HTTP) and what they did: applied (status moved "
    "forward), duplicate (repeated the current status), expired, invalid_transition, not_found, forbidden, "
    "malformed (relay only: not a JSON ack).",
    ["source", "outcome"],
)

command_redeliveries_total = Counter(
    "uaip_command_redeliveries_total",
    "Commands published again after their first delivery, by trigger: retry (back-off passed without an ack), "
    "restart (relay start or NATS reconnect), device_online (the device came back).",
    ["reason"],
)

NATS_SUBJECT_KINDS = ("acks", "heartbeat")
NATS_DROP_REASONS = ("too_large", "too_deep", "invalid_json", "invalid", "unknown_message", "device_backlog",
                     "device_rate", "inbox_full", "locked", "error")

nats_messages_dropped_total = Counter(
    "uaip_nats_messages_dropped_total",
    "Device messages on NATS the relay did not apply, by subject kind (acks, heartbeat) and reason: too_large, "
    "too_deep, invalid_json, invalid (not the body the subject carries), unknown_message (an ack whose message_id "
    "is no message id), device_backlog / device_rate / inbox_full (over the per-device queue, the per-device rate, "
    "the overall queue bound), locked "
    "(a heartbeat whose device row stayed locked), error (a failure handling it, logged).",
    ["subject_kind", "reason"],
)

nats_auth_callouts_total = Counter(
    "uaip_nats_auth_callouts_total",
    "NATS auth callout requests this relay answered (NATS_AUTH_CALLOUT=true): allowed (a device connected with its "
    "secret), refused (wrong secret, unknown or deleted device), invalid (not a request the hub can read), busy "
    "(too many requests waiting: left unanswered, the server refuses the connection).",
    ["outcome"],
)

# "min" over live workers: 0 as soon as any worker of the pod has no NATS connection (its commands stay queued).
nats_connected = Gauge(
    "uaip_nats_connected",
    "1 while this process's NATS connection is up, else 0 (API: the lowest value among live workers).",
    multiprocess_mode="livemin",
)

# Labelled so that only a relay has a sample: an API process exposing 0 would look like a relay stalled since 1970.
relay_last_sweep_timestamp_seconds = Gauge(
    "uaip_relay_last_sweep_timestamp_seconds",
    "Unix time at which this relay last finished its periodic sweep (expiry, offline marking, redelivery), by the "
    "NATS queue group it consumes in.",
    ["queue_group"],
    multiprocess_mode="livemax",
)


STATE_REPORT_OUTCOMES = ("applied", "ignored", "rejected")

state_reports_total = Counter(
    "uaip_state_reports_total",
    "Device state reports by what became of them: applied (at least one member taken), ignored (every member "
    "older than the stored one), rejected (dropped whole: too large, malformed, or against the device type). "
    "HTTP reports count in the API, NATS reports in the relay.",
    ["outcome"],
)


def ack_outcome(code: str | None, changed: bool) -> str:
    """The `outcome` label of an ack the service decided: None/changed → applied, None/unchanged → duplicate,
    else the lower-cased error code without its MESSAGE_ prefix."""
    if code is None:
        return "applied" if changed else "duplicate"
    return code.lower().removeprefix("message_")


# --- HTTP metrics and the /metrics endpoint --------------------------------------------------------------
#
# prometheus-flask-exporter serves /metrics (aggregating the per-worker files in Gunicorn multiprocess mode) and
# marks dead workers; its built-in request metrics are off because their names and labels differ from the
# documented names (`<prefix>_http_request_total` has no endpoint label), so the two HTTP metrics are recorded here.

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Label values are bounded: the URL rule (never the raw path), a known method, a status code.
UNMATCHED_ENDPOINT = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
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

# Per worker process (the `pid` label): stream slots are per process (UAIP_MAX_STREAMS), so the fullest worker is
# what refuses the next stream with 503 STREAMS_FULL.
event_streams_open = Gauge(
    "uaip_event_streams_open",
    "Event streams (SSE and MCP subscriptions) open in this worker process.",
    multiprocess_mode="liveall",
)

# The open streams whose live events the worker's one stream writer thread sends (app/services/stream_writer.py);
# the others are catching up from PostgreSQL in their own threads, or are served where the writer cannot write.
event_streams_pushed = Gauge(
    "uaip_event_streams_pushed",
    "Open event streams whose live events this worker's stream writer sends.",
    multiprocess_mode="liveall",
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


def _run_first(before_scrape: Callable[[], None] | None):
    """The exporter's `metrics_decorator`: call `before_scrape` (gauges counted at scrape time), then answer."""

    def decorate(view):
        if before_scrape is None:
            return view

        @functools.wraps(view)
        def scrape(*args, **kwargs):
            before_scrape()
            return view(*args, **kwargs)

        return scrape

    return decorate


def init_app(app: Flask, before_scrape: Callable[[], None] | None = None) -> None:
    """Register /metrics and the request hook. Call it before the limiter, so a 429 is still observed.
    `before_scrape` runs at the start of every scrape (it must not raise: a scrape answers whatever happens)."""
    multiprocess_mode = bool(os.environ.get(MULTIPROC_ENV))
    exporter_class = GunicornInternalPrometheusMetrics if multiprocess_mode else PrometheusMetrics
    exporter = exporter_class.for_app_factory(
        path=METRICS_PATH, export_defaults=False, metrics_decorator=_run_first(before_scrape)
    )
    exporter.init_app(app)
    app.after_request(observe_request)
    app.extensions["uaip.metrics"] = exporter


# --- gunicorn master hooks (called from gunicorn.conf.py) -------------------------------------------------


LOCK_FILE = "uaip-master.lock"
_held_lock: dict[str, int] = {}  # path -> descriptor of the lock this master holds (kept across SIGHUP)


def claim_multiprocess_dir() -> None:
    """on_starting: take PROMETHEUS_MULTIPROC_DIR for this master, or stop start-up with one line when another
    running hub holds it: the start would wipe that hub's metric files, and both would sum each other's workers.

    An exclusive flock on a file in the directory, held until this process ends (the kernel drops it even after a
    SIGKILL, so a crash never leaves a stale lock). A USR2 re-exec (GUNICORN_PID is its parent, the old master,
    which still holds the lock) shares the directory with its parent by design and skips the claim."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or path in _held_lock:
        return
    if os.environ.get("GUNICORN_PID") == str(os.getppid()):
        return
    os.makedirs(path, exist_ok=True)
    descriptor = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise SystemExit(
            f"uaip-hub: configuration error: {MULTIPROC_ENV} {path} is in use by another running hub (pid "
            f"{holder}); give each hub on a host its own (unset it for the per-instance default, or set "
            "UAIP_INSTANCE)") from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode("ascii"))
    _held_lock[path] = descriptor


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
