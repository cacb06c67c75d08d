"""Gunicorn settings, read from the same environment variables as the app (CONTRACT.md §2).

Flat settings first, thin hooks after; hooks only call functions in app/. Settings are validated here, in the
master, so a bad variable stops start-up with one line instead of every worker failing to boot.
"""

import os

# Before anything imports prometheus_client: workers write their metrics to per-process files here (DESIGN.md 6).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/tmp/uaip-metrics")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)  # also for --check-config, which loads the app

from app.config import Settings, env_or_exit  # noqa: E402
from app.logs import gunicorn_logconfig  # noqa: E402

_settings = env_or_exit(Settings.from_env)

bind = [f"{_settings.server_host}:{_settings.server_port}"]
worker_class = "gthread"
workers = _settings.server_workers
threads = _settings.server_threads
preload_app = False  # every pool and client is created in the worker, after fork (DESIGN.md decision 2)
graceful_timeout = _settings.graceful_timeout_seconds
timeout = 60
keepalive = 5
max_requests = 10_000
max_requests_jitter = 1_000
control_socket_disable = True  # no control socket: containers have a read-only HOME
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = None  # the app writes its own JSON access line per request
errorlog = "-"
loglevel = _settings.log_level
logconfig_dict = gunicorn_logconfig(_settings.log_level, _settings.log_format)  # gunicorn's own lines: same format
proc_name = "uaip-hub"


def on_starting(server):
    from app.metrics import reset_multiprocess_dir

    reset_multiprocess_dir()


def child_exit(server, worker):
    from app.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)
