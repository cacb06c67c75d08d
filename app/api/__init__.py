"""HTTP API: one blueprint module per resource, all under /api/v1, and the OAuth discovery documents under
/.well-known."""

from flask import Flask

from app.web.urls import API_PREFIX


def init_app(app: Flask) -> None:
    from app.api import (
        audit,
        auth,
        authorization,
        clients,
        device_types,
        devices,
        discovery,
        events,
        messages,
        state,
        system,
        things,
        token_admin,
    )

    for module in (auth, token_admin, authorization, clients, audit, devices, device_types, messages, events, state,
                   things, system):
        app.register_blueprint(module.blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(discovery.blueprint)
