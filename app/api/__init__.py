"""HTTP API: one blueprint module per resource, all under /api/v1."""

from flask import Flask

API_PREFIX = "/api/v1"


def init_app(app: Flask) -> None:
    from app.api import auth, devices, messages, system

    for module in (auth, devices, messages, system):
        app.register_blueprint(module.blueprint, url_prefix=API_PREFIX)
