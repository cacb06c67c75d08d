"""Who is using the console, per request: the session cookie, CSRF tokens and the role checks.

The session cookie is separate from bearer tokens: it is only read by console routes (and the authorization
page), never by the API, so a page an operator has open cannot be used to call the API with their rights. It is
`HttpOnly`, `SameSite=Lax` (written explicitly) and `Secure` when the public URL is https.

CSRF: every form carries a hidden `csrf_token`, an HMAC (under the hub's signing secret) of the session cookie, or,
before sign-in, of a separate random pre-session cookie. A POST without the right token gets 403 before anything
runs. SameSite=Lax already keeps other sites' POSTs from carrying the cookie; the token also covers browsers and
proxies that do not honour it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable

from flask import current_app, g, redirect, request, url_for

from app.core import audit_context
from app.infra.db import get_db
from app.services.operators import SESSION_LIFETIME, Operator, session_operator

SESSION_COOKIE = "uaip_console"
PRESESSION_COOKIE = "uaip_console_pre"
CSRF_FIELD = "csrf_token"


class ConsoleError(Exception):
    """An error the console answers with an HTML page (status and a sentence for the operator)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _secure() -> bool:
    public_url = current_app.config["SETTINGS"].public_url
    return bool(public_url and public_url.startswith("https:"))


def set_cookie(response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Lax", secure=_secure())


def clear_cookie(response, name: str) -> None:
    response.set_cookie(name, "", max_age=0, expires=0, path="/", httponly=True, samesite="Lax", secure=_secure())


def session_max_age() -> int:
    return int(SESSION_LIFETIME.total_seconds())


def current_operator() -> Operator | None:
    """The signed-in operator of this request (cached on `g`)."""
    if "console_operator" not in g:
        g.console_operator = session_operator(get_db(), request.cookies.get(SESSION_COOKIE))
        if g.console_operator is not None:
            g.client_id = f"operator:{g.console_operator.email}"  # the access log's client
            audit_context.set_actor(f"operator:{g.console_operator.email}")
    return g.console_operator


def _csrf_basis() -> str:
    """The cookie the CSRF token is bound to: the session if signed in, else the pre-session cookie (made now if
    the browser has none; `ensure_presession` writes it on the response)."""
    session = request.cookies.get(SESSION_COOKIE)
    if session and current_operator() is not None:
        return "s:" + session
    pre = request.cookies.get(PRESESSION_COOKIE) or g.get("new_presession")
    if not pre:
        pre = g.new_presession = secrets.token_urlsafe(32)
    return "p:" + pre


def csrf_token() -> str:
    secret = current_app.config["SETTINGS"].jwt_secret.encode("utf-8")
    return hmac.new(secret, ("uaip-console-csrf:" + _csrf_basis()).encode("utf-8"), hashlib.sha256).hexdigest()


def check_csrf() -> None:
    """403 unless the form's token matches this browser's session (or pre-session)."""
    given = request.form.get(CSRF_FIELD, "")
    if not given or g.get("new_presession") or not hmac.compare_digest(given, csrf_token()):
        raise ConsoleError(403, "The form was missing its security token or it has expired. Reload the page and "
                                "try again.")


def write_presession(response):
    """after_request: give a browser that rendered a form before signing in its pre-session cookie."""
    if g.get("new_presession"):
        set_cookie(response, PRESESSION_COOKIE, g.new_presession, None)
    return response


def signed_in(view: Callable) -> Callable:
    """Pages need a session: without one, GET goes to the sign-in page (and back afterwards), POST gets 403.
    Every POST must carry the CSRF token."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if current_operator() is None:
            if request.method == "GET":
                return redirect(url_for("console.signin", next=request.full_path.rstrip("?")))
            raise ConsoleError(403, "Sign in first.")
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)

    return wrapper


def admin_only(view: Callable) -> Callable:
    """After `signed_in`: viewers get 403 (they see, never change, and never see operators or audit)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        operator = current_operator()
        if operator is None or not operator.is_admin:
            raise ConsoleError(403, "This needs the admin role; viewers can look but not change.")
        return view(*args, **kwargs)

    return wrapper
