"""Process lifecycle under gunicorn: what the hooks in gunicorn.conf.py call (docs/operations.md, "Signals and
draining").

Gunicorn hands its hooks the worker (or the arbiter), never the Flask app, and the app may be wrapped in
middleware by the time gunicorn holds it. So `create_app` registers each app here (`init_app`), and the worker
hooks reach the app's extensions through that registry.

Per worker:
- `worker_ready` (post_worker_init): install the tracer provider when OTEL_* turns tracing on (here, after fork,
  never in the master: its export thread and connections belong to the worker), start the NATS connection in the
  background, so the first command does not pay for connecting, and chain the worker's SIGTERM handler so
  readiness turns 503 the moment the worker is told to stop. Gunicorn runs no hook on SIGTERM in a worker: its
  handler only sets `worker.alive = False`.
- `worker_interrupted` (worker_int: SIGINT/SIGQUIT) and `worker_aborted` (worker_abort: SIGABRT after a
  timeout) mark the worker as shutting down.
- `worker_exiting` (worker_exit): close NATS (flush what was published), Redis and the PostgreSQL pool, then
  export the spans still queued (bounded in time).
  A worker killed at the graceful deadline never gets here, which is fine: commands are in PostgreSQL before
  they are published, so nothing closed here is needed for correctness.

Per master:
- `record_master_start` (gunicorn.conf.py, at import) remembers when this master started, for `uptime_seconds`.
  The config file is executed again on SIGHUP, so the value is kept while the master pid is the same; a new
  master (USR2 re-exec) has a new pid and records its own start.
- `master_ready` (when_ready) logs where the hub listens; `master_exiting` (on_exit) logs workers that were
  still running at the graceful deadline and were killed.

This module is imported by gunicorn.conf.py in the master, before PROMETHEUS_MULTIPROC_DIR may be set: it imports
nothing beyond the standard library at module level.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from typing import Any

log = logging.getLogger(__name__)

MASTER_STARTED_ENV = "UAIP_MASTER_STARTED"  # "<master pid>:<unix time>", set by record_master_start
_PROCESS_STARTED = time.time()

_apps: weakref.WeakSet[Any] = weakref.WeakSet()
_shutting_down = threading.Event()


# --- registry and per-process state ---------------------------------------------------------------------


def init_app(app) -> None:
    """Called by create_app: the worker hooks close this app's extensions at exit."""
    _apps.add(app)


def shutting_down() -> bool:
    """True once this process was told to stop (SIGTERM, SIGINT/SIGQUIT, SIGABRT, or exit began)."""
    return _shutting_down.is_set()


def mark_shutting_down(reason: str) -> None:
    if not _shutting_down.is_set():
        _shutting_down.set()
        log.info("worker shutting down", extra={"reason": reason, "pid": os.getpid()})


def close_extensions() -> None:
    """Close NATS (flushing first), Redis and the PostgreSQL pool of every app in this process.

    NATS first because its flush is the one step that matters; PostgreSQL last because closing a connection
    still in use by a request thread waits for that statement (bounded by the statement timeout).
    """
    for app in list(_apps):
        for name in ("uaip.stream_writer", "uaip.events", "uaip.messaging", "uaip.cache", "uaip.limiter",
                     "uaip.health", "uaip.db"):
            extension = app.extensions.get(name)
            if extension is None:
                continue
            try:
                extension.close()
            except Exception:  # noqa: BLE001 - exit must go on; every close is best effort
                log.exception("closing %s failed", name)


# --- worker hooks -----------------------------------------------------------------------------------------


def worker_forked(worker) -> None:
    """post_fork: the worker starts with a clean state whatever the master's module state was."""
    _shutting_down.clear()


def worker_ready(worker) -> None:
    """post_worker_init: the app is loaded; start tracing (if configured) and NATS, and watch for SIGTERM."""
    from app.telemetry import tracing

    tracing.start(tracing.API_SERVICE)
    _chain_sigterm(worker)
    for app in list(_apps):
        messaging = app.extensions.get("uaip.messaging")
        if messaging is not None:
            messaging.start()


