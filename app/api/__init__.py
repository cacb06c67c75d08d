"""HTTP API: one blueprint module per resource, all under /api/v1."""

from flask import Flask

API_PREFIX = "/api/v1"


def init_app(app: Flask) -> None:
    from app.api import auth, device_types, devices, messages, system, things

    for module in (auth, devices, device_types, messages, things, system):
        app.register_blueprint(module.blueprint, url_prefix=API_PREFIX)
