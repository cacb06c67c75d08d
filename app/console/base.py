"""What every console blueprint shares: security headers, HTML error pages, the template helpers, navigation."""

from __future__ import annotations

from flask import Blueprint, render_template

from app.console.session import ConsoleError, csrf_token, current_operator, write_presession
from app.core.errors import APIError
from app.core.json_input import storable_text

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

NAVIGATION = (
    ("Overview", "console.overview", False),
    ("Devices", "console.devices", False),
    ("Commands", "console.commands", False),
    ("Clients", "console.clients", False),
    ("Operators", "console.operators_page", True),
    ("Audit", "console.audit_page", True),
    ("Grants", "console.grants", False),
)


def _page_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if "Cache-Control" not in response.headers or response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return write_presession(response)


def _console_error(exc: ConsoleError):
    return render_template("console/error.html", status=exc.status, message=exc.message), exc.status


def _api_error(exc: APIError):
    return render_template("console/error.html", status=exc.status, message=exc.message), exc.status


def _refuse_unstorable(endpoint, values) -> None:
    """Ids in the path (device, client, operator, grant) that no row can have (NUL, lone surrogates): 404."""
    for value in (values or {}).values():
        if isinstance(value, str) and not storable_text(value):
            raise ConsoleError(404, "No such page.")


def _template_globals() -> dict:
    return {"csrf_token": csrf_token, "operator": current_operator, "navigation": NAVIGATION}


def console_blueprint(name: str, html_api_errors: bool = True, **options) -> Blueprint:
    """A blueprint answering with console pages: headers, HTML error pages, the template helpers.
    `html_api_errors=False` leaves the hub's errors (429, 503, ...) to the JSON envelope, as on the API."""
    bp = Blueprint(name, __name__, template_folder="templates", **options)
    bp.after_request(_page_headers)
    bp.register_error_handler(ConsoleError, _console_error)
    if html_api_errors:
        bp.register_error_handler(APIError, _api_error)
    bp.context_processor(_template_globals)
    bp.url_value_preprocessor(_refuse_unstorable)
    return bp


blueprint = console_blueprint("console", static_folder="static", static_url_path="/static")
