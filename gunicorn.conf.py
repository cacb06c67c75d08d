"""Gunicorn settings, read from the same environment variables as the app (docs/api.md, "Configuration").

Flat settings first, thin hooks after; hooks only call functions in app/. Settings are validated here, in the
master, so a bad variable stops start-up with one line instead of every worker failing to boot.
"""

import os

from app.core.config import default_metrics_dir, env_or_exit
from app.core.envfile import load_env_file

# ./.env first (variables already in the environment win), so it can set anything below; re-read on SIGHUP.
env_or_exit(load_env_file)

# Before anything imports prometheus_client: workers write their metrics to per-process files here
# (docs/decisions.md, "Metrics"). Default: /tmp/uaip-metrics-<UAIP_INSTANCE or SERVER_PORT>, one per hub on a host.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", env_or_exit(lambda: default_metrics_dir(os.environ)))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)  # also for --check-config, which loads the app

from app.core import envfile  # noqa: E402
from app.core.config import share_development_secret  # noqa: E402
from app.telemetry.logs import GunicornLogger, gunicorn_logconfig  # noqa: E402
from app.web import worker_hooks  # noqa: E402

# Development mode without JWT_SECRET: one random secret, made here so every worker signs with the same one.
_made_development_secret = share_development_secret()

_settings = env_or_exit(envfile.read_settings)
worker_hooks.record_master_start()  # for health's uptime_seconds; kept across SIGHUP, renewed by a USR2 re-exec

bind = [f"{_settings.server_host}:{_settings.server_port}"]
worker_class = "gthread"
workers = _settings.server_workers
threads = _settings.server_threads
preload_app = False  # every pool and client is created in the worker, after fork (docs/decisions.md)
graceful_timeout = _settings.graceful_timeout_seconds
timeout = 60
keepalive = 5
# Header lines up to 16 KiB (gunicorn's default is 8,190 bytes): an oversized X-Request-ID then reaches the app,
# which answers as docs/api.md says (a new id) instead of gunicorn's HTML 431.
limit_request_field_size = 16_384
max_requests = 10_000  # recycle workers now and then (override: GUNICORN_CMD_ARGS="--max-requests 50")
max_requests_jitter = 1_000  # so workers do not all restart at once
control_socket_disable = True  # no control socket: containers have a read-only HOME
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = None  # the app writes its own access line per request ...
logger_class = GunicornLogger  # ... and gunicorn writes none, even with a logconfig_dict
errorlog = "-"
loglevel = _settings.log_level
logconfig_dict = gunicorn_logconfig(_settings.log_level, _settings.log_format)  # gunicorn's own lines: same format
proc_name = "uaip-hub"
# Gunicorn itself trusts X-Forwarded-Proto (and its kin) from loopback by default and rewrites the request's
# scheme. The hub's rule is that forwarded headers count only with TRUSTED_PROXY_HOPS > 0 (then ProxyFix reads
# them, app/web/pipeline.py): with 0, gunicorn trusts nobody, so a client on the same host cannot turn the
# discovery documents' URLs into https://… by sending the header.
if _settings.trusted_proxy_hops == 0:
    forwarded_allow_ips = ""


# --- hooks: metrics files (app/telemetry/metrics.py) and worker lifecycle (app/web/worker_hooks.py) ---------


def on_starting(server):
    from app.telemetry.metrics import claim_multiprocess_dir, reset_multiprocess_dir

    claim_multiprocess_dir()  # another running hub's directory: one line and exit, before wiping anything
    reset_multiprocess_dir()
    worker_hooks.log_start_notes(server.log, envfile.startup_notes(), _settings, _made_development_secret)


def child_exit(server, worker):
    from app.telemetry.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def when_ready(server):
    worker_hooks.master_ready(server)


def post_fork(server, worker):
    worker_hooks.worker_forked(worker)


def post_worker_init(worker):
    worker_hooks.worker_ready(worker)


def worker_int(worker):
    worker_hooks.worker_interrupted(worker)


def worker_abort(worker):
    worker_hooks.worker_aborted(worker)


def worker_exit(server, worker):
    worker_hooks.worker_exiting(worker)


def on_exit(server):
    worker_hooks.master_exiting(server)
