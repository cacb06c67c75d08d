"""UAIP Hub: a REST hub through which AI agents find, inspect and command IoT devices.

`create_app` reads as the order things happen to a request: configuration and logging, then the extensions the
app holds (database, Redis, NATS, the health checker, the registry gunicorn's worker hooks close at exit), then
tracing when OTEL_* turns it on (the request span covers everything after it), then the request pipeline
(request id and access log, metrics, rate limits — metrics before limits, so a 429 is still counted and timed),
then the API and its OpenAPI document, then the error envelope around all of it; last, the app's CLI commands
(migrate, create-client, relay).
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from app.core.config import load_settings


def create_app(overrides: Mapping[str, object] | None = None) -> Flask:
    """Build the WSGI app. `overrides` uses the environment's variable names (tests, tools)."""
    # Imported here rather than at the top: gunicorn.conf.py imports small modules of this package in the master
    # (app.core.envfile, app.core.config, app.web.worker_hooks) before PROMETHEUS_MULTIPROC_DIR is settled, and
    # importing the package must not pull prometheus_client in with them.
    from app import api, console, mcp, openapi
    from app.cli import commands as cli_commands
    from app.infra import db, messaging, redis_client
    from app.ratelimit import hooks as rate_limits
    from app.telemetry import logs, tracing
    from app.web import errors, health, json_output, pipeline, scrape, worker_hooks

    settings = load_settings(overrides)
    app = Flask(__name__, static_folder=None)  # a JSON API: no /static/<path> route
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_message_size_bytes,
    )
    app.json = json_output.HubJSONProvider(app)  # orjson; keys in the order the code wrote them

    logs.init_app(app)
    db.init_app(app)
    redis_client.init_app(app)
    messaging.init_app(app)
    health.init_app(app)
    worker_hooks.init_app(app)  # so gunicorn's worker hooks can close this app's extensions
    tracing.init_app(app)  # before the pipeline: the request span covers the limiter and the access line
    pipeline.init_app(app)
    scrape.init_app(app)  # /metrics and the request metrics, gauges refreshed at scrape time
    rate_limits.init_app(app)
    api.init_app(app)
    mcp.init_app(app)
    console.init_app(app)  # the operator console and the OAuth authorization page
    openapi.init_app(app)
    errors.init_app(app)
    cli_commands.init_app(app)  # migrate, create-client, relay: `uaip-hub ...` and `flask --app wsgi ...`
    return app
