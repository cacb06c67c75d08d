"""Sign-in and sign-out. A successful sign-in sets the session cookie and returns to the page that asked for it
(`next`, a local path only); a failure answers 401 with the form again; a throttled email answers 429."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import g, redirect, render_template, request, url_for

from app.console.base import blueprint
from app.console.session import (
    SESSION_COOKIE,
    check_csrf,
    clear_cookie,
    current_operator,
    session_max_age,
    set_cookie,
)
from app.infra.db import get_db
from app.services.operators import FAILURE_WINDOW, end_session, sign_in


def safe_next(value: str | None) -> str:
    """Only a path on this hub: never another host (`//evil`, `https://...`), so sign-in is no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return url_for("console.overview")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return url_for("console.overview")
    return value


@blueprint.get("/signin")
def signin():
    next_url = safe_next(request.args.get("next"))
    if current_operator() is not None:
        return redirect(next_url)
    return render_template("console/signin.html", next_url=next_url, error=None)


@blueprint.post("/signin")
def signin_submit():
    check_csrf()
    next_url = safe_next(request.form.get("next"))
    email = request.form.get("email", "")[:320]
    result = sign_in(get_db(), email, request.form.get("password", ""))
    if result.outcome == "throttled":
        minutes = int(FAILURE_WINDOW.total_seconds() // 60)
        response = render_template(
            "console/signin.html", next_url=next_url, email=email,
            error=f"Too many failed sign-ins for this email. Try again in up to {minutes} minutes.",
        ), 429, {"Retry-After": str(int(FAILURE_WINDOW.total_seconds()))}
        return response
    if result.outcome != "ok":
        return render_template("console/signin.html", next_url=next_url, email=email,
                               error="Wrong email or password."), 401
    response = redirect(next_url, code=303)
    set_cookie(response, SESSION_COOKIE, result.session, session_max_age())
    g.console_operator = result.operator
    return response


@blueprint.post("/signout")
def signout():
    check_csrf()
    end_session(get_db(), request.cookies.get(SESSION_COOKIE))
    response = redirect(url_for("console.signin"), code=303)
    clear_cookie(response, SESSION_COOKIE)
    return response
