"""HTTP API: one blueprint module per resource, all under /api/v1, and the OAuth discovery documents under
/.well-known."""

from flask import Flask

from app.web.urls import API_PREFIX


def init_app(app: Flask) -> None:
    from app.api import auth, authorization, device_types, devices, discovery, messages, system, things

    for module in (auth, authorization, devices, device_types, messages, things, system):
        app.register_blueprint(module.blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(discovery.blueprint)
