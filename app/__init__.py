"""UAIP Hub: a REST hub through which AI agents find, inspect and command IoT devices.

`create_app` reads as the order things happen to a request: configuration, then the extensions the app
holds (database, Redis, NATS), then the request pipeline, then the API, then the error envelope around all of it.
"""

from __future__ import annotations

from typing import Mapping

from flask import Flask

from app.config import load_settings


def create_app(overrides: Mapping[str, object] | None = None) -> Flask:
    """Build the WSGI app. `overrides` uses the environment's variable names (tests, tools)."""
    from app import api, cache, db, errors, health, lifecycle, messaging, pipeline

    settings = load_settings(overrides)
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_message_size_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False

    db.init_app(app)
    cache.init_app(app)
    messaging.init_app(app)
    health.init_app(app)
    lifecycle.init_app(app)  # so gunicorn's worker hooks can close this app's extensions
    pipeline.init_app(app)
    api.init_app(app)
    errors.init_app(app)
    return app