def _chain_sigterm(worker) -> None:
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        _shutting_down.set()  # no logging in a signal handler: it may interrupt a logging call holding a lock
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    # signal.signal() makes the signal interrupt system calls again; gunicorn had turned that off so a SIGTERM
    # does not disturb requests in flight. Keep it off.
    signal.siginterrupt(signal.SIGTERM, False)


def worker_interrupted(worker) -> None:
    """worker_int (SIGINT/SIGQUIT: quick shutdown); worker_exit follows and closes the extensions."""
    mark_shutting_down("SIGINT/SIGQUIT")


def worker_aborted(worker) -> None:
    """worker_abort (SIGABRT: the master saw no heartbeat for `timeout` seconds)."""
    mark_shutting_down("aborted after worker timeout")


def worker_exiting(worker) -> None:
    """worker_exit. Gunicorn also calls this hook in the master for a worker that vanished: do nothing there."""
    if getattr(worker, "pid", None) != os.getpid():
        return
    mark_shutting_down("exit")
    close_extensions()
    from app.telemetry import tracing

    tracing.shutdown()


# --- master hooks -----------------------------------------------------------------------------------------


def record_master_start() -> None:
    """Remember when this master started (kept across SIGHUP config reloads, renewed by a USR2 re-exec)."""
    pid, _started = _master_start()
    if pid != os.getpid():
        os.environ[MASTER_STARTED_ENV] = f"{os.getpid()}:{time.time():.3f}"


def _master_start() -> tuple[int | None, float | None]:
    value = os.environ.get(MASTER_STARTED_ENV, "")
    pid, _, started = value.partition(":")
    try:
        return int(pid), float(started)
    except ValueError:
        return None, None


def started_at() -> float:
    """The gunicorn master's start time when running under it (workers read it from their environment),
    else this process's start."""
    pid, started = _master_start()
    if started is not None and pid in (os.getpid(), os.getppid()):
        return started
    return _PROCESS_STARTED


def uptime_seconds() -> float:
    return max(0.0, time.time() - started_at())


def log_start_notes(log, env_file_notes: list[tuple[str, str]], settings, made_development_secret: bool) -> None:
    """on_starting: what an operator must know about how this hub was configured, once per start (not per worker):
    the `.env` names it read and ignored (app/core/envfile.py), a random development secret, a production hub whose
    public URL comes from each request's Host header."""
    for level, message in env_file_notes:
        getattr(log, level)(message)
    if made_development_secret:
        log.warning("UAIP_ENV=development and JWT_SECRET unset: tokens are signed with a random secret made for this "
                    "start (shared by the workers; tokens stop working when the hub restarts)")
    if settings.environment == "production" and settings.public_url is None:
        log.warning("UAIP_PUBLIC_URL is unset: discovery documents, Thing Descriptions and WWW-Authenticate "
                    "challenges name the URL each request's Host header gives (answered with Cache-Control: "
                    "no-store); set UAIP_PUBLIC_URL to the hub's external URL")


def master_ready(server) -> None:
    """when_ready: one line saying where the hub listens and with how many workers."""
    listeners = ", ".join(str(listener) for listener in getattr(server, "LISTENERS", []))
    server.log.info(
        "uaip-hub ready: listening on %s with %s workers x %s threads (graceful timeout %ss)",
        listeners, server.cfg.workers, server.cfg.threads, server.cfg.graceful_timeout,
    )


def master_exiting(server) -> None:
    """on_exit: workers still present here outlived the graceful timeout and were sent SIGKILL; say so."""
    for pid in list(getattr(server, "WORKERS", {})):
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            continue
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            server.log.warning(
                "worker %s was killed: requests still in flight after the graceful timeout (%ss)",
                pid, server.cfg.graceful_timeout,
            )
        else:
            server.log.info("worker %s exited at the graceful timeout (status %s)", pid, status)
