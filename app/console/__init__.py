"""The operator console: server-rendered pages for the people who run the hub (docs/console.md).

Flask's Jinja templates and one small script (app/console/static/console.js, which refreshes the live parts of a
page), no build step; pages read fine without JavaScript. Every console answer carries a Content-Security-Policy
without inline scripts, `X-Frame-Options: DENY` and `Cache-Control: no-store`.

Two blueprints: `console` under /console (pages, sign-in) and `authorize` for the OAuth authorization endpoint,
which is a page too (sign-in, then consent) but lives at the path the discovery document names.
"""

from __future__ import annotations

from flask import Flask

from app.web.urls import API_PREFIX


def init_app(app: Flask) -> None:
    from app.console import authorize, live, pages, signin  # noqa: F401 - their routes register on the blueprints
    from app.console.base import blueprint

    app.register_blueprint(blueprint, url_prefix="/console")
    app.register_blueprint(authorize.blueprint, url_prefix=API_PREFIX)
